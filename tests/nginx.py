"""A real nginx (Debian's package) in front of test web servers, configured by deploy/nginx.conf.

deploy/nginx.conf is the server part of the config, the file docker-compose.yml gives the
nginx image as a template. ``render`` fills in its ``${TICKER_...}`` variables as that
image's entrypoint does (envsubst of the named variables only: nginx's own ``$host`` and
the like stay); ``Nginx`` wraps it in the few main-level lines a non-root, non-daemon
nginx needs (pid, logs and temp files in a directory of the test's own, the role the
image's /etc/nginx/nginx.conf plays) and runs it as a child process on a free port.
"""

import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tickerproject.stack import free_port, wait_for_port

BASE_DIR = Path(__file__).resolve().parent.parent
NGINX_CONF = BASE_DIR / "deploy" / "nginx.conf"
VARIABLE = re.compile(r"\$(?:\{(TICKER_\w+)\}|(TICKER_\w+))")


def nginx_or_fail() -> str:
    """Debian's nginx binary; `make test` installs it (scripts/ensure-nginx.sh)."""
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )
    if found:
        return found
    message = "nginx is missing: apt-get install nginx (make test does it as root)"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message)
    pytest.skip(message)


def render(template: str, variables: dict[str, str]) -> str:
    """envsubst restricted to TICKER_* names, like the image's NGINX_ENVSUBST_FILTER=^TICKER_."""

    def substitute(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"deploy/nginx.conf uses ${name}, which is not given")
        return variables[name]

    return VARIABLE.sub(substitute, template)


def upstream_servers(addresses: list[str]) -> str:
    return " ".join(f"server {address};" for address in addresses)


class Nginx:
    """nginx running deploy/nginx.conf, as a child process with its files in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        upstreams: list[str] | None = None,
        *,
        port: int | None = None,
        variables: dict[str, str] | None = None,
    ) -> None:
        """Either ``upstreams`` (host:port each), or the template's ``variables`` as given
        (docker-compose.yml's, translated), whose TICKER_LISTEN must be 127.0.0.1:``port``."""
        self.binary = nginx_or_fail()
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        if variables is None:
            variables = {
                "TICKER_UPSTREAM_SERVERS": upstream_servers(upstreams or []),
                "TICKER_LISTEN": f"127.0.0.1:{self.port}",
            }
        site = render(NGINX_CONF.read_text(), variables)
        (workdir / "ticker.conf").write_text(site)
        # As root, nginx would switch its workers to `nobody`, who cannot write here.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
        self.config = workdir / "nginx.conf"
        self.config.write_text(
            f"""{user}
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;
events {{ worker_connections 4096; }}
http {{
    # Which web server each request went to (the scale-out test counts them).
    log_format upstreams '$remote_addr $upstream_addr $status "$request"';
    access_log {workdir}/access.log upstreams;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    include {workdir}/ticker.conf;
}}
"""
        )

    @property
    def args(self) -> list[str]:
        # -e: the error log from the very start, before the config names one.
        error_log = str(self.workdir / "error.log")
        return ["-p", str(self.workdir), "-e", error_log, "-c", str(self.config)]

    def check(self) -> str:
        """``nginx -t`` on the rendered config; its output."""
        out = subprocess.run(
            [self.binary, "-t", *self.args],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        return out.stderr

    def start(self) -> "Nginx":
        self.check()
        self._log = open(self.workdir / "stderr.log", "ab")  # closed in stop()
        self.proc = subprocess.Popen(
            [self.binary, *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, timeout=10)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: fast shutdown of the master and its worker
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self._log.close()

    def log(self, name: str = "error.log") -> str:
        path = self.workdir / name
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/prices/"
