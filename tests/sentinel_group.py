"""A real Redis Sentinel group on 127.0.0.1 for tests and benchmarks/failover.py.

A primary, a replica and three sentinels (quorum 2), all started from the redis-server
binary the launcher uses (tickerproject.stack.find_redis_server; ``--sentinel`` makes a
sentinel), each on a free port, each with its own directory and config file, every data
node with an append-only file (docs/deployment.md, "Redis Sentinel": persistence on every
node). ``down-after-milliseconds`` 1000 and ``failover-timeout`` 3000 make a failover take
a few seconds. Every wait is bounded and fails with what the sentinels said last.
"""

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tickerproject.stack import find_redis_server, free_port, wait_for_port

MASTER = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


def _fields(reply) -> dict[str, str]:
    """A SENTINEL MASTER/REPLICAS entry with every value a str (as the sentinel sent it)."""
    return {str(k): (v.decode() if isinstance(v, bytes) else str(v)) for k, v in reply.items()}


class SentinelGroup:
    """The processes of one group; ``stop()`` ends only these, by pid."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.binary = find_redis_server()
        self.node_ports = {"a": free_port(), "b": free_port()}
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen] = {}

    # --- addresses

    @property
    def sentinels_env(self) -> str:
        """REDIS_SENTINELS for the stack."""
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def node_client(self, name: str) -> redis.Redis:
        return redis.Redis(port=self.node_ports[name], socket_timeout=2, socket_connect_timeout=2)

    def sentinel_client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)

    def name_of(self, port: int) -> str:
        return next(n for n, p in self.node_ports.items() if p == port)

    # --- processes

    def _node_config(self, name: str) -> Path:
        folder = self.workdir / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "redis.conf"
        if not path.exists():
            lines = [
                f"port {self.node_ports[name]}",
                "bind 127.0.0.1",
                f"dir {folder}",
                'save ""',
                "appendonly yes",
                "appendfsync everysec",
                "maxclients 10000",
                # The address the sentinels learn replicas by.
                "replica-announce-ip 127.0.0.1",
            ]
            path.write_text("\n".join(lines) + "\n")
        return path

    def _sentinel_config(self, index: int) -> Path:
        folder = self.workdir / f"sentinel{index}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "sentinel.conf"  # the sentinel rewrites it: its own file
        path.write_text(
            "\n".join(
                [
                    f"port {self.sentinel_ports[index]}",
                    "bind 127.0.0.1",
                    f"dir {folder}",
                    "sentinel announce-ip 127.0.0.1",
                    f"sentinel monitor {MASTER} 127.0.0.1 {self.node_ports['a']} 2",
                    f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {MASTER} 1",
                ]
            )
            + "\n"
        )
        return path

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # closed in _end()
        proc = subprocess.Popen(
            [self.binary, *args], stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        proc._log = log  # type: ignore[attr-defined]
        self.procs[name] = proc

    def start_node(self, name: str, replica_of: str | None = None, *extra: str) -> None:
        """Start data node ``name`` (as a replica of node ``replica_of``), with its data."""
        args = [str(self._node_config(name))]
        if replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.node_ports[replica_of])]
        self._spawn(name, [*args, *extra])
        wait_for_port(self.node_ports[name])

    def rejoin(self, name: str) -> str:
        """Restart data node ``name`` the way docs/deployment.md says a deployment does:
        as a replica of the primary the sentinels name, never as a primary of its own,
        and with ``replica-priority 0`` (never promoted) until ``synced()``."""
        primary, _ = self.current_roles()
        self.start_node(name, primary, "--replica-priority", "0")
        return primary

    def synced(self, name: str) -> None:
        """The rejoined replica ``name`` has its data (see settled()): promotable again."""
        client = self.node_client(name)
        try:
            client.config_set("replica-priority", 100)
        finally:
            client.close()

    def start(self) -> None:
        self.start_node("a")
        self.start_node("b", replica_of="a")
        for i in range(3):
            self._spawn(f"sentinel{i}", [str(self._sentinel_config(i)), "--sentinel"])
        for port in self.sentinel_ports:
            wait_for_port(port)

    def kill(self, name: str) -> None:
        """SIGKILL data node ``name``: no goodbye to anyone."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        self._end(name, timeout=10)

    def _end(self, name: str, timeout: float) -> None:
        proc = self.procs.pop(name)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc._log.close()  # type: ignore[attr-defined]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name in list(self.procs):
            self._end(name, timeout=10)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- what the sentinels say

    def views(self) -> list[dict]:
        """Per sentinel: its master entry and replica entries (None if it did not answer)."""
        out = []
        for port in self.sentinel_ports:
            client = self.sentinel_client(port)
            try:
                master = _fields(client.sentinel_master(MASTER))
                replicas = [_fields(r) for r in client.sentinel_slaves(MASTER)]
                out.append({"port": port, "master": master, "replicas": replicas})
            except redis.RedisError as exc:
                out.append({"port": port, "error": repr(exc)})
            finally:
                client.close()
        return out

    def master_port(self) -> int | None:
        """The primary's port if every sentinel names the same one, else None."""
        ports = {v["master"].get("port") for v in self.views() if "master" in v}
        return int(ports.pop()) if len(ports) == 1 else None

    def current_roles(self) -> tuple[str, str]:
        """(primary, replica): the node every sentinel names as primary, and the other."""
        port = self.master_port()
        assert port is not None, f"the sentinels do not agree on a primary: {self.views()}"
        primary = self.name_of(port)
        return primary, next(n for n in self.node_ports if n != primary)

    def role(self, name: str) -> dict[str, str]:
        """INFO replication of data node ``name`` ({} if it does not answer)."""
        client = self.node_client(name)
        try:
            return {str(k): str(v) for k, v in client.info("replication").items()}
        except redis.RedisError:
            return {}
        finally:
            client.close()

    def settled(self, master: str, replicas: list[str]) -> bool:
        """Every sentinel names ``master``, flags it plain ``master`` (no s_down, o_down
        or failover in progress), knows the two other sentinels, and lists each of
        ``replicas`` as a plain ``slave`` (not s_down); each replica says it replicates
        ``master`` with its link up and no sync in progress. (A sentinel's own view of
        a replica's link is up to 10 s old: its INFO period.)"""
        port = self.node_ports[master]
        for view in self.views():
            if "master" not in view:
                return False
            entry = view["master"]
            if int(entry["port"]) != port or entry["flags"] != "master":
                return False
            if int(entry["num-other-sentinels"]) != 2:
                return False
            listed = {int(r["port"]): r for r in view["replicas"]}
            for name in replicas:
                replica = listed.get(self.node_ports[name])
                if replica is None or replica["flags"] != "slave":
                    return False
        for name in replicas:
            info = self.role(name)
            if info.get("role") != "slave" or info.get("master_link_status") != "up":
                return False
            if int(info.get("master_port", 0)) != port:
                return False
            if info.get("master_sync_in_progress") != "0":
                return False
        return self.role(master).get("role") == "master"

    def wait(self, predicate, what: str, timeout: float) -> float:
        """Poll ``predicate`` every 20 ms; the time.monotonic() it first held."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return time.monotonic()
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not within {timeout:g} s; sentinels: {self.views()}")
            time.sleep(0.02)

    def wait_settled(self, master: str, replicas: list[str], timeout: float = 60.0) -> float:
        return self.wait(lambda: self.settled(master, replicas), f"{master} settled", timeout)

    def wait_promoted(self, name: str, timeout: float = 30.0) -> float:
        """Until data node ``name`` is a primary and a sentinel names it: the promotion."""

        def promoted() -> bool:
            if self.role(name).get("role") != "master":
                return False
            return any(
                int(v["master"]["port"]) == self.node_ports[name]
                for v in self.views()
                if "master" in v
            )

        return self.wait(promoted, f"{name} promoted", timeout)


@contextlib.contextmanager
def sentinel_group(workdir: Path | None = None) -> Iterator[SentinelGroup]:
    """A started, settled group (primary "a", replica "b"); stopped on exit."""
    own = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="ticker-sentinel-")) if own else workdir
    group = SentinelGroup(folder)
    try:
        group.start()
        group.wait_settled("a", ["b"])
        yield group
    finally:
        group.stop()
        if own:
            shutil.rmtree(folder, ignore_errors=True)
