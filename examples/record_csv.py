"""Record ticks to a CSV that the ``replay`` feed source plays back, with ticker_client.

    python examples/record_csv.py BTC-USD ETH-USD --out var/recording.csv --seconds 60

The file has the replay feed's generic schema (feeds/sources/replay.py): a header row
``ts,symbol,price,size,bid,ask``, then one row per tick in arrival order, ``ts`` in epoch
milliseconds (UTC). Play it back with a symbol's source set to ``replay`` and
``{"file": "var/recording.csv", "symbol": "BTC-USD"}`` (``manage.py feeds set``).
Every tick is written exactly once, across reconnects; rows are flushed as they come.
"""

import argparse
import asyncio
import contextlib
import csv
import os
import sys
from pathlib import Path

from ticker_client import Tick, TickerClient

COLUMNS = ("ts", "symbol", "price", "size", "bid", "ask")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("symbols", nargs="*", default=["BTC-USD"])
    parser.add_argument("--out", type=Path, required=True, help="the CSV file to write")
    parser.add_argument(
        "--url", default=os.environ.get("TICKER_WS_URL", "ws://127.0.0.1:8000/ws/prices/")
    )
    parser.add_argument("--token", default=os.environ.get("TICKER_TOKEN"))
    parser.add_argument("--count", type=int, default=0, help="stop after N ticks (0: no limit)")
    parser.add_argument(
        "--seconds", type=float, default=0, help="stop after S seconds (0: no limit)"
    )
    return parser.parse_args(argv)


def row(tick: Tick) -> tuple[object, ...]:
    # repr() of a float is the shortest text that reads back as the same float.
    return (tick.ts, tick.symbol, repr(tick.price), repr(tick.size), repr(tick.bid), repr(tick.ask))


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    written = 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        async with TickerClient(args.url, token=args.token) as client:
            result = await client.subscribe(args.symbols, snapshot=0)
            if not result.subscribed:
                print(f"# nothing subscribed: {result.refused}", file=sys.stderr)
                return 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.seconds or None):
                    async for tick in client:
                        writer.writerow(row(tick))
                        f.flush()
                        written += 1
                        if args.count and written >= args.count:
                            break
    print(f"# recorded {written} ticks to {args.out}", file=sys.stderr)
    return 0 if written else 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        pass
