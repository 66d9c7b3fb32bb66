"""docker-compose.yml, the Dockerfile and the image's contents, tested without Docker.

No Docker engine runs on these machines, so the compose file is read (PyYAML, with
compose's ${VAR} interpolation) and every service's command, environment and health check
is run on this machine instead: its service names (redis, postgres, web) point at
127.0.0.1, its ports at free ones, PostgreSQL is the local server (a role and database of
the test's own stand in for the image's initialisation), and nginx is Debian's with the
same deploy/nginx.conf. Each must start and serve: redis and postgres pass their health
checks, migrate exits 0, web answers, the worker consumes the tasks beat sends, and nginx
proxies HTTP and the WebSocket to web.
"""

import asyncio
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path

import pytest
import yaml
from websockets.asyncio.client import connect

from tests.nginx import Nginx, render
from tickerproject.env import DEV_ENV_FILE
from tickerproject.stack import find_redis_server, free_port, procfile, wait_for_port

BASE_DIR = Path(__file__).resolve().parent.parent
COMPOSE = BASE_DIR / "docker-compose.yml"
BIN = Path(sys.executable).parent
APP_SERVICES = {"migrate": "release", "web": "web", "worker": "worker", "beat": "beat"}
LONG_RUNNING = ["redis", "postgres", "web", "worker", "beat", "nginx"]

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR and $$.
INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>\w+))"
)


