"""Turning a load test's outcome into a summary, a JSON report and an HTML report.

The HTML report is one self-contained file: plotly.js is embedded inline from the
plotly Python package (``include_plotlyjs=True``), so it opens offline and never
fetches anything from a CDN.
"""

import html
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

from .runner import Outcome
from .stats import gap_ratio, percentile

REPORT_FORMAT = 1
# A client process busier than this was probably the bottleneck, not the server.
SATURATED_CPU = 0.9


def build_report(outcome: Outcome) -> dict[str, Any]:
    """Everything measured, as JSON-ready data; thresholds are judged here too."""
    cfg = outcome.config
    t = outcome.totals
    window = cfg.duration
    expected = cfg.expected_ticks_per_s
    delivered = t.ticks_counted / window
    spans = [hi - lo for lo, hi in t.seq_span.values()]
    progress = sorted(t.stream_spans)
    cpu = [round(s / window, 3) for s in t.cpu_seconds]
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "started_at": outcome.started_at,
        "finished_at": outcome.finished_at,
        "config": cfg.as_dict(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "connections": {
            "requested": cfg.clients,
            "attempted": t.attempted,
            "opened": t.opened,
            "failed": t.failed,
            "closed_early": t.closed_early,
            "open_at_end": t.open_at_end,
            "subscribed": t.subscribed,
            "connect_ms": {
                "p50": _round(percentile(t.connect_ms, 50)),
                "p90": _round(percentile(t.connect_ms, 90)),
                "p99": _round(percentile(t.connect_ms, 99)),
                "max": _round(max(t.connect_ms, default=None)),
            },
            "connect_errors": dict(t.connect_errors.most_common()),
            "close_codes": dict(t.close_codes.most_common()),
            # Close code 4008: the server dropped a slow consumer, the client resumed.
            "slow_consumer_closes": t.slow_consumer_closes,
            "reconnect_attempts": t.reconnect_attempts,
            "reconnected": t.reconnected,
            "resumed": t.resumed,
            "resume_failed": t.resume_failed,
            "reconnect_errors": dict(t.reconnect_errors.most_common()),
        },
        "throughput": {
            "window_s": window,
            "expected_ticks_per_s": expected,
            "delivered_ticks_per_s": round(delivered, 1),
            "delivered_ratio": round(delivered / expected, 4) if expected else None,
            "frames_per_s": round(t.frames_counted / window, 1),
            "ticks_per_frame": round(t.ticks_counted / t.frames_counted, 2)
            if t.frames_counted
            else None,
            "batch_frames_per_s": round(t.batch_frames_counted / window, 1),
            "ticks_counted": t.ticks_counted,
            # How fast the newest seq seen of each symbol advanced (median over
            # symbols): the server's real tick rate when it keeps up, to check the
            # expected figure against.
            "observed_tick_rate": round(statistics.median(spans) / window, 2) if spans else None,
            # How fast each (client, symbol) stream advanced: below the tick rate, the
            # server is falling further behind; the slowest tenth shows the laggards.
            "stream_progress_per_s": {
                "median": round(statistics.median(progress) / window, 2),
                "slowest_10pct": round(percentile(progress, 10) / window, 2),
            }
            if progress
            else None,
        },
        "latency_ms": t.latency.summary(),
        "books": {
            "snapshots": t.book_snapshots,
            "updates": t.book_updates,
            "updates_per_s": round(t.book_updates_counted / window, 1),
            "bytes_per_update": round(t.book_bytes_counted / t.book_updates_counted, 1)
            if t.book_updates_counted
            else None,
            "conflated": t.book_conflated,
            "prev_seq_breaks": t.book_prev_seq_breaks,
            "checksum_failures": t.book_checksum_failures,
            # Receipt minus the update's ts: how old the book a client holds is.
            "age_ms": t.book_age.summary(),
        },
        "seq": {
            "streams": t.streams,
            "gaps": t.seq.gaps,
            "gap_ratio": round(gap_ratio(gaps=t.seq.gaps, delivered=t.ticks_counted), 6),
            "gaps_before_window": t.seq.gaps_before_window,
            "duplicates": t.seq.duplicates,
            "out_of_order": t.seq.out_of_order,
            "resets": t.seq.resets,
            "conflated": t.seq.conflated,
            "conflation_mismatch": t.seq.conflation_mismatch,
        },
        "errors": {
            "total": sum(t.errors.values()),
            "by_code": dict(t.errors.most_common()),
            "samples": t.error_samples,
        },
        "snapshots": {"frames": t.snapshots, "ticks": t.snapshot_ticks},
        "unexpected": dict(t.unexpected.most_common()),
        "harness": {
            "processes": cfg.processes,
            "event_loop": t.event_loop,
            "cpu_per_process": cpu,
            # The harness's own cost: client-process CPU time in the window per frame.
            "cpu_us_per_frame": round(sum(t.cpu_seconds) / t.frames_counted * 1e6, 2)
            if t.frames_counted
            else None,
            # The share of that CPU spent in the kernel: what no Python change can cut.
            "cpu_system_share": round(sum(t.cpu_system_seconds) / sum(t.cpu_seconds), 3)
            if sum(t.cpu_seconds) > 0 and t.cpu_system_seconds
            else None,
            "saturated": any(c >= SATURATED_CPU for c in cpu),
        },
        "timeline": {
            "second": [r.second for r in outcome.timeline],
            "phase": [r.phase for r in outcome.timeline],
            "open": [r.open for r in outcome.timeline],
            "failed": [r.failed for r in outcome.timeline],
            "closed_early": [r.closed_early for r in outcome.timeline],
            "frames_per_s": [r.frames_per_s for r in outcome.timeline],
            "ticks_per_s": [r.ticks_per_s for r in outcome.timeline],
        },
    }
    xs, ys = t.latency.cdf()
    report["latency_cdf"] = {"ms": xs, "fraction": [round(y, 6) for y in ys]}
    report["thresholds"] = judge(report, cfg.thresholds)
    return report


