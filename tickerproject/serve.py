"""Starts the ASGI server named by ASGI_SERVER (the Procfile's `web` entry).

``python -m tickerproject.serve`` replaces itself with daphne, uvicorn or granian,
bound to HOST:PORT, with WEB_CONCURRENCY processes where the server supports it.
"""

import os
import sys

from tickerproject.env import env_int, env_str

APP = "tickerproject.asgi:application"
SERVERS = ("daphne", "uvicorn", "granian")


def server_argv(*, server: str, host: str, port: int, workers: int) -> list[str]:
    if server == "daphne":
        if workers != 1:
            raise SystemExit(
                "daphne runs one process; use uvicorn or granian for WEB_CONCURRENCY>1"
            )
        return ["daphne", "-b", host, "-p", str(port), "--proxy-headers", APP]
    if server == "uvicorn":
        return [
            "uvicorn", APP, "--host", host, "--port", str(port), "--workers", str(workers),
            "--loop", "uvloop", "--ws", "websockets-sansio", "--http", "httptools",
            "--proxy-headers", "--lifespan", "off", "--no-access-log",
        ]  # fmt: skip
    if server == "granian":
        return [
            "granian", "--interface", "asgi", "--host", host, "--port", str(port),
            "--workers", str(workers), "--loop", "uvloop", "--no-access-log", APP,
        ]  # fmt: skip
    raise SystemExit(f"ASGI_SERVER={server!r}: use one of {', '.join(SERVERS)}")


def main() -> None:
    argv = server_argv(
        server=env_str("ASGI_SERVER", "uvicorn"),
        host=env_str("HOST", "127.0.0.1"),
        port=env_int("PORT", 8000),
        workers=env_int("WEB_CONCURRENCY", 1, minimum=1),
    )
    bin_dir = os.path.dirname(sys.executable)
    os.execv(os.path.join(bin_dir, argv[0]), argv)


if __name__ == "__main__":
    main()
