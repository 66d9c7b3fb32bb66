import json
import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from loadtest.capacity import (
    CAPACITY_HEADER,
    MAX_STEPS,
    CapacityPlan,
    capacity_lines,
    run_capacity,
    step_line,
)
from loadtest.config import MODES, LoadTestConfig, origin_for
from loadtest.report import build_report, report_paths, summary_lines, write_report
from loadtest.runner import LoadTestError, Second, run_loadtest
from loadtest.selectors import loadtest_symbols
from markets.symbols import is_valid_symbol
from tickerproject.env import env_str

# Exit status when the run worked but a --max-*/--min-* threshold was broken.
THRESHOLD_EXIT_CODE = 3


def default_url() -> str:
    host = env_str("HOST", "127.0.0.1")
    # A server bound to every interface is still reached over loopback.
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"ws://{host}:{env_str('PORT', '8000')}/ws/prices/"


class Command(BaseCommand):
    help = (
        "Load-test a price stream: open N WebSocket clients that each subscribe to K "
        "symbols, measure delivery, latency and seq continuity, and report. "
        "See docs/loadtest.md."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default=None, help="ws:// URL (default: the local stack)")
        parser.add_argument("--origin", default=None, help="Origin header (default: from --url)")
        parser.add_argument("--clients", type=int, default=100)
        parser.add_argument("--symbols-per-client", type=int, default=5, metavar="K")
        parser.add_argument(
            "--symbols",
            default=None,
            help="comma-separated tickers, or a count N for the first N active symbols "
            "(default: every active symbol)",
        )
        parser.add_argument("--duration", type=float, default=30.0, help="measured seconds")
        parser.add_argument(
            "--ramp", type=float, default=5.0, help="seconds over which clients connect"
        )
        parser.add_argument(
            "--processes", type=int, default=os.cpu_count() or 1, help="client processes"
        )
        parser.add_argument("--report", default=None, help="write PATH.json and PATH.html")
        parser.add_argument(
            "--tick-rate",
            type=float,
            default=None,
            help="ticks/s per symbol the server sends (default: the TICK_RATE setting)",
        )
        parser.add_argument(
            "--batch-ms", type=int, default=None, help="ask for batched 'ticks' frames"
        )
        parser.add_argument(
            "--mode",
            choices=MODES,
            default="all",
            help="subscribe mode: every tick (all) or the newest per symbol (latest)",
        )
        parser.add_argument(
            "--max-rate",
            type=float,
            default=None,
            help="mode latest only: at most this many ticks/s per symbol (0 < X <= 1000)",
        )
        parser.add_argument(
            "--snapshot",
            type=int,
            default=None,
            help="snapshot size asked for in subscribe, 0..300 (default: the server's, 300)",
        )
        parser.add_argument(
            "--streams",
            default="ticks",
            help="comma-separated streams to subscribe: ticks, book (default: ticks)",
        )
        parser.add_argument(
            "--depth", type=int, default=None, help="book levels per side, 1..50 (with book)"
        )
        parser.add_argument("--connect-timeout", type=float, default=30.0)
        parser.add_argument("--max-p99-ms", type=float, default=None)
        parser.add_argument("--max-gap-ratio", type=float, default=None)
        parser.add_argument("--min-delivered-ratio", type=float, default=None)
        capacity = parser.add_argument_group(
            "capacity mode",
            "step the client count up; report the most clients the server holds "
            "(--clients and the --max-*/--min-* thresholds are then not used)",
        )
        capacity.add_argument(
            "--capacity",
            default=None,
            metavar="START:STEP:MAX",
            help=f"client counts to try, e.g. 100:100:1000 (at most {MAX_STEPS} steps)",
        )
        capacity.add_argument(
            "--capacity-p99-ms",
            type=float,
            default=100.0,
            help="a step holds with p99 latency at most this (default 100)",
        )
        capacity.add_argument(
            "--capacity-min-delivered",
            type=float,
            default=0.99,
            help="...and at least this delivered ratio (default 0.99)",
        )
        capacity.add_argument(
            "--capacity-budget",
            type=float,
            default=600.0,
            help="seconds for all steps; no step starts that would end later (default 600)",
        )

    def handle(self, *args, **options) -> None:
        if options["capacity"]:
            self.handle_capacity(options)
            return
        config = self.build_config(options)
        self.stdout.write(
            f"load test: {config.clients:,} clients x {config.symbols_per_client} of "
            f"{len(config.symbols)} symbols at {config.stream_rate}/s -> "
            f"{config.expected_ticks_per_s:,.0f} ticks/s expected; {config.url}; "
            f"ramp {config.ramp} s, measuring {config.duration} s, "
            f"{config.processes} client processes"
        )
        try:
            outcome = run_loadtest(config=config, on_second=self.progress)
        except LoadTestError as exc:
            raise CommandError(str(exc)) from exc
        report = build_report(outcome)
        self.stdout.write("")
        for line in summary_lines(report):
            self.stdout.write(line)
        if options["report"]:
            json_path, html_path = write_report(report, options["report"])
            self.stdout.write(f"report: {json_path} and {html_path}")
        if not report["connections"]["opened"]:
            raise CommandError("no connection opened; is the server running at that URL?")
        if not report["thresholds"]["passed"]:
            raise CommandError(
                "; ".join(report["thresholds"]["violations"]), returncode=THRESHOLD_EXIT_CODE
            )

    def handle_capacity(self, options: dict) -> None:
        try:
            plan = CapacityPlan.parse(
                options["capacity"],
                max_p99_ms=options["capacity_p99_ms"],
                min_delivered_ratio=options["capacity_min_delivered"],
                budget_s=options["capacity_budget"],
            )
        except ValueError as exc:
            raise CommandError(f"--capacity: {exc}") from exc
        config = self.build_config({**options, "clients": plan.maximum})
        counts = plan.client_counts()
        self.stdout.write(
            f"capacity: {len(counts)} steps of {counts[0]:,}..{counts[-1]:,} clients x "
            f"{config.symbols_per_client} of {len(config.symbols)} symbols at "
            f"{config.stream_rate}/s; {config.url}; each step: ramp {config.ramp} s, "
            f"measuring {config.duration} s; holds at p99 <= {plan.max_p99_ms} ms and "
            f">= {plan.min_delivered_ratio:.1%} delivered; budget {plan.budget_s} s"
        )

        def on_step(row: dict) -> None:
            self.stdout.write(f"capacity step: {CAPACITY_HEADER.strip()}")
            self.stdout.write(f"capacity step: {step_line(row).strip()}")
            self.stdout.flush()

        try:
            result = run_capacity(config, plan, on_step=on_step, on_second=self.progress)
        except (LoadTestError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        result["config"] = config.as_dict()
        self.stdout.write("")
        for line in capacity_lines(result):
            self.stdout.write(line)
        if options["report"]:
            json_path, _ = report_paths(options["report"])
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(result, indent=2) + "\n")
            self.stdout.write(f"report: {json_path}")
        if result["max_clients_held"] is None:
            raise CommandError("capacity: no step held", returncode=THRESHOLD_EXIT_CODE)

    def progress(self, row: Second) -> None:
        """Called by the runner once per second with totals over all client processes."""
        self.stdout.write(
            f"{row.second:5d}s {row.phase:<8} open {row.open:>6,}  failed {row.failed:,}  "
            f"closed {row.closed_early:,}  |  {row.frames_per_s:>8,} msg/s  "
            f"{row.ticks_per_s:>8,} ticks/s"
        )
        self.stdout.flush()

    def build_config(self, options: dict) -> LoadTestConfig:
        url = options["url"] or default_url()
        symbols = self.parse_symbols(options["symbols"])
        processes = max(1, min(options["processes"], options["clients"]))
        thresholds = {
            name: options[name]
            for name in ("max_p99_ms", "max_gap_ratio", "min_delivered_ratio")
            if options[name] is not None
        }
        try:
            return LoadTestConfig(
                url=url,
                origin=options["origin"] or origin_for(url),
                clients=options["clients"],
                symbols_per_client=options["symbols_per_client"],
                symbols=tuple(symbols),
                duration=options["duration"],
                ramp=options["ramp"],
                processes=processes,
                tick_rate=options["tick_rate"] or settings.TICK_RATE,
                batch_ms=options["batch_ms"],
                mode=options["mode"],
                max_rate=options["max_rate"],
                snapshot=options["snapshot"],
                streams=tuple(
                    dict.fromkeys(x.strip() for x in (options.get("streams") or "ticks").split(","))
                ),
                depth=options.get("depth"),
                connect_timeout=options["connect_timeout"],
                thresholds=thresholds,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc

    def parse_symbols(self, value: str | None) -> list[str]:
        if value is None:
            symbols = loadtest_symbols()
        elif value.strip().isdigit():
            count = int(value)
            symbols = loadtest_symbols(count=count)
            if len(symbols) < count:
                raise CommandError(f"--symbols {count}: only {len(symbols)} active symbols")
        else:
            symbols = list(dict.fromkeys(s.strip() for s in value.split(",") if s.strip()))
            bad = [s for s in symbols if not is_valid_symbol(s)]
            if bad:
                raise CommandError(f"--symbols: not valid tickers: {', '.join(bad)}")
        if not symbols:
            raise CommandError("--symbols: no symbols to subscribe to")
        return symbols
