"""Print the spread and mid of order books live, with ticker_client.

    python examples/print_book.py BTC-USD ETH-USD [--depth 10] [--rate 4] [--count 100]

The server is TICKER_WS_URL (default ws://127.0.0.1:8000/ws/prices/); a token may come
from --token or TICKER_TOKEN. The client checks every book message (prev_seq and the
checksum) and subscribes again by itself on a mismatch; Ctrl-C stops it.
"""

import argparse
import asyncio
import os
import sys

from ticker_client import BookChanged, BookResync, Disconnected, Rejected, TickerClient


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("symbols", nargs="*", default=["BTC-USD"])
    parser.add_argument(
        "--url", default=os.environ.get("TICKER_WS_URL", "ws://127.0.0.1:8000/ws/prices/")
    )
    parser.add_argument("--token", default=os.environ.get("TICKER_TOKEN"))
    parser.add_argument("--depth", type=int, default=10, help="levels per side (1-50)")
    parser.add_argument("--rate", type=float, default=None, help="max updates/s per symbol")
    parser.add_argument("--count", type=int, default=0, help="stop after N lines (0: never)")
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    printed = 0
    async with TickerClient(args.url, token=args.token) as client:
        books = await client.subscribe_book(args.symbols, depth=args.depth, max_rate=args.rate)
        if not any(books.values()):
            print("# no book could be subscribed", file=sys.stderr)
            return 1
        async for event in client.events():
            if isinstance(event, BookChanged):
                book = event.book
                bid, ask = book.best_bid(), book.best_ask()
                if bid is None or ask is None:
                    print(f"{event.symbol:<10} #{event.seq:<8} (no book)", flush=True)
                else:
                    print(
                        f"{event.symbol:<10} #{event.seq:<8} bid {bid[0]} x {bid[1]}  "
                        f"ask {ask[0]} x {ask[1]}  spread {book.spread}  mid {book.mid}  "
                        f"levels {len(book.bids)}/{len(book.asks)}",
                        flush=True,
                    )
                printed += 1
                if args.count and printed >= args.count:
                    break
            elif isinstance(event, BookResync | Rejected):
                print(f"# {event}", file=sys.stderr)
            elif isinstance(event, Disconnected):
                print(f"# disconnected ({event.code}), again in {event.retry_in:.1f} s",
                      file=sys.stderr)  # fmt: skip
        stats = client.stats
    print(
        f"# {printed} lines printed; book updates {stats.book_updates} (merged "
        f"{stats.book_conflated}), prev_seq breaks {stats.prev_seq_breaks}, checksum "
        f"failures {stats.checksum_failures}, resyncs {stats.book_resyncs}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        pass
