"""Print the ticks of some symbols as they arrive, with ticker_client.

    python examples/print_ticks.py BTC-USD ETH-USD --token tk_... [--count 100]

The server is TICKER_WS_URL (default ws://127.0.0.1:8000/ws/prices/); the token may come
from TICKER_TOKEN too. Reconnects, resumes and never prints a tick twice; Ctrl-C stops it.
"""

import argparse
import asyncio
import os
import sys

from ticker_client import Disconnected, Rejected, Reset, Tick, TickerClient


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("symbols", nargs="*", default=["BTC-USD"])
    parser.add_argument(
        "--url", default=os.environ.get("TICKER_WS_URL", "ws://127.0.0.1:8000/ws/prices/")
    )
    parser.add_argument("--token", default=os.environ.get("TICKER_TOKEN"))
    parser.add_argument("--mode", choices=["all", "latest"], default="all")
    parser.add_argument("--count", type=int, default=0, help="stop after N ticks (0: never)")
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    printed = 0
    async with TickerClient(args.url, token=args.token) as client:
        result = await client.subscribe(args.symbols, mode=args.mode, snapshot=0)
        for symbol, code in result.refused.items():
            print(f"# {symbol} refused: {code}", file=sys.stderr)
        if not result.subscribed:
            return 1
        async for event in client.events():
            if isinstance(event, Tick):
                when = event.time.strftime("%H:%M:%S.%f")[:-3]
                print(
                    f"{when} {event.symbol:<10} #{event.seq:<8} {event.price:>14.6f}  "
                    f"bid {event.bid:.6f} ask {event.ask:.6f} size {event.size:g}",
                    flush=True,
                )
                printed += 1
                if args.count and printed >= args.count:
                    break
            elif isinstance(event, Disconnected):
                print(f"# disconnected ({event.code}), again in {event.retry_in:.1f} s",
                      file=sys.stderr)  # fmt: skip
            elif isinstance(event, Reset | Rejected):
                print(f"# {event}", file=sys.stderr)
        stats = client.stats
    print(
        f"# {printed} ticks printed; duplicates dropped {stats.duplicates}, gaps {stats.gaps}, "
        f"reconnects {stats.reconnects}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        pass
