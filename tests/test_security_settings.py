"""Production settings, security headers and error pages, over real server processes.

- settings.py alone (a deployment: no .env.dev) is not in DEBUG, and wants a SECRET_KEY;
  a checkout's .env.dev, which the launcher (make run, make test) writes when it is
  missing, gives DEBUG=1 and a key of its own, and the environment wins over it.
- `manage.py check --deploy` is silent with the documented TLS-behind-a-proxy settings.
- Every page carries the headers and a Content-Security-Policy without 'unsafe-inline'.
- Error pages never show settings, or the secrets they hold, with DEBUG on or off.
"""

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from email.message import Message

import psutil
import pytest
from dotenv import dotenv_values

from tests.realstack import BASE_DIR, RealStack, free_port

pytestmark = [pytest.mark.e2e]

# What the environment of `make test` has from .env.dev; the tests below take it away again.
DEV_VARS = ("DEBUG", "SECRET_KEY", "TICKER_ENV_FILE")


def bare_env(**extra: str) -> dict[str, str]:
    """This process's environment as a deployment's: no development file, nothing from it."""
    env = {k: v for k, v in os.environ.items() if k not in DEV_VARS}
    return {
        **env,
        "DJANGO_SETTINGS_MODULE": "tickerproject.settings",
        "TICKER_ENV_FILE": os.devnull,
        **extra,
    }


def python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=BASE_DIR, capture_output=True, text=True
    )


PRINT_DEBUG = "from django.conf import settings; print('DEBUG', settings.DEBUG)"


def test_imported_settings_are_not_in_debug_and_want_a_secret_key():
    no_key = python(PRINT_DEBUG, bare_env())
    assert no_key.returncode != 0
    assert "RuntimeError: SECRET_KEY must be set" in no_key.stderr
    assert "make install" in no_key.stderr  # what a developer should do about it
    # DEBUG alone brings no key either: only the development file has one.
    debug_no_key = python(PRINT_DEBUG, bare_env(DEBUG="1"))
    assert debug_no_key.returncode != 0
    assert "RuntimeError: SECRET_KEY must be set" in debug_no_key.stderr

    with_key = python(PRINT_DEBUG, bare_env(SECRET_KEY=secrets.token_urlsafe(50)))
    assert with_key.returncode == 0, with_key.stderr
    assert with_key.stdout.strip() == "DEBUG False"


