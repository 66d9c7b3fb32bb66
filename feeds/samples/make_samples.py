"""Writes the sample replay files in this directory (see README.md). Deterministic.

    .venv/bin/python feeds/samples/make_samples.py

The trades are synthetic: a seeded random walk, not market data.
"""

import csv
import json
import math
import random
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROWS = 300
START_MS = 1736121600000  # 2025-01-06T00:00:00Z


def trades(seed: int, price: float, tick: float, mean_gap_ms: float):
    rng = random.Random(seed)
    ts = START_MS
    for i in range(ROWS):
        ts += max(1, round(rng.expovariate(1 / mean_gap_ms)))
        price = max(tick, round(price * math.exp(rng.gauss(0, 0.0002)) / tick) * tick)
        half = tick * rng.randint(1, 3)
        size = round(math.exp(rng.gauss(-3, 1.2)), 5)
        yield i, ts, round(price, 2), size, round(price - half, 2), round(price + half, 2)


def main() -> None:
    with (HERE / "btc-usd.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ts", "symbol", "price", "size", "bid", "ask"])
        for _, ts, price, size, bid, ask in trades(1, 97000.0, 0.01, 250):
            w.writerow([ts, "BTC-USD", f"{price:.2f}", size, f"{bid:.2f}", f"{ask:.2f}"])
    with (HERE / "eth-usd.ndjson").open("w") as f:
        for i, ts, price, size, bid, ask in trades(2, 3400.0, 0.01, 300):
            iso = datetime.fromtimestamp(ts / 1000, UTC).isoformat(timespec="milliseconds")
            iso = iso.replace("+00:00", "Z")
            row = {"ts": iso, "symbol": "ETH-USD", "price": price, "size": size}
            if i % 3:  # bid and ask are optional: every third row goes without
                row.update(bid=bid, ask=ask)
            f.write(json.dumps(row) + "\n")
    # Binance's public trades files (data.binance.vision, spot/daily/trades): no header;
    # id, price, qty, quote_qty, time, is_buyer_maker, is_best_match; since 2025 the
    # spot files give time in microseconds.
    with (HERE / "BTCUSDT-trades-2025-01-06.csv").open("w", newline="") as f:
        w = csv.writer(f)
        for i, ts, price, size, _, _ in trades(3, 97000.0, 0.01, 200):
            qty = f"{size:.8f}"
            w.writerow([
                4383500000 + i, f"{price:.8f}", qty, f"{price * size:.8f}", ts * 1000,
                "True" if i % 2 else "False", "True",
            ])  # fmt: skip


if __name__ == "__main__":
    main()
