"""Redis Sentinel configuration: the URL syntax (markets.sentinel) and what the settings
build from REDIS_SENTINELS and friends for every client (channel layer, Celery, shards).

The failover itself, over real processes: tests/test_sentinel_failover.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from markets import sentinel

BASE_DIR = Path(__file__).resolve().parent.parent


def test_a_sentinel_url_names_its_sentinels_group_database_and_passwords():
    group = sentinel.parse(
        "redis+sentinel://:p%40ss@10.0.0.1:26379,10.0.0.2,[::1]:26380/cache/2"
        "?sentinel_password=s%3Bx"
    )
    assert group == sentinel.SentinelGroup(
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380)),
        master="cache",
        db=2,
        password="p@ss",
        sentinel_password="s;x",
    )
    assert sentinel.parse(group.url()) == group
    assert sentinel.parse("redis+sentinel://h1:1;h2:2/m") == sentinel.SentinelGroup(
        sentinels=(("h1", 1), ("h2", 2)), master="m"
    )
    assert sentinel.parse("redis://127.0.0.1:6379/0") is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://h1:26379", "the path must be /master_name"),
        ("redis+sentinel:///mymaster", "no sentinel address"),
        ("redis+sentinel://h1:port/mymaster", "sentinel port 'port' is not a number"),
        ("redis+sentinel://h1/mymaster/zero", "database 'zero' is not a number"),
        ("redis+sentinel://h1/mymaster?pasword=x", "unknown option(s) pasword"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_with_its_reason(url, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sentinel.parse(url)


def test_an_error_never_shows_the_password():
    with pytest.raises(ValueError) as caught:
        sentinel.parse("redis+sentinel://:hunter22@h1/m/x?sentinel_password=hunter33")
    assert "hunter22" not in str(caught.value) and "hunter33" not in str(caught.value)


def test_a_list_of_urls_keeps_each_sentinel_url_whole():
    assert sentinel.split_urls(
        "redis+sentinel://a:1,b:2,c:3/one, redis://r:6379/0,redis+sentinel://d:4,e:5/two/1"
    ) == [
        "redis+sentinel://a:1,b:2,c:3/one",
        "redis://r:6379/0",
        "redis+sentinel://d:4,e:5/two/1",
    ]


def settings_of(**env: str) -> dict:
    """What a process with ``env`` makes of the Redis settings (they are read at import)."""
    code = """
import json
from django.conf import settings
hosts = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
print(json.dumps({
    "REDIS_URL": settings.REDIS_URL,
    "REDIS_SHARD_URLS": settings.REDIS_SHARD_URLS,
    "hosts": [{k: (v if isinstance(v, (str, int, float, list, dict, type(None))) else
                   type(v).__name__) for k, v in h.items()} for h in hosts],
    "broker": settings.CELERY_BROKER_URL,
    "transport": settings.CELERY_BROKER_TRANSPORT_OPTIONS,
}))
"""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REDIS_", "CHANNEL_LAYER_REDIS_URL"))
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "DJANGO_SETTINGS_MODULE": "tickerproject.settings", **env},
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode:
        return {"error": result.stderr.strip().splitlines()[-1]}
    return json.loads(result.stdout)


def test_redis_sentinels_reaches_the_channel_layer_market_data_and_celery():
    got = settings_of(
        REDIS_SENTINELS="10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379",
        REDIS_SENTINEL_MASTER="ticker",
        REDIS_PASSWORD="data-pw",
        REDIS_SENTINEL_PASSWORD="sentinel-pw",
    )
    url = (
        "redis+sentinel://:data-pw@10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379/ticker/0"
        "?sentinel_password=sentinel-pw"
    )
    assert got["REDIS_URL"] == url
    assert got["REDIS_SHARD_URLS"] == [url]
    (host,) = got["hosts"]
    assert host["master_name"] == "ticker"
    assert host["sentinels"] == [["10.0.0.1", 26379], ["10.0.0.2", 26379], ["10.0.0.3", 26379]]
    assert host["password"] == "data-pw"
    assert host["sentinel_kwargs"] == {
        "socket_timeout": 1.0,
        "socket_connect_timeout": 1.0,
        "password": "sentinel-pw",
    }
    assert host["connection_class"] == "type"  # markets.sentinel.PrimaryConnection
    assert host["retry"] == "Retry"
    # channels_redis blocks in BZPOPMIN for 5 s: the socket timeout must exceed it.
    assert host["socket_timeout"] > 5
    assert got["broker"] == ";".join(f"sentinel://:data-pw@10.0.0.{i}:26379/0" for i in (1, 2, 3))
    assert got["transport"]["master_name"] == "ticker"
    assert got["transport"]["sentinel_kwargs"]["password"] == "sentinel-pw"


def test_each_shard_may_be_a_sentinel_group_and_a_bad_one_stops_the_process():
    got = settings_of(
        REDIS_SHARD_URLS="redis+sentinel://a:1,b:2/one,redis://r:6379/0",
        REDIS_SENTINEL_PASSWORD="spw",
    )
    assert got["REDIS_SHARD_URLS"] == [
        "redis+sentinel://a:1,b:2/one/0?sentinel_password=spw",
        "redis://r:6379/0",
    ]
    assert got["REDIS_URL"] == got["REDIS_SHARD_URLS"][0]
    assert [h.get("master_name") for h in got["hosts"]] == ["one", None]
    assert got["broker"] == "sentinel://a:1/0;sentinel://b:2/0"
    assert settings_of(REDIS_SHARD_URLS="redis+sentinel://a:1")["error"].startswith(
        "ValueError: redis+sentinel://a:1: the path must be"
    )
    assert "not both" in settings_of(REDIS_SENTINELS="a:1", REDIS_URL="redis://r/0")["error"]