def launcher(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python -m tickerproject.stack test -- python -c CODE`, what `make test` runs."""
    return subprocess.run(
        [sys.executable, "-m", "tickerproject.stack", "test", "--", sys.executable, "-c", code],
        env=env,  # REDIS_URL stays set, so the launcher starts no Redis of its own
        cwd=BASE_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


PRINT_KEY = PRINT_DEBUG + "; print('KEY', settings.SECRET_KEY)"


def test_the_launcher_writes_the_development_file_once_and_everything_reads_it(tmp_path):
    dev_file = tmp_path / ".env.dev"  # as in a fresh clone: not there yet
    first = launcher(PRINT_KEY, bare_env(TICKER_ENV_FILE=str(dev_file)))
    assert first.returncode == 0, first.stderr
    assert f"wrote {dev_file}" in first.stdout
    written = dotenv_values(dev_file)
    assert written["DEBUG"] == "1"
    key = written["SECRET_KEY"]
    assert key.startswith("django-insecure-") and len(key) >= 60
    assert dev_file.stat().st_mode & 0o077 == 0  # the owner's alone
    assert "DEBUG True" in first.stdout and f"KEY {key}" in first.stdout

    # Written once: the next run keeps the key (sessions survive a restart).
    again = launcher(PRINT_KEY, bare_env(TICKER_ENV_FILE=str(dev_file)))
    assert "wrote" not in again.stdout and f"KEY {key}" in again.stdout

    # Not only the launcher's children: settings imported any other way (manage.py) too.
    alone = python(PRINT_KEY, bare_env(TICKER_ENV_FILE=str(dev_file)))
    assert alone.returncode == 0, alone.stderr
    assert "DEBUG True" in alone.stdout and f"KEY {key}" in alone.stdout

    # What the environment sets wins over the file.
    mine = secrets.token_urlsafe(50)
    result = launcher(
        PRINT_KEY, bare_env(TICKER_ENV_FILE=str(dev_file), DEBUG="0", SECRET_KEY=mine)
    )
    assert result.returncode == 0, result.stderr
    assert "DEBUG False" in result.stdout and f"KEY {mine}" in result.stdout


# The README's "Production settings" for TLS terminated by a reverse proxy.
PRODUCTION_TLS = {
    "DEBUG": "0",
    "ALLOWED_HOSTS": "ticker.example.com",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
    "CSRF_TRUSTED_ORIGINS": "https://ticker.example.com",
}


def test_check_deploy_is_silent_with_the_production_settings():
    env = bare_env(SECRET_KEY=secrets.token_urlsafe(50), **PRODUCTION_TLS)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "DEBUG"],
        env=env, cwd=BASE_DIR, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced).", (
        result.stdout + result.stderr
    )
    assert "WARNING" not in result.stderr, result.stderr

    # Without them, Django's deploy checks still speak up: the test above is not vacuous.
    bare = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        env=bare_env(SECRET_KEY=secrets.token_urlsafe(50), DEBUG="0"),
        cwd=BASE_DIR, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in bare.stderr + bare.stdout


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, Message, str]:
    """GET ``url``; (status, headers, body) for any status, never following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(request, timeout=20) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read().decode()


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    stack = RealStack(tmp_path_factory.mktemp("security-db"))
    stack.prepare_database()
    return stack.env["DATABASE_URL"]


@pytest.fixture(scope="module")
def production(tmp_path_factory, database):
    """The web server as deployed: DEBUG off, its own SECRET_KEY, plain HTTP on loopback."""
    stack = RealStack(
        tmp_path_factory.mktemp("security-prod"),
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL=database,
    )
    # daphne too, on another port, for the request-body limit (started alongside uvicorn).
    stack.daphne_port = free_port()
    stack.start_web("daphne", stack.daphne_port, wait=False, ASGI_SERVER="daphne")
    stack.start_web()
    stack.wait_for_web("daphne", stack.daphne_port)
    yield stack
    stack.stop_all()


def csp_directives(header: str) -> dict[str, list[str]]:
    return {
        name: values
        for name, *values in (part.split() for part in header.split(";") if part.strip())
    }


@pytest.mark.parametrize("path", ["/", "/api/docs", "/admin/login/", "/no-such-page/"])
def test_every_page_has_the_security_headers_and_a_strict_csp(production, path):
    status, headers, _ = fetch(production.http_url + path)
    assert status == (404 if path == "/no-such-page/" else 200)
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    csp = csp_directives(headers["Content-Security-Policy"])
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    assert "'unsafe-eval'" not in headers["Content-Security-Policy"]
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["style-src-attr"] == ["'none'"]
    assert csp["object-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]


def test_404_page_is_plain_and_styled_like_the_dashboard(production):
    status, headers, body = fetch(production.http_url + "/no-such-page/")
    assert status == 404
    assert headers["Content-Type"].startswith("text/html")
    assert "Page not found" in body
    assert "/static/frontend/dashboard.css" in body
    assert "<script" not in body and "style=" not in body and "<style" not in body
    css_status, _, css = fetch(production.http_url + "/static/frontend/error-pages.css")
    assert css_status == 200 and ".error-panel" in css


# Secrets that a failing request has at hand: the database and Redis URLs with passwords.
PG_PASSWORD = "pg-" + secrets.token_hex(8)
REDIS_PASSWORD = "rd-" + secrets.token_hex(8)


@pytest.fixture(scope="module", params=["0", "1"], ids=["debug-off", "debug-on"])
def broken(request, tmp_path_factory):
    """A server whose database and Redis refuse connections, so requests fail with 500."""
    closed = free_port()  # nothing listens there
    stack = RealStack(
        tmp_path_factory.mktemp("security-broken"),
        DEBUG=request.param,
        SECRET_KEY=secrets.token_urlsafe(50),
        DATABASE_URL=f"postgres://ticker:{PG_PASSWORD}@127.0.0.1:{closed}/ticker",
        REDIS_URL=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{closed}/0",
    )
    stack.start_web()
    yield stack
    stack.stop_all()


def assert_no_secrets(body: str, stack: RealStack) -> None:
    for secret in (
        PG_PASSWORD,
        REDIS_PASSWORD,
        stack.env["DATABASE_URL"],
        stack.env["REDIS_URL"],
        stack.env["SECRET_KEY"],
    ):
        assert secret not in body
    # No settings at all: not their names, let alone their values.
    for name in ("REDIS_URL", "CELERY_BROKER_URL", "CHANNEL_LAYERS", "ALLOWED_HOSTS"):
        assert name not in body


@pytest.mark.parametrize("accept", ["text/html", "text/plain"])
def test_error_pages_never_show_settings(broken, accept):
    status, headers, body = fetch(broken.http_url + "/", {"Accept": accept})
    assert status == 500
    assert_no_secrets(body, broken)
    if broken.env["DEBUG"] == "1":
        # Django's technical page, still useful: the exception and where it happened.
        assert "OperationalError" in body, body[:2000]
        assert "Traceback" in body
    else:
        assert "Something went wrong" in body
        assert "OperationalError" not in body and "Traceback" not in body
        assert "/static/frontend/dashboard.css" in body
        assert "Content-Security-Policy" in headers


def test_api_errors_never_show_settings(broken):
    status, headers, body = fetch(broken.http_url + "/api/symbols/")
    assert status == 500
    assert_no_secrets(body, broken)
    # JSON in the API's error shape, DEBUG or not: never ninja's bare text/plain traceback,
    # which skipped the project's redaction (tickerproject/errors.py).
    assert headers["Content-Type"] == "application/json; charset=utf-8", body[:500]
    error = json.loads(body)
    assert error["code"] == "server_error" and error["message"] == "internal server error"
    if broken.env["DEBUG"] == "1":
        # The configured reporter's report: the exception, and no settings.
        assert "OperationalError" in error["report"] and "Traceback" in error["report"]
    else:
        assert "report" not in error and "OperationalError" not in body
    # Logged as Django logs its own 500s, through the same reporter.
    log = broken.log("web")
    assert "Internal Server Error: /api/symbols/" in log
    assert PG_PASSWORD not in log and REDIS_PASSWORD not in log


def test_an_oversized_json_post_to_the_api_is_a_json_413(broken):
    """The review's 3 MiB JSON POST to the alerts API (with DEBUG on: a traceback)."""
    answer, sent = post_body(broken.port, "/api/alerts/", 3 * 1024 * 1024, chunked=False)
    assert status_of(answer) == 413, answer[:300]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "body_too_large"
    assert sent < 3 * 1024 * 1024


# --- Request bodies (tickerproject/bodylimit.py): refused past the limit, never buffered.

BODY_LIMIT = 1024 * 1024  # DATA_UPLOAD_MAX_MEMORY_SIZE's default


def web_server(stack: RealStack, server: str) -> tuple[int, psutil.Process]:
    """The port and process of the production stack's ``server`` (uvicorn or daphne)."""
    if server == "daphne":
        return stack.daphne_port, psutil.Process(stack.procs["daphne"].pid)
    return stack.port, psutil.Process(stack.procs["web"].pid)


def post_body(port: int, path: str, total: int, *, chunked: bool) -> tuple[bytes, int]:
    """POST ``total`` bytes to ``path`` over a raw socket, reading the answer meanwhile.

    Sends 64 KiB at a time through a small send buffer until all is sent, the server
    closes, or it stops reading for 10 s. Returns (the server's bytes, bytes sent).
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    framing = "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {total}\r\n"
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nConnection: close\r\n{framing}\r\n".encode()
    )
    answer = bytearray()
    answered = threading.Event()

    def read() -> None:
        try:
            while data := sock.recv(65536):
                answer.extend(data)
        except OSError:
            pass
        answered.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    piece = b"x" * 65536
    frame = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
    sent = 0
    try:
        while sent < total and not answered.is_set():
            sock.sendall(frame)
            sent += len(piece)
        if chunked and sent >= total:
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server closed: what it had to say is in ``answer``
    answered.wait(15)
    sock.close()
    return bytes(answer), sent


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


SERVERS = pytest.mark.parametrize("server", ["uvicorn", "daphne"])


@SERVERS
@pytest.mark.parametrize(
    ("path", "chunked"),
    [("/api/health/", False), ("/api/health/", True), ("/accounts/login/", True)],
    ids=["content-length", "chunked", "chunked-form"],
)
def test_an_oversized_body_is_refused_413_before_it_is_read(production, server, path, chunked):
    """uvicorn stops reading at the middleware's answer; daphne, which would read a whole
    body before calling the application, answers from Twisted (tickerproject/daphne_body)."""
    port, process = web_server(production, server)
    rss_before = process.memory_info().rss
    total = 100 * 1024 * 1024
    answer, sent = post_body(port, path, total, chunked=chunked)
    assert status_of(answer) == 413, answer[:300]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert json.loads(body) == {
        "code": "body_too_large",
        "message": f"the request body is larger than the server accepts ({BODY_LIMIT} bytes)",
        "limit": BODY_LIMIT,
    }
    # The server stopped reading at the limit (plus what sockets hold): of 100 MiB, the
    # client got at most a few through before the connection closed.
    assert sent < 16 * 1024 * 1024, sent
    grown = process.memory_info().rss - rss_before
    assert grown < 8 * 1024 * 1024, f"the server grew by {grown / 2**20:.1f} MiB"
    assert "Traceback" not in production.log("web" if server == "uvicorn" else "daphne")


@SERVERS
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_within_the_limit_still_reaches_django(production, server, chunked):
    port, _ = web_server(production, server)
    answer, sent = post_body(port, "/api/health/", BODY_LIMIT, chunked=chunked)
    assert sent == BODY_LIMIT  # the limit itself is allowed
    assert status_of(answer) == 405  # Django's answer for a POST there, not the limit's


def exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` whole over a new connection; everything the server sends back."""
    answer = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(request)
            while data := sock.recv(65536):
                answer.extend(data)
        except OSError:
            pass  # the server closed with some of the request unread
    return bytes(answer)


@SERVERS
@pytest.mark.parametrize("shape", ["expect-continue", "chunked-whole"])
def test_an_oversized_body_gets_one_answer_the_413(production, server, shape):
    """A client waiting for "100 Continue" gets the 413 instead; a chunked body whose end
    arrives with the chunk that passed the limit is refused, and never reaches Django."""
    port, _ = web_server(production, server)
    head = f"POST /api/health/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    if shape == "expect-continue":
        request = f"{head}Expect: 100-continue\r\nContent-Length: {2 * BODY_LIMIT}\r\n\r\n"
        request = request.encode()
    else:
        chunk = b"%x\r\n%s\r\n" % (1000, b"y" * 1000)
        body = chunk * (BODY_LIMIT // 1000 + 2) + b"0\r\n\r\n"
        request = f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + body
    answer = exchange(port, request)
    assert status_of(answer) == 413, answer[:300]
    assert answer.count(b"HTTP/1.1 ") == 1, answer[:600]
