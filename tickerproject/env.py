"""Typed readers for environment variables; the only place settings touch os.environ.

Also the checkout's development file, ``.env.dev``: the first ``make install`` (or
``make run``, ``make test``: the launcher, tickerproject/stack.py) writes it with DEBUG=1
and a new SECRET_KEY, and every process that loads the settings from this checkout
(manage.py, the launcher's children, Celery) reads it first. A variable the environment
sets wins over the file. A deployment has none (git and the Docker image leave it out),
so it stays strict: DEBUG off and no SECRET_KEY unless given. It is not named ``.env``
because docker compose reads that one (the deployment's secrets, .env.example) by itself.
"""

import os
import secrets
import tempfile
from pathlib import Path

from dotenv import dotenv_values

BASE_DIR = Path(__file__).resolve().parent.parent
# Another file, e.g. a scratch one in a test; a path with no file (/dev/null) reads none.
ENV_FILE_VARIABLE = "TICKER_ENV_FILE"
DEV_ENV_FILE = BASE_DIR / ".env.dev"


def env_str(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name}={value!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = os.environ.get(name)
    number = default if value is None or value == "" else int(value)
    if minimum is not None and number < minimum:
        raise ValueError(f"{name}={number} is below the minimum {minimum}")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    value = os.environ.get(name)
    number = default if value is None or value == "" else float(value)
    if minimum is not None and number < minimum:
        raise ValueError(f"{name}={number} is below the minimum {minimum}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_file() -> Path:
    """The development file this process reads: $TICKER_ENV_FILE, else <checkout>/.env.dev."""
    return Path(env_str(ENV_FILE_VARIABLE, str(DEV_ENV_FILE)))


def load_env_file() -> None:
    """Fill in the environment from env_file(), where it leaves a name unset or empty."""
    path = env_file()
    if not path.is_file():
        return
    for name, value in dotenv_values(path).items():
        if value is not None and not os.environ.get(name):
            os.environ[name] = value


DEV_ENV_TEMPLATE = """\
# Local development settings for this checkout, written once by `make install` (or
# `make run`, `make test`; tickerproject/env.py). manage.py, the stack and Celery read
# it; a variable set in the environment wins. Add any setting of README's Configuration
# table here. Git and Docker ignore this file and docker compose never reads it (its
# secrets are .env): never deploy with it.
DEBUG=1
SECRET_KEY={secret_key}
"""


def write_dev_env_file() -> Path | None:
    """Write env_file() with DEBUG=1 and a new key unless something is there; the path if so."""
    path = env_file()
    if path.exists():
        return None
    # django-insecure-: `check --deploy` flags this key if it ever reaches a deployment.
    text = DEV_ENV_TEMPLATE.format(secret_key="django-insecure-" + secrets.token_urlsafe(50))
    # Written whole, readable by its owner only, and linked in place only if still absent:
    # two launchers starting at once keep one key, and no process reads half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".env.dev.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return None
    finally:
        os.unlink(tmp)
    return path


def ensure_dev_env_file() -> None:
    """write_dev_env_file(), saying so when it wrote one (make install, the launcher)."""
    written = write_dev_env_file()
    if written is not None:
        print(f"wrote {written}: DEBUG=1 and a new SECRET_KEY for local development", flush=True)


if __name__ == "__main__":
    ensure_dev_env_file()  # `make install`