def judge(report: dict[str, Any], thresholds: dict[str, float]) -> dict[str, Any]:
    """Compare the figures with the limits given on the command line."""
    violations: list[str] = []
    if (limit := thresholds.get("max_p99_ms")) is not None:
        p99 = report["latency_ms"]["p99"]
        if p99 is None:
            violations.append(f"p99 latency: no ticks were measured (limit {limit} ms)")
        elif p99 > limit:
            violations.append(f"p99 latency {p99} ms is above {limit} ms")
    if (limit := thresholds.get("max_gap_ratio")) is not None:
        ratio = report["seq"]["gap_ratio"]
        if ratio > limit:
            violations.append(f"gap ratio {ratio} is above {limit}")
        early = report["seq"].get("gaps_before_window", 0)
        if limit == 0 and early:
            # No gap allowed: not at the start of a stream either (a subscribe's seam).
            violations.append(f"{early} seqs went missing before the window")
    if (limit := thresholds.get("min_delivered_ratio")) is not None:
        ratio = report["throughput"]["delivered_ratio"]
        if ratio is not None and ratio < limit:
            violations.append(f"delivered ratio {ratio} is below {limit}")
    return {**thresholds, "violations": violations, "passed": not violations}


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _n(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The end-of-run summary as (label, text) rows."""
    c = report["connections"]
    tp = report["throughput"]
    lat = report["latency_ms"]
    seq = report["seq"]
    err = report["errors"]
    ratio = "-" if tp["delivered_ratio"] is None else f"{tp['delivered_ratio']:.1%}"
    books = report.get("books") or {}
    book_rows = []
    if books.get("snapshots"):
        age = books["age_ms"]
        book_rows.append(
            (
                "books",
                f"updates {_n(books['updates_per_s'])}/s ({_n(books['bytes_per_update'])} "
                f"bytes each, {_n(books['conflated'])} merged)  prev_seq breaks "
                f"{_n(books['prev_seq_breaks'])}  checksum failures "
                f"{_n(books['checksum_failures'])}  age p50 {_n(age['p50'])} p99 "
                f"{_n(age['p99'])} max {_n(age['max'])} ms",
            )
        )
    rows = [
        (
            "connections",
            f"opened {_n(c['opened'])}/{_n(c['requested'])}  failed {_n(c['failed'])}"
            f"  closed early {_n(c['closed_early'])}  open at end {_n(c['open_at_end'])}"
            f"  slow-consumer closes {_n(c['slow_consumer_closes'])} / resumed "
            f"{_n(c['resumed'])}  (connect p50 {_n(c['connect_ms']['p50'])} ms, "
            f"p99 {_n(c['connect_ms']['p99'])} ms)",
        ),
        (
            "throughput",
            f"delivered {_n(tp['delivered_ticks_per_s'])} ticks/s of expected "
            f"{_n(tp['expected_ticks_per_s'])} ({ratio})  frames {_n(tp['frames_per_s'])}/s"
            f"  observed tick rate {_n(tp['observed_tick_rate'])}/s per symbol",
        ),
        (
            "streams",
            "each advanced "
            + (
                f"{sp['median']} seq/s (median), {sp['slowest_10pct']} (slowest 10%)"
                if (sp := tp["stream_progress_per_s"])
                else "-"
            )
            + f"; tick rate {report['config']['tick_rate']}/s",
        ),
        (
            "latency ms",
            f"p50 {_n(lat['p50'])}  p90 {_n(lat['p90'])}  p99 {_n(lat['p99'])}"
            f"  max {_n(lat['max'])}  (ts to receipt, {_n(lat['count'])} ticks)",
        ),
        (
            "seq",
            f"gaps {_n(seq['gaps'])} (ratio {seq['gap_ratio']:.6f}"
            f", {_n(seq.get('gaps_before_window', 0))} before the window)  duplicates "
            f"{_n(seq['duplicates'])}  out of order {_n(seq['out_of_order'])}  resets "
            f"{_n(seq['resets'])}  conflated {_n(seq['conflated'])}"
            + (
                f" ({_n(seq['conflation_mismatch'])} ticks skipped more than the jump)"
                if seq["conflation_mismatch"]
                else ""
            )
            + f"  over {_n(seq['streams'])} streams",
        ),
        (
            "errors",
            f"{_n(err['total'])} received" + (f" {err['by_code']}" if err["by_code"] else ""),
        ),
    ]
    if c["connect_errors"]:
        rows.append(("connect errors", str(c["connect_errors"])))
    if c["close_codes"]:
        rows.append(("early closes", f"close codes {c['close_codes']}"))
    if c["slow_consumer_closes"]:
        rows.append(
            (
                "reconnects",
                f"{_n(c['slow_consumer_closes'])} slow-consumer closes (4008): "
                f"{_n(c['reconnect_attempts'])} attempts, {_n(c['reconnected'])} reconnected, "
                f"{_n(c['resumed'])} resumed, {_n(c['resume_failed'])} gave up"
                + (f" {c['reconnect_errors']}" if c["reconnect_errors"] else ""),
            )
        )
    if report["unexpected"]:
        rows.append(("unexpected", f"frames {report['unexpected']}"))
    cpu = report["harness"]["cpu_per_process"]
    rows.append(
        (
            "harness",
            f"{report['harness']['event_loop']} loop, CPU per client process "
            + ", ".join(f"{c:.0%}" for c in cpu)
            + f"; {_n(report['harness']['cpu_us_per_frame'])} us per frame"
            + (
                f" ({share:.0%} in the kernel)"
                if (share := report["harness"]["cpu_system_share"]) is not None
                else ""
            ),
        )
    )
    rows[4:4] = book_rows
    if report["harness"]["saturated"]:
        rows.append(
            (
                "WARNING:",
                "a client process was near 100% CPU; the harness may be the bottleneck "
                "(more --processes, or run it on another machine).",
            )
        )
    for violation in report["thresholds"]["violations"]:
        rows.append(("THRESHOLD BROKEN:", violation))
    return rows


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The end-of-run summary, as printed by the command."""
    return [f"{label:<12} {text}" for label, text in summary_rows(report)]


def report_paths(path: str | Path) -> tuple[Path, Path]:
    """``PATH`` -> (PATH.json, PATH.html); a .json or .html suffix on PATH is dropped."""
    path = Path(path)
    if path.suffix in (".json", ".html"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".json"), path.with_name(path.name + ".html")


def write_report(report: dict[str, Any], path: str | Path) -> tuple[Path, Path]:
    json_path, html_path = report_paths(path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    html_path.write_text(render_html(report))
    return json_path, html_path


def _figures(report: dict[str, Any]) -> list[Any]:
    import plotly.graph_objects as go

    cfg = report["config"]
    tl = report["timeline"]
    window = (cfg["ramp"], cfg["ramp"] + cfg["duration"])

    cdf = report["latency_cdf"]
    latency = go.Figure(
        go.Scatter(
            x=[max(x, 0.1) for x in cdf["ms"]],
            y=cdf["fraction"],
            mode="lines",
            name="ticks",
            line_shape="hv",
        )
    )
    marks = [
        (name, report["latency_ms"][name], fraction)
        for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
        if report["latency_ms"][name] is not None
    ]
    latency.add_scatter(
        # A log axis cannot show 0 ms: the floor bucket is drawn at 0.1 ms.
        x=[max(value, 0.1) for _, value, _ in marks],
        y=[fraction for _, _, fraction in marks],
        text=[f"{name} {value} ms" for name, value, _ in marks],
        mode="markers+text",
        textposition="middle left",
        name="percentiles",
    )
    latency.update_layout(
        title="Latency CDF: tick ts to receipt (measurement window)",
        xaxis={"title": "latency (ms, log scale)", "type": "log"},
        yaxis={"title": "fraction of ticks", "range": [0, 1.02]},
    )

    throughput = go.Figure()
    throughput.add_scatter(x=tl["second"], y=tl["ticks_per_s"], name="ticks/s", mode="lines")
    throughput.add_scatter(x=tl["second"], y=tl["frames_per_s"], name="frames/s", mode="lines")
    expected = report["throughput"]["expected_ticks_per_s"]
    if expected:
        throughput.add_hline(y=expected, line_dash="dash", annotation_text="expected ticks/s")
    throughput.add_vrect(x0=window[0], x1=window[1], fillcolor="green", opacity=0.06, line_width=0)
    throughput.update_layout(
        title="Throughput over time (shaded: measurement window)",
        xaxis={"title": "seconds since start"},
        yaxis={"title": "per second", "rangemode": "tozero"},
    )

    connections = go.Figure()
    connections.add_scatter(x=tl["second"], y=tl["open"], name="open", mode="lines")
    connections.add_scatter(x=tl["second"], y=tl["failed"], name="failed (total)", mode="lines")
    connections.add_scatter(
        x=tl["second"], y=tl["closed_early"], name="closed early (total)", mode="lines"
    )
    connections.add_vrect(x0=window[0], x1=window[1], fillcolor="green", opacity=0.06, line_width=0)
    connections.update_layout(
        title="Connections over time",
        xaxis={"title": "seconds since start"},
        yaxis={"title": "connections", "rangemode": "tozero"},
    )
    for fig in (latency, throughput, connections):
        fig.update_layout(template="plotly_white", height=420, margin={"t": 60})
    return [latency, throughput, connections]


def render_html(report: dict[str, Any]) -> str:
    """One self-contained page: summary table, three charts, plotly.js inline."""
    charts = []
    for i, fig in enumerate(_figures(report)):
        charts.append(
            fig.to_html(
                full_html=False,
                # The first chart carries plotly.js inline; the others reuse it.
                include_plotlyjs=(i == 0),
                config={"displaylogo": False, "responsive": True},
            )
        )
    cfg = report["config"]
    rows = [
        ("Target", f"{cfg['url']} (Origin {cfg['origin']})"),
        (
            "Load",
            f"{cfg['clients']:,} clients x {cfg['symbols_per_client']} symbols of "
            f"{len(cfg['symbols'])}, tick rate {cfg['tick_rate']}/s, batch_ms "
            f"{'off' if cfg['batch_ms'] is None else cfg['batch_ms']}, "
            f"mode {cfg.get('mode', 'all')}"
            + (f" (max_rate {cfg['max_rate']}/s)" if cfg.get("max_rate") is not None else "")
            + ", snapshot "
            + ("server default" if cfg.get("snapshot") is None else str(cfg["snapshot"]))
            + ", "
            f"ramp {cfg['ramp']} s, window {cfg['duration']} s, "
            f"{cfg['processes']} client processes",
        ),
        ("Started", report["started_at"]),
    ]
    rows += summary_rows(report)
    verdict = report["thresholds"]
    given = [k for k in verdict if k not in ("violations", "passed")]
    if not given:
        status = "no thresholds given"
    else:
        status = "all thresholds met" if verdict["passed"] else "THRESHOLDS BROKEN"
    table = "\n".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ticker load test {html.escape(report["started_at"])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5rem; }}
th, td {{ text-align: left; padding: .25rem .75rem; border-bottom: 1px solid #ddd;
  vertical-align: top; }}
th {{ white-space: nowrap; }}
.status {{ font-weight: bold; }}
</style>
</head>
<body>
<h1>ticker load test</h1>
<p class="status">{html.escape(status)}</p>
<table>
{table}
</table>
{"".join(charts)}
</body>
</html>
"""
