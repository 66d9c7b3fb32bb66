"""Order-book vectors shared by the Python book (markets/book.py) and the dashboard's.

The dashboard's JS book (frontend/static/frontend/order-book.js) is tested under node
against tests/js/book-vectors.json, which this module writes; tests/test_book_vectors.py
checks that the file is what markets.book computes today, so the two sides cannot drift.

Regenerate: .venv/bin/python -m tests.book_vectors > tests/js/book-vectors.json
"""

import json
import random
import sys

from markets.book import OrderBook, checksum, window_diff

# OKX's documented checksum examples (v5 WebSocket API, order book channel), the window
# limit (only the first 10 levels count), uneven sides, and strings kept verbatim.
CHECKSUM_CASES = [
    ([["3366.1", "7"], ["3366", "6"]], [["3366.8", "9"], ["3368", "8"]]),
    ([["3366.1", "7"]], [["3366.8", "9"], ["3368", "8"], ["3372", "8"]]),
    ([], []),
    ([], [["5", "1"], ["6", "2"]]),
    ([["4", "1"], ["3", "2"], ["2", "0.5"]], []),
    ([[str(100 - i), "1"] for i in range(12)], [[str(200 + i), "1"] for i in range(12)]),
    ([[str(100 - i), "1"] for i in range(9)], [[str(200 + i), "1"] for i in range(10)]),
    ([["97000.50", "1.25000000"]], [["97001.00", "0.40"]]),
    ([["97000.5", "1.25"]], [["97001", "0.4"]]),
]


def _checksums() -> list[dict]:
    return [
        {"bids": bids, "asks": asks, "checksum": checksum(bids, asks)}
        for bids, asks in CHECKSUM_CASES
    ]


def _random_level(rng: random.Random, side: str, mid: int) -> list[str]:
    # Prices on a 0.5 grid, written with and without trailing zeros, so the same level
    # arrives as different strings; sizes with up to 8 decimals, sometimes 0 (delete).
    offset = rng.randint(1, 30) * 5
    units = mid - offset if side == "bids" else mid + offset
    price = f"{units // 10}.{units % 10}"
    if rng.random() < 0.3:
        price += "0"
    size = "0" if rng.random() < 0.25 else f"{rng.randint(1, 5000) / 1000:.8f}".rstrip("0")
    return [price, size.rstrip(".") or "0"]


def _stream(seed: int, depth: int, steps: int) -> dict:
    """A book subscription at ``depth``: its snapshot, then updates as a server sends them
    (each the window diff of the top ``depth``, checksummed), with their seq chain."""
    rng = random.Random(seed)
    mid = 970_000
    book = OrderBook()
    for side in ("bids", "asks"):
        book.apply(**{side: [_random_level(rng, side, mid) for _ in range(40)]})
    view = book.top(depth)
    frames = [
        {
            "type": "book",
            "symbol": "BTC-USD",
            "seq": 100,
            "epoch": "1764072000000",
            "ts": 1764072000000,
            "depth": depth,
            "bids": view[0],
            "asks": view[1],
            "checksum": checksum(*view),
        }
    ]
    seq = 100
    for step in range(steps):
        for _ in range(rng.randint(1, 6)):
            side = rng.choice(("bids", "asks"))
            book.apply(**{side: [_random_level(rng, side, mid)]})
        new = book.top(depth)
        bids, asks = window_diff(view, new)
        if not bids and not asks:
            continue
        seq += rng.choice((1, 1, 1, 3))  # conflated updates skip seqs; prev_seq links them
        frames.append(
            {
                "type": "book_update",
                "symbol": "BTC-USD",
                "seq": seq,
                "prev_seq": frames[-1]["seq"],
                "ts": 1764072000000 + step,
                "bids": bids,
                "asks": asks,
                "checksum": checksum(*new),
            }
        )
        view = new
    return {"depth": depth, "frames": frames, "final": {"bids": view[0], "asks": view[1]}}


def build() -> dict:
    return {
        "checksums": _checksums(),
        "streams": [_stream(7, 10, 80), _stream(11, 3, 40), _stream(13, 25, 50)],
    }


def as_json() -> str:
    """The vectors as JSON, one frame per line: small, and a diff shows what changed."""
    data = build()
    streams = []
    for stream in data["streams"]:
        frames = ",\n".join(json.dumps(f, separators=(",", ":")) for f in stream["frames"])
        final = json.dumps(stream["final"], separators=(",", ":"))
        streams.append(f'{{"depth": {stream["depth"]}, "final": {final}, "frames": [\n{frames}]}}')
    checksums = json.dumps(data["checksums"], separators=(",", ":"))
    return f'{{"checksums": {checksums},\n"streams": [\n' + ",\n".join(streams) + "]}\n"


if __name__ == "__main__":
    sys.stdout.write(as_json())
