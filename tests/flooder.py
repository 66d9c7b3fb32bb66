"""A WebSocket client that floods commands, in a process of its own.

    python -m tests.flooder URL ORIGIN {pings,churn} [--seconds 30]

Sends as fast as its socket takes it (pings, or subscribe/unsubscribe of one symbol in
turn), reads every reply, and stops when the server closes the connection or after
--seconds. Prints one JSON line: frames sent, the replies by type, the rate_limited
errors, the close code received and how long the connection lasted. Run apart from
the clients it is compared with (tests/test_limits_e2e.py, benchmarks/flood.py), so
its busy event loop never delays theirs.
"""

import argparse
import asyncio
import json
import sys
import time
from collections import Counter

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

FRAMES = {
    "pings": [json.dumps({"action": "ping", "id": i}) for i in range(100)],
    "churn": [
        json.dumps({"action": "subscribe", "symbols": ["AAPL"], "snapshot": 0, "id": 1}),
        json.dumps({"action": "unsubscribe", "symbols": ["AAPL"], "id": 2}),
    ],
}


async def flood(url: str, origin: str, mode: str, seconds: float) -> dict:
    frames = FRAMES[mode]
    sent = 0
    types: Counter[str] = Counter()
    errors: list[dict] = []
    async with connect(url, origin=origin, open_timeout=10, close_timeout=2) as ws:
        started = time.monotonic()

        async def write() -> None:
            nonlocal sent
            try:
                while True:
                    await ws.send(frames[sent % len(frames)])
                    sent += 1
                    if sent % 50 == 0:
                        # websockets' send does not yield while its buffer takes more:
                        # let the reader see the replies (and the close).
                        await asyncio.sleep(0)
            except ConnectionClosed:
                return

        async def read() -> None:
            try:
                async for frame in ws:
                    msg = json.loads(frame)
                    types[msg.get("type", "?")] += 1
                    if msg.get("type") == "error":
                        errors.append(
                            {"code": msg.get("code"), "dropped": msg.get("dropped"),
                             "at": round(time.monotonic() - started, 3)}
                        )  # fmt: skip
            except ConnectionClosed:
                pass

        writer = asyncio.ensure_future(write())
        try:
            await asyncio.wait_for(read(), seconds)
        except TimeoutError:
            pass
        lasted = time.monotonic() - started
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        rcvd = ws.protocol.close_rcvd
    return {
        "mode": mode,
        "sent": sent,
        "replies": dict(types),
        "errors": errors,
        "close_code": rcvd.code if rcvd is not None else None,
        "close_reason": rcvd.reason if rcvd is not None else None,
        "lasted": round(lasted, 3),
    }


async def flood_for(url: str, origin: str, mode: str, seconds: float) -> dict:
    """--reconnect: flood, and reconnect at once each time the server closes, for ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    runs = []
    while (left := deadline - loop.time()) > 0.5:
        try:
            runs.append(await flood(url, origin, mode, left))
        except (OSError, ConnectionClosed) as exc:  # refused while the old one is dropped
            runs.append({"error": repr(exc)})
            await asyncio.sleep(0.2)
    return {
        "mode": mode,
        "connections": len(runs),
        "sent": sum(r.get("sent", 0) for r in runs),
        "close_codes": [r.get("close_code") for r in runs],
        "rate_limited_errors": sum(len(r.get("errors", [])) for r in runs),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("origin")
    parser.add_argument("mode", choices=sorted(FRAMES))
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--reconnect", action="store_true", help="flood for all of --seconds")
    args = parser.parse_args()
    run = flood_for if args.reconnect else flood
    result = asyncio.run(run(args.url, args.origin, args.mode, args.seconds))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
