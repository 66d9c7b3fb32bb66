"""Every `manage.py` command README.md prints works as printed, from the checkout.

The commands are read out of README.md itself (fenced blocks and inline code), so a new
example is covered as soon as it is written, and run each in a subprocess the way a user
runs it in a second terminal next to `make run`: with the virtualenv's Python, from the
checkout, with neither DEBUG nor SECRET_KEY in the environment, so the checkout's .env.dev
is what makes them work. They run against a real stack of their own (a web server on this
suite's Redis; no worker, so no feed reaches out to an exchange after `feeds set`) and a
scratch SQLite database. Only what cannot run as
printed is bounded: the load test gets the stack's URL, a few clients and seconds;
createsuperuser gets --noinput and its answers from the environment.
"""

import os
import re
import shlex
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.realstack import BASE_DIR, RealStack
from tickerproject.env import DEV_ENV_FILE

pytestmark = [pytest.mark.e2e]

README = BASE_DIR / "README.md"
PYTHON = ".venv/bin/python"  # what README tells the user to call
# A python, then manage.py and its arguments, up to the end of the code or a shell operator.
MANAGE = re.compile(r"(?P<python>[\w./-]*python3?) manage\.py(?P<args>[^`|;&)\n]*)")
FENCE = re.compile(r"^[ \t]*```[^\n]*\n(?P<body>.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`]+)`")
# The example user of README's "Users and tokens".
SUPERUSER = {
    "DJANGO_SUPERUSER_USERNAME": "alice",
    "DJANGO_SUPERUSER_EMAIL": "alice@example.com",
    "DJANGO_SUPERUSER_PASSWORD": "readme-test-password",
}


def readme_commands(text: str) -> list[str]:
    """Every `python manage.py ...` in ``text``: fenced blocks' first, then inline code's."""
    snippets = []
    for block in FENCE.finditer(text):
        # A line continued with a backslash is one command; a shell comment is not one.
        for line in block["body"].replace("\\\n", " ").splitlines():
            snippets.append(re.sub(r"(^|\s)#.*", "", line))
    prose = FENCE.sub("", text)
    snippets += [" ".join(code.split()) for code in INLINE.findall(prose)]
    return [" ".join(m.group().split()) for s in snippets for m in MANAGE.finditer(s)]


def test_the_parser_finds_commands_in_blocks_and_inline_code():
    text = (
        "Run `.venv/bin/python manage.py feeds\n  list` or (`X=$(python manage.py a b | tail)`).\n"
        "```sh\nmake run  # python manage.py nothing\n.venv/bin/python manage.py loadtest \\\n"
        "  --clients 3   # a comment\n```\n"
        "- a list item's block:\n\n  ```sh\n  X=1 make test\n  ```\n"
        "  then `.venv/bin/python manage.py after`.\n"
    )
    assert readme_commands(text) == [
        ".venv/bin/python manage.py loadtest --clients 3",
        ".venv/bin/python manage.py feeds list",
        "python manage.py a b",
        ".venv/bin/python manage.py after",
    ]


def bounded(argv: list[str], stack: RealStack, tmp: Path) -> list[str]:
    """``argv`` as printed, but what would run long or wait for a person."""
    argv = list(argv)

    def option(name: str, value: str) -> None:
        if name in argv:
            argv[argv.index(name) + 1] = value
        else:
            argv.extend([name, value])

    if argv[2] == "loadtest":
        option("--url", stack.ws_url)
        option("--clients", "3")
        option("--ramp", "0.5")
        option("--duration", "2")
        option("--processes", "1")
        if "--report" in argv:
            option("--report", str(tmp / "loadtest-report"))
    if argv[2] == "createsuperuser" and "--noinput" not in argv:
        argv.append("--noinput")  # the answers come from DJANGO_SUPERUSER_*
    return argv


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A web server of its own, on a migrated and seeded scratch database."""
    stack = RealStack(tmp_path_factory.mktemp("readme"))
    stack.prepare_database()
    try:
        stack.start_web()
        yield stack
    finally:
        stack.stop_all()


def user_env(stack: RealStack) -> dict[str, str]:
    """A copy of this environment as a user's shell has it: no DEBUG, no SECRET_KEY.

    Only where the data lives is the stack's (its Redis, prefix and scratch database).
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DEBUG", "SECRET_KEY", "TICKER_ENV_FILE", "DJANGO_SETTINGS_MODULE")
    }
    for name in ("REDIS_URL", "REDIS_PREFIX", "DATABASE_URL"):
        env[name] = stack.env[name]
    return {**env, **SUPERUSER}


Outcome = tuple[list[str], float, subprocess.CompletedProcess]


def run(argv: list[str], env: dict[str, str]) -> Outcome:
    started = time.monotonic()
    result = subprocess.run(argv, env=env, cwd=BASE_DIR, capture_output=True, text=True, timeout=60)
    return argv, time.monotonic() - started, result


def check(argv: list[str], took: float, result: subprocess.CompletedProcess) -> None:
    print(f"{took:5.1f} s  {shlex.join(argv)}")
    assert result.returncode == 0, (argv, result.stdout[-2000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr, (argv, result.stderr[-3000:])
    if argv[2] == "loadtest":
        assert "connections" in result.stdout, result.stdout[-2000:]
    if argv[2] == "issue_token":
        assert result.stdout.strip().splitlines()[-1].startswith("tk_"), result.stdout


def test_readmes_manage_py_commands_work_as_printed(stack, tmp_path):
    commands = list(dict.fromkeys(readme_commands(README.read_text())))  # each once
    printed = {shlex.split(c)[2] for c in commands}
    # The examples README is known to have; more are covered as they are added.
    assert {"feeds", "loadtest", "createsuperuser", "issue_token"} <= printed, commands
    assert all(c.startswith(f"{PYTHON} manage.py ") for c in commands), (
        "README calls manage.py with a Python other than the virtualenv's",
        commands,
    )
    assert DEV_ENV_FILE.is_file(), "make install (or the launcher) writes .env.dev first"
    env = user_env(stack)
    argvs = [bounded(shlex.split(c), stack, tmp_path) for c in commands]

    # The user README's token examples name is made first, whatever the order in README.
    for argv in [a for a in argvs if a[2] == "createsuperuser"]:
        check(*run(argv, env))
    # The rest two at a time (each is mostly Django starting up), in README's order; and,
    # alongside, one without the development file, which must fail: the file is what
    # makes them work.
    rest = [a for a in argvs if a[2] != "createsuperuser"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        bare = pool.submit(
            run, [PYTHON, "manage.py", "feeds", "list"], {**env, "TICKER_ENV_FILE": os.devnull}
        )
        done = list(pool.map(lambda argv: run(argv, env), rest))
    _, _, without_file = bare.result()
    assert without_file.returncode != 0, without_file.stdout
    assert "SECRET_KEY must be set" in without_file.stderr, without_file.stderr
    for outcome in done:
        check(*outcome)