class MissingVariable(Exception):
    pass


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable substitution in one string."""

    def substitute(m: re.Match) -> str:
        if m["escaped"]:
            return "$"
        name = m["name"] or m["bare"]
        op, arg = m["op"], m["arg"]
        present = env.get(name)
        unset = present is None or (present == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if unset else present
        if op in (":?", "?"):
            if unset:
                raise MissingVariable(f"{name}: {arg}")
            return present
        return present or ""

    return INTERPOLATION.sub(substitute, value)


def load_compose(env: dict[str, str]) -> dict:
    """docker-compose.yml as compose sees it: YAML (merge keys resolved), then interpolated."""

    def walk(node):
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return interpolate(node, env) if isinstance(node, str) else node

    return walk(yaml.safe_load(COMPOSE.read_text()))


def command_of(service: dict) -> str:
    command = service["command"]
    return command if isinstance(command, str) else shlex.join(command)


def stringify(environment: dict) -> dict[str, str]:
    return {k: "" if v is None else str(v) for k, v in environment.items()}


DOTENV = {"SECRET_KEY": "compose-test-secret-" + "x" * 40, "POSTGRES_PASSWORD": "compose-test"}


# --- the files themselves


def test_app_services_run_the_procfile_commands():
    services = load_compose(DOTENV)["services"]
    entries = procfile()
    for service, entry in APP_SERVICES.items():
        assert command_of(services[service]) == entries[entry], service


def test_the_dockerfile_runs_the_procfiles_web_with_debug_off_and_no_secret():
    text = (BASE_DIR / "Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    cmd = [line for line in instructions if line.startswith("CMD ")]
    assert len(cmd) == 1 and json.loads(cmd[0][4:]) == shlex.split(procfile()["web"])
    assert "COPY . ." in instructions
    assert any("pip install ." in line for line in instructions)
    env = " ".join(line for line in instructions if line.startswith("ENV "))
    assert "DEBUG=0" in env
    assert "SECRET_KEY" not in text.replace("no SECRET_KEY", "")


def test_compose_requires_a_secret_key_and_a_database_password():
    for missing in ("SECRET_KEY", "POSTGRES_PASSWORD"):
        env = {k: v for k, v in DOTENV.items() if k != missing}
        with pytest.raises(MissingVariable, match=missing):
            load_compose(env)
        with pytest.raises(MissingVariable, match=missing):
            load_compose({**env, missing: ""})  # an empty one counts as missing too


def test_services_have_health_checks_restart_policies_and_a_scalable_web():
    compose = load_compose(DOTENV)
    services = compose["services"]
    assert set(LONG_RUNNING) | {"migrate"} <= set(services)
    for name in LONG_RUNNING:
        assert services[name]["restart"] in ("unless-stopped", "always"), name
    assert services["migrate"]["restart"] == "no"
    for name in ("redis", "postgres", "web", "worker", "nginx"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
    # Scalable: nothing that two replicas could not share.
    for name in ("web", "worker"):
        assert "ports" not in services[name] and "container_name" not in services[name]
    assert services["web"]["environment"]["DEBUG"] == "0"
    # nginx uses deploy/nginx.conf as its template, rendered as tests/nginx.py renders it.
    nginx = services["nginx"]
    assert "./deploy/nginx.conf:/etc/nginx/templates/default.conf.template:ro" in nginx["volumes"]
    assert nginx["environment"]["NGINX_ENVSUBST_FILTER"] == "^TICKER_"
    assert nginx["depends_on"]["web"] == {"condition": "service_healthy"}


def test_the_worker_serves_its_metrics_to_prometheus_on_the_compose_network():
    """WORKER_METRICS_PORT: set by compose and .env.example, scraped by deploy/prometheus.yml."""
    services = load_compose(DOTENV)["services"]
    worker = stringify(services["worker"]["environment"])
    port = worker["WORKER_METRICS_PORT"]
    assert port == "9100" and worker["WORKER_METRICS_ADDR"] == "0.0.0.0"
    assert [str(p) for p in services["worker"]["expose"]] == [port]
    assert "ports" not in services["worker"]  # the compose network only, not the host
    assert "worker" in services["prometheus"]["depends_on"]
    for name in ("web", "beat", "migrate"):
        assert "WORKER_METRICS_PORT" not in services[name]["environment"], name
    # .env moves the port and the exposed port together.
    moved = load_compose({**DOTENV, "WORKER_METRICS_PORT": "9200"})["services"]["worker"]
    assert moved["environment"]["WORKER_METRICS_PORT"] == "9200" and moved["expose"] == ["9200"]
    example = (BASE_DIR / ".env.example").read_text().splitlines()
    assert f"WORKER_METRICS_PORT={port}" in example
    # Prometheus finds every worker replica by the service name, on that port, no token.
    config = yaml.safe_load((BASE_DIR / "deploy/prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ticker-worker"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["port"] == int(port) and sd["type"] == "A"
    assert "authorization" not in job


def test_prometheus_finds_every_web_replica_by_dns():
    """--scale web=N: each replica is a target of the web job, found as the workers are."""
    services = load_compose(DOTENV)["services"]
    web = stringify(services["web"]["environment"])
    assert [str(p) for p in services["web"]["expose"]] == [web["PORT"]]
    assert "web" in services["prometheus"]["depends_on"]
    config = yaml.safe_load((BASE_DIR / "deploy/prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ticker"]
    # One name resolved to every replica's address, not one host:port Docker's DNS
    # answers with a single replica for.
    assert "static_configs" not in job
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["web"] and sd["type"] == "A" and sd["port"] == int(web["PORT"])
    # Each replica's /metrics still asks for the token compose gives both sides.
    assert job["authorization"] == {"credentials_file": "/run/secrets/metrics_token"}
    assert services["prometheus"]["secrets"] == ["metrics_token"]
    assert "METRICS_TOKEN" in services["web"]["environment"]


def test_worker_metrics_are_off_by_default_and_on_loopback():
    from django.conf import settings

    if "WORKER_METRICS_PORT" not in os.environ:
        assert settings.WORKER_METRICS_PORT == 0
    if "WORKER_METRICS_ADDR" not in os.environ:
        assert settings.WORKER_METRICS_ADDR == "127.0.0.1"


def dockerignored(path: str) -> bool:
    """Whether .dockerignore leaves ``path`` (relative to the checkout) out of the image."""
    patterns = [
        line.strip()
        for line in (BASE_DIR / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").removeprefix("**/")
        parts = Path(path).parts
        hit = any(
            Path(*parts[i : j + 1]).match(pattern)
            for i in range(len(parts))
            for j in range(i, len(parts))
            if i == 0 or not pattern.startswith("/")
        )
        if hit:
            verdict = not negate
    return verdict


def test_the_development_file_is_not_composes_and_never_shipped():
    """A checkout's .env.dev (DEBUG=1, a development key) never reaches a deployment.

    docker compose reads `.env` by itself, so the development file has another name; git
    and the image leave it out. Compose's .env stays the deployment's alone.
    """
    name = DEV_ENV_FILE.relative_to(BASE_DIR).as_posix()
    assert name != ".env"
    assert dockerignored(name) and dockerignored(".env")
    assert not dockerignored(".env.example")
    for path in (name, ".env"):
        ignored = subprocess.run(
            ["git", "check-ignore", "--quiet", "--no-index", path], cwd=BASE_DIR
        )
        assert ignored.returncode == 0, f"{path} is not git-ignored"
    # And compose's app services say DEBUG=0 themselves, whatever .env holds.
    services = load_compose({**DOTENV, "DEBUG": "1"})["services"]
    for service in APP_SERVICES:
        assert services[service]["environment"]["DEBUG"] == "0", service


def docker_context(dest: Path) -> None:
    """Copy what `docker build .` would send: the tree minus .dockerignore's patterns."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()

    for path in listed:
        if not dockerignored(path) and (BASE_DIR / path).is_file():
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(BASE_DIR / path, dest / path)


