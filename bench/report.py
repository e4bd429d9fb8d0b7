"""The run's report: markdown tables (parties as rows, each figure with its ratios to the thin
passthrough and to direct), ``results.json`` and a PNG plot of events/s and latency per party."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from .fanout import fanout_tables

__all__ = ["tables", "write_json", "write_plot"]

Row = list[str]


def _n(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    return f"{value:,.0f}"


def _f(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None, base: float | None) -> str:
    return "—" if not value or not base else f"{value / base:.2f}x"


def _md(header: Row, rows: list[Row]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


CLIENT_BOUND_PCT = 90.0


def _rate_cells(by_party: dict[str, Any], key: str) -> tuple[str, str, str, str]:
    r = by_party.get(key)
    if r is None:
        return "—", "—", "—", "—"
    pt = by_party.get("passthrough", {}).get("events_per_s")
    direct = by_party.get("direct", {}).get("events_per_s")
    mark = "" if r["complete"] else " (incomplete!)"
    if r["client_cpu_pct"] >= CLIENT_BOUND_PCT:
        mark += " *"
    return (
        _n(r["events_per_s"]) + mark,
        _f(r["mb_per_s"]),
        _ratio(r["events_per_s"], pt),
        _ratio(r["events_per_s"], direct),
    )


CLIENT_BOUND_NOTE = (
    f"\n\n`*`: the load client was at >= {CLIENT_BOUND_PCT:.0f} % of a core, so this is the "
    "ceiling of client + upstream on this machine, not of the party."
)


def _md_noted(header: Row, rows: list[Row]) -> str:
    marked = any(" *" in cell for row in rows for cell in row)
    return _md(header, rows) + (CLIENT_BOUND_NOTE if marked else "")


def _summary(res: dict[str, Any]) -> str:
    figs, parties = res["figures"], res["parties"]
    one, conc = figs["one_stream"], figs["concurrent"]
    header = ["party"]
    header += [f"1 stream {k} ev/s (xpass, xdirect)" for k in one]
    header += [f"{n} streams ev/s (xpass, xdirect)" for n in conc]
    header += ["latency p50 / p99 ms", "first event p50 / p99 ms"]
    rows = []
    for p in parties:
        row = [p["label"]]
        for by_party in [*one.values(), *conc.values()]:
            ev, _mb, xpt, xdir = _rate_cells(by_party, p["key"])
            row.append(f"{ev} ({xpt}, {xdir})")
        for fig in ("latency", "ttfe"):
            r = figs[fig].get(p["key"])
            row.append(f"{_f(r['p50_ms'], 2)} / {_f(r['p99_ms'], 2)}" if r else "—")
        rows.append(row)
    return _md_noted(header, rows)


def _rates(groups: dict[str, dict[str, Any]], parties: list[dict[str, str]]) -> str:
    """One block of columns per group: ev/s, MB/s, ratios, the proxy's CPU, the client's CPU."""
    header = ["party"]
    for name in groups:
        header += [f"{name} ev/s", "MB/s", "xpass", "xdirect"]
        header += ["proxy CPU %", "proxy CPU s / 1M ev", "client CPU %"]
    rows = []
    for p in parties:
        row = [p["label"]]
        for by_party in groups.values():
            row += list(_rate_cells(by_party, p["key"]))
            r = by_party.get(p["key"], {})
            row.append(_f(r.get("proxy_cpu_pct"), 0))
            row.append(_f(r.get("proxy_cpu_s_per_1m_events"), 2))
            row.append(_f(r.get("client_cpu_pct"), 0))
        rows.append(row)
    return _md_noted(header, rows)


def _percentiles(by_party: dict[str, Any], parties: list[dict[str, str]], extra: bool) -> str:
    header = ["party", "p50 ms", "p99 ms", "max ms", "samples"]
    if extra:
        header += ["p50 - direct ms", "p99 - direct ms", "proxy CPU %"]
    direct = by_party.get("direct")
    rows = []
    for p in parties:
        r = by_party.get(p["key"])
        if r is None:
            continue
        row = [p["label"], _f(r["p50_ms"], 2), _f(r["p99_ms"], 2), _f(r["max_ms"], 2)]
        row.append(str(r["samples"]) + (f" / {r['expected_samples']}" if extra else ""))
        if extra:
            row.append(_f(r["p50_ms"] - direct["p50_ms"], 2) if direct else "—")
            row.append(_f(r["p99_ms"] - direct["p99_ms"], 2) if direct else "—")
            row.append(_f(r.get("proxy_cpu_pct"), 0))
        rows.append(row)
    return _md(header, rows)


def _idle(idle: dict[str, Any]) -> str:
    if "skipped" in idle:
        return f"skipped: {idle['skipped']}"
    header = [
        "streams",
        "RSS before MB",
        "RSS open MB",
        "KB / stream",
        "CPU % at rest",
        "CPU ms in window",
        "pings in window",
        "streams with a ping",
        "open s",
    ]
    row = [
        f"{idle['streams']:,} of {idle['target_streams']:,}",
        _f(idle["rss_before_mb"]),
        _f(idle["rss_open_mb"]),
        _f(idle["rss_per_stream_kb"]),
        _f(idle["cpu_pct_at_rest"], 3),
        _f(idle["cpu_s_in_window"] * 1000, 1),
        f"{idle['pings_in_window']:,}",
        f"{idle['streams_with_ping']:,} of {idle['streams_alive']:,}",
        _f(idle["open_seconds"]),
    ]
    text = _md(header, [row])
    if idle.get("limited_by"):
        text += f"\n\nNot {idle['target_streams']:,}: {idle['limited_by']}."
    return text


def tables(res: dict[str, Any]) -> str:
    if "one_stream" not in res["figures"]:  # --only fanout
        return fanout_tables(res["figures"]["fanout"])
    s, sizes, figs = res["settings"], res["line_bytes"], res["figures"]
    one = ", ".join(f"{s[f'{k}_count']:,} {k} lines of {sizes[k]:,} B" for k in figs["one_stream"])
    conc = ", ".join(f"{n:,} x {c:,}" for n, c in s["concurrent"])
    lat = figs["latency"]
    parts = [
        "Summary (events/s; ratios to the thin passthrough and to direct)",
        _summary(res),
        f"1. One stream, as fast as possible ({one}; median of {s['repeats']})",
        _rates(figs["one_stream"], res["parties"]),
        f"2. Concurrent streams, small lines, aggregate ({conc} lines; timed once all are open)",
        _rates({f"{n} streams": v for n, v in figs["concurrent"].items()}, res["parties"]),
        f"3. Added latency: {s['latency_streams']} streams x {s['latency_rate']:g} ev/s x "
        f"{s['latency_seconds']:g} s, arrival - emit (same clock)",
        _percentiles(lat, res["parties"], extra=True),
        f"4. Time to first event: {s['ttfe_n']} sequential streams, each a new client connection",
        _percentiles(figs["ttfe"], res["parties"], extra=False),
        f"5. Idle capacity: one gateway process, streams silent after one line, heartbeat "
        f"{s['idle_heartbeat']:g} s, CPU over {s['idle_window']:g} s",
        _idle(figs["idle"]),
        f"6. --workers 2 vs 1 ({_workers_line(figs['workers'])})",
    ]
    if res.get("profile"):
        under = ", ".join(
            f"{route} {_n(p['events_per_s_under_cprofile'])} ev/s ({Path(p['pstats']).name})"
            for route, p in res["profile"].items()
        )
        parts.append(f"Profiles (gateway under cProfile, figure 1 small lines): {under}")
    if "fanout" in figs:
        parts.append(fanout_tables(figs["fanout"]))
    return "\n\n".join(parts)


def write_json(res: dict[str, Any], path: Path) -> None:
    path.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))


def write_plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parties = res["parties"]
    labels = [p["label"].replace(" (", "\n(") for p in parties]
    figs = res["figures"]
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    groups = {f"1 stream, {k}": v for k, v in figs["one_stream"].items()}
    groups |= {f"{n} streams": v for n, v in figs["concurrent"].items()}
    width = 0.8 / max(len(groups), 1)
    for i, (name, by_party) in enumerate(groups.items()):
        xs = [j + i * width for j in range(len(parties))]
        ys = [by_party.get(p["key"], {}).get("events_per_s", 0) for p in parties]
        axes[0].bar(xs, ys, width, label=name)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("events/s")
    axes[0].set_title("Throughput")
    axes[0].set_xticks([j + 0.4 - width / 2 for j in range(len(parties))], labels, fontsize=8)
    axes[0].legend(fontsize=8)
    lat = figs["latency"]
    for i, stat in enumerate(("p50_ms", "p99_ms", "max_ms")):
        xs = [j + i * 0.27 for j in range(len(parties))]
        ys = [lat.get(p["key"], {}).get(stat, 0) for p in parties]
        axes[1].bar(xs, ys, 0.27, label=stat.removesuffix("_ms"))
    axes[1].set_yscale("log")
    axes[1].set_ylabel("ms, arrival - emit")
    axes[1].set_title("Latency")
    axes[1].set_xticks([j + 0.27 for j in range(len(parties))], labels, fontsize=8)
    axes[1].legend(fontsize=8)
    for p in parties:
        q = lat.get(p["key"], {}).get("quantiles_ms")
        if q:
            axes[2].plot(q, [100 * i / (len(q) - 1) for i in range(len(q))], label=p["label"])
    axes[2].set_xscale("log")
    axes[2].set_xlabel("ms, arrival - emit")
    axes[2].set_ylabel("percentile")
    axes[2].set_title("Latency distribution")
    axes[2].legend(fontsize=8)
    fig.suptitle(f"ndjson-sse-proxy benchmark ({res['machine']['summary']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _workers_line(workers: dict[str, Any]) -> str:
    return (
        f"{workers['streams']} streams x {workers['lines_per_stream']} small lines, data: line): "
        f"1 worker {_n(workers['one_worker_events_per_s'])} ev/s, "
        f"2 workers {_n(workers['two_workers_events_per_s'])} ev/s, "
        f"ratio {workers['ratio']:.2f}x"
    )