def test_the_image_installs_every_app_with_its_templates_and_static_files(tmp_path):
    """`pip install .` from the build context holds every app INSTALLED_APPS names."""
    from django.conf import settings

    context = tmp_path / "context"
    docker_context(context)
    assert not (context / ".env").exists() and not (context / ".git").exists()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path / "wheel"), str(context)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "wheel").glob("ticker-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if "/" in n and ".dist-info" not in n}
    local_apps = {a for a in settings.INSTALLED_APPS if (BASE_DIR / a).is_dir()}
    assert local_apps | {"tickerproject"} <= tops, sorted(tops)
    for source in ("templates", "static", "samples"):
        for path in BASE_DIR.glob(f"*/{source}/**/*"):
            rel = path.relative_to(BASE_DIR).as_posix()
            if path.is_file() and rel.split("/")[0] in tops:
                assert rel in names, rel
    assert not {"tests", "benchmarks", "client"} & tops


# --- every service, run here


def postgres_or_skip() -> None:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            return
    except OSError:
        message = "no PostgreSQL on 127.0.0.1:5432 for the compose services"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)


def psql(sql: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(sql)


class Here:
    """Runs compose services on this machine: names to 127.0.0.1, ports to free ones."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ports = {"redis": free_port(), "postgres": 5432, "web": free_port()}
        self.nginx_port = free_port()
        self.worker_metrics_port = free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        self.hostname = socket.gethostname()

    def translate(self, value: str) -> str:
        for host, port in self.ports.items():
            value = re.sub(rf"\b{host}:\d+\b", f"127.0.0.1:{port}", value)
        return value

    def env(self, service: dict) -> dict[str, str]:
        """The service's environment, translated, on a bare process environment."""
        env = {k: self.translate(v) for k, v in stringify(service.get("environment", {})).items()}
        if env.get("HOST") == "0.0.0.0":
            env["HOST"] = "127.0.0.1"  # nothing here listens beyond loopback
        if "PORT" in env:
            env["PORT"] = str(self.ports["web"])
        if env.get("WORKER_METRICS_ADDR") == "0.0.0.0":
            env["WORKER_METRICS_ADDR"] = "127.0.0.1"
        if "WORKER_METRICS_PORT" in env:
            env["WORKER_METRICS_PORT"] = str(self.worker_metrics_port)
        return {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(self.workdir),
            "TMPDIR": str(self.workdir),
            "HOSTNAME": self.hostname,
            "LANG": "C.UTF-8",
            **env,
        }

    def health_argv(self, name: str, service: dict) -> list[str]:
        test = [self.translate(str(t)) for t in service["healthcheck"]["test"]]
        kind, args = test[0], test[1:]
        if kind == "CMD-SHELL":
            args = ["sh", "-c", args[0]]
        if name == "web":
            args = [a.replace("127.0.0.1:8000", f"127.0.0.1:{self.ports['web']}") for a in args]
        if name == "nginx":
            args = [a.replace("//127.0.0.1/", f"//127.0.0.1:{self.nginx_port}/") for a in args]
        if args[0] == "redis-cli":
            args = [args[0], "-p", str(self.ports["redis"]), *args[1:]]
        if args[0] == "pg_isready":
            args = [args[0], "-h", "127.0.0.1", "-p", "5432", *args[1:]]
        return args

    def healthy(self, name: str, service: dict, env: dict, timeout: float = 60) -> None:
        argv = self.health_argv(name, service)
        if not shutil.which(argv[0], path=env["PATH"]):
            pytest.skip(f"{argv[0]} is not installed here for {name}'s health check")
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(argv, env=env, cwd=BASE_DIR, capture_output=True, text=True)
            if out.returncode == 0:
                return
            if time.monotonic() > deadline:
                logs = self.log(name)[-3000:] if name in self.procs else ""
                raise AssertionError(
                    f"{name} never healthy: {argv}\n{out.stdout}{out.stderr}{logs}"
                )
            time.sleep(1)

    def start(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")  # closed in stop_all()
        proc = subprocess.Popen(argv, env=env, cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT)
        proc._log = log  # type: ignore[attr-defined]
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def wait_for_log(self, name: str, needle: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log(name):
            assert self.procs[name].poll() is None, self.log(name)[-3000:]
            assert time.monotonic() < deadline, f"{name}: no {needle!r}\n{self.log(name)[-3000:]}"
            time.sleep(0.5)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            proc._log.close()  # type: ignore[attr-defined]


def worker_published(port: int, timeout: float) -> float:
    """ticker_ticks_published_total summed from the worker's endpoint, once above 0."""
    from prometheus_client.parser import text_string_to_metric_families

    deadline = time.monotonic() + timeout
    total = 0.0
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            text = ""
        total = sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "ticker_ticks_published_total"
        )
        if total > 0:
            return total
        time.sleep(0.5)
    return total


async def first_tick_through(url: str, origin: str) -> dict:
    async with connect(url, origin=origin, open_timeout=20) as ws:
        await ws.send(json.dumps({"action": "subscribe", "symbols": ["BTC-USD"], "snapshot": 0}))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if msg["type"] == "tick":
                return msg


@pytest.mark.e2e
@pytest.mark.slow
def test_every_service_starts_and_serves_with_its_own_command_and_environment(tmp_path):
    postgres_or_skip()
    run_id = uuid.uuid4().hex[:8]
    role, database = f"ticker_compose_{run_id}", f"ticker_compose_{run_id}"
    dotenv = {**DOTENV, "POSTGRES_USER": role, "POSTGRES_DB": database}
    services = load_compose(dotenv)["services"]
    here = Here(tmp_path)
    nginx = None
    # What the postgres image does on first start with its POSTGRES_* environment.
    pg_env = stringify(services["postgres"]["environment"])
    password = pg_env["POSTGRES_PASSWORD"].replace("'", "''")
    psql(f"CREATE ROLE {pg_env['POSTGRES_USER']} LOGIN PASSWORD '{password}'")
    psql(f"CREATE DATABASE {pg_env['POSTGRES_DB']} OWNER {pg_env['POSTGRES_USER']}")
    try:
        # redis: its command, on a free loopback port.
        redis = services["redis"]
        argv = [find_redis_server(), *redis["command"][1:]]
        argv += ["--port", str(here.ports["redis"]), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
        here.start("redis", argv, here.env(redis))
        here.healthy("redis", redis, here.env(redis))
        here.healthy("postgres", services["postgres"], here.env(services["postgres"]))

        # migrate: runs once and exits 0.
        migrate = services["migrate"]
        out = subprocess.run(
            shlex.split(command_of(migrate)),
            env=here.env(migrate),
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        assert here.env(migrate)["DATABASE_URL"].startswith("postgres://")

        for name in ("web", "worker", "beat"):
            service = services[name]
            here.start(name, shlex.split(command_of(service)), here.env(service))
        wait_for_port(here.ports["web"], timeout=180)
        here.healthy("web", services["web"], here.env(services["web"]))
        # beat sends, and the worker consumes what it sent.
        here.wait_for_log("beat", "Sending due task")
        here.wait_for_log("worker", "Task feeds.tasks.run_feed[")
        here.healthy("worker", services["worker"], here.env(services["worker"]), timeout=90)
        # The worker's own metrics, as the prometheus service scrapes them.
        published = worker_published(here.worker_metrics_port, timeout=60)
        assert published > 0, here.log("worker")[-3000:]

        # nginx: deploy/nginx.conf rendered from the service's own TICKER_* variables.
        nginx_env = stringify(services["nginx"]["environment"])
        variables = {k: here.translate(v) for k, v in nginx_env.items() if k.startswith("TICKER_")}
        assert variables["TICKER_LISTEN"] == "80"
        variables["TICKER_LISTEN"] = f"127.0.0.1:{here.nginx_port}"
        rendered = render((BASE_DIR / "deploy/nginx.conf").read_text(), variables)
        assert not [
            ln for ln in rendered.splitlines() if "$TICKER" in ln or "${" in ln.split("#")[0]
        ]
        nginx = Nginx(tmp_path / "nginx", port=here.nginx_port, variables=variables).start()
        here.healthy("nginx", services["nginx"], here.env(services["nginx"]))
        with urllib.request.urlopen(f"{nginx.http_url}/api/health/", timeout=20) as response:
            health = json.loads(response.read())
        tick = asyncio.run(first_tick_through(nginx.ws_url, nginx.http_url))
        assert tick["symbol"] == "BTC-USD" and tick["seq"] >= 1
        print(
            f"\nthrough nginx: health {health.get('status')}, tick seq {tick['seq']}; "
            f"worker metrics: {published:.0f} ticks published"
        )
    finally:
        if nginx is not None:
            nginx.stop()
        here.stop_all()
        psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        psql(f"DROP ROLE IF EXISTS {role}")
