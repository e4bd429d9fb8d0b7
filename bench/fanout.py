"""Figure 7, fan-out: one upstream stream at 20 events/s read by N readers through ONE gateway
process, each reader a real SSE connection making the same request, against the same readers
each with its own upstream request.

Routes (one config, a fresh gateway process per case, so that RSS before and after is the
readers' alone): ``/shared`` has ``resume: {store: memory}`` and ``streams: {share: true}``, so
equal requests read one upstream request; ``/own`` is the same without ``share`` (every reader
its own upstream request, producer and tail: the same machinery, not shared); ``/plain`` has no
resume at all (the plain relay).

Strategy: the readers are spread over several processes (bench/fanout_client.py) that open their
connections, then measure one window together: every event the upstream emitted in the window
(its content carries ``tok@<time_ns>``) counts with its latency, arrival minus emit on the same
host clock, however late it comes (each reader waits until it has read past the window). A
reader that joins a shared stream first gets the events the store still holds; those are before
the window and not counted.
"""

from __future__ import annotations

import math
import pstats
import time
import urllib.request
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode

import orjson
import psutil

from .procs import Child, Client

if TYPE_CHECKING:
    from collections.abc import Callable

    from .run import Run

__all__ = ["FANOUT_FULL", "FANOUT_QUICK", "FanoutSettings", "fanout", "fanout_tables"]

ROUTES: Final = {
    "share": ("/shared", "shared (resume + share)"),
    "own": ("/own", "own upstream (resume, no share)"),
    "plain": ("/plain", "own upstream (no resume)"),
}
LINGER_S: Final = 2.0
STREAM_S: Final = 900
"""How long the upstream's paced stream would last: longer than any case; readers close it."""


@dataclass(frozen=True)
class FanoutSettings:
    cases: list[tuple[str, int]]  # (route, readers), in the order they run
    clients: int  # reader processes; every case spreads its readers over all of them
    rate: float
    window_s: float
    settle_s: float  # after the last reader has its first event, before the window
    catch_up_s: float  # how long after the window a reader may still be behind
    goal_readers: int
    goal_p99_ms: float


FANOUT_FULL = FanoutSettings(
    cases=[("own", 1000), ("plain", 1000), ("share", 1000), ("share", 5000)],
    clients=4,
    rate=20,
    window_s=10,
    settle_s=2,
    catch_up_s=30,
    goal_readers=5000,
    goal_p99_ms=100,
)
FANOUT_QUICK = FanoutSettings(
    cases=[("own", 100), ("share", 100)],
    clients=2,
    rate=20,
    window_s=2,
    settle_s=0.5,
    catch_up_s=10,
    goal_readers=5000,
    goal_p99_ms=100,
)


def fanout_config(path: Path, upstream_port: int) -> None:
    upstream = f"http://127.0.0.1:{upstream_port}/stream"
    resume = f"{{store: memory, linger: {LINGER_S}}}"
    path.write_text(
        f"""server: {{host: 127.0.0.1, port: 0, demo: false}}
routes:
  - path: {ROUTES["share"][0]}
    upstream: {upstream}
    events: {{data: line}}
    resume: {resume}
    streams: {{share: true}}
  - path: {ROUTES["own"][0]}
    upstream: {upstream}
    events: {{data: line}}
    resume: {resume}
  - path: {ROUTES["plain"][0]}
    upstream: {upstream}
    events: {{data: line}}
"""
    )


def _upstream_stats(upstream: Child) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{upstream.port}/stats", timeout=10) as r:
        stats: dict[str, int] = orjson.loads(r.read())
    return stats


def _wait_upstream_idle(upstream: Child, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while (open_now := _upstream_stats(upstream)["open"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return open_now


def _sleep_until_ns(when: int) -> None:
    time.sleep(max(0.0, (when - time.time_ns()) / 1e9))


def _quantiles(histogram: dict[int, int], bin_ns: int) -> dict[str, float]:
    """p50, p99, p99.9 and max in ms, each the middle of its 10 us bin."""
    total = sum(histogram.values())
    if not total:
        return {}
    keys = sorted(histogram)
    out: dict[str, float] = {"max_ms": (keys[-1] + 1) * bin_ns / 1e6}
    wanted = [("p50_ms", 0.50), ("p99_ms", 0.99), ("p999_ms", 0.999)]
    seen, i = 0, 0
    for key in keys:
        seen += histogram[key]
        while i < len(wanted) and seen >= math.ceil(wanted[i][1] * total):
            out[wanted[i][0]] = (key + 0.5) * bin_ns / 1e6
            i += 1
    return out


def _busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores), to tell what others took."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def _split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


class Fanout:
    def __init__(
        self,
        run: Run,
        upstream: Child,
        settings: FanoutSettings,
        log: Callable[[str], None],
        profile_dir: Path | None = None,
    ) -> None:
        self.run = run
        self.profile_dir = profile_dir
        self.upstream = upstream
        self.settings = settings
        self.log = log
        self.config = run.tmp / "fanout.yaml"
        fanout_config(self.config, upstream.port)
        self.clients: list[Client] = []

    def measure(self) -> dict[str, Any]:
        for i in range(self.settings.clients):
            client = Client(self.run.tmp, "bench.fanout_client", f"fanout-client-{i}")
            self.run.start(client)
            client.wait_ready()
            self.clients.append(client)
        cases = []
        try:
            for route, n in self.settings.cases:
                cases.append(self.case(route, n))
            profile = self.profile() if self.profile_dir else None
        finally:
            for client in self.clients:
                self.run.stop(client)
        return {"settings": vars(self.settings), "cases": cases, "profile": profile}

    def profile(self) -> dict[str, Any]:
        """The goal's case again, its gateway under cProfile (which slows it: the figures of
        this case are not the gateway's, only where its time goes)."""
        assert self.profile_dir is not None
        path = self.profile_dir / "gateway-fanout.pstats"
        measured = self.case("share", self.settings.goal_readers, profile_to=path)
        text = StringIO()
        stats = pstats.Stats(str(path), stream=text).strip_dirs()
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(30)
        (self.profile_dir / "gateway-fanout-profile.txt").write_text(text.getvalue())
        self.log(f"profile fan-out: {path} and gateway-fanout-profile.txt")
        return {"pstats": str(path), "under_cprofile": measured}

    def _all(self, job: dict[str, Any], timeout: float) -> list[Any]:
        """One job to every reader process at once; their answers."""
        for client in self.clients:
            client.send(job, timeout)
        return [client.receive() for client in self.clients]

    def case(self, route: str, n: int, profile_to: Path | None = None) -> dict[str, Any]:
        s = self.settings
        path, label = ROUTES[route]
        name = f"gateway-fanout-{route}-{n}" + ("-profiled" if profile_to else "")
        gateway = self.run.gateway(name, 0, profile_to=profile_to, config=self.config)
        base = f"http://127.0.0.1:{gateway.port}{path}"
        try:
            with urllib.request.urlopen(f"{base}?kind=small&count=2", timeout=10) as r:
                r.read()  # warm-up: imports, the upstream connection pool
            time.sleep(0.5)
            rss0, stats0 = gateway.rss(), _upstream_stats(self.upstream)
            query = urlencode({"kind": "small", "count": int(s.rate * STREAM_S), "rate": s.rate})
            job = {"type": "open", "host": "127.0.0.1", "port": gateway.port}
            for client, size in zip(self.clients, _split(n, len(self.clients)), strict=True):
                client.send({**job, "path": f"{path}?{query}", "n": size}, 300)
            opened = [client.receive() for client in self.clients]
            open_errors = [e for o in opened for e in o.get("errors", [o.get("error")])]
            n_open = sum(o.get("opened", 0) for o in opened)
            time.sleep(s.settle_s)
            rss1 = gateway.rss()
            t0 = time.time_ns() + 200_000_000
            t1 = t0 + int(s.window_s * 1e9)
            window = {"type": "window", "t0_ns": t0, "t1_ns": t1, "catch_up_s": s.catch_up_s}
            for client in self.clients:
                client.send(window, s.window_s + s.catch_up_s + 30)
            _sleep_until_ns(t0)
            g0, u0, b0 = gateway.cpu_s(), self.upstream.cpu_s(), _busy_s()
            _sleep_until_ns(t1)
            g1, u1, b1 = gateway.cpu_s(), self.upstream.cpu_s(), _busy_s()
            results = [client.receive() for client in self.clients]
            stats1 = _upstream_stats(self.upstream)
        finally:
            self._all({"type": "close"}, 60)
            self.run.stop(gateway)
        still_open = _wait_upstream_idle(self.upstream)
        failed = [r["error"] for r in results if "error" in r]
        if failed:
            raise RuntimeError(f"fan-out {route} {n}: {failed}")
        histogram: dict[int, int] = {}
        for r in results:
            for key, count in r["histogram"]:
                histogram[key] = histogram.get(key, 0) + count
        samples = sum(histogram.values())
        arrived = sum(r["arrived"] for r in results)
        client_cpu = [100 * r["cpu_s"] / s.window_s for r in results]
        out = {
            "route": route,
            "label": label,
            "readers": n,
            "opened": n_open,
            "open_errors": open_errors[:5],
            "open_s": max(o.get("seconds", 0) for o in opened),
            "upstream_requests": stats1["requests"] - stats0["requests"],
            "upstream_streams_left_open": still_open,
            "events_per_s": arrived / s.window_s,
            "expected_events_per_s": n * s.rate,
            "samples": samples,
            "expected_samples": round(n * s.rate * s.window_s),
            **_quantiles(histogram, results[0]["bin_ns"]),
            "readers_behind": sum(r["behind"] for r in results),
            "readers_lost": sum(r["lost"] for r in results),
            "gateway_cpu_pct": 100 * (g1 - g0) / s.window_s,
            "gateway_cpu_us_per_event": (g1 - g0) / max(arrived, 1) * 1e6,
            "upstream_cpu_pct": 100 * (u1 - u0) / s.window_s,
            "rss_before_mb": rss0 / 1e6,
            "rss_open_mb": rss1 / 1e6,
            "rss_per_reader_kb": (rss1 - rss0) / max(n_open, 1) / 1e3,
            "client_processes": len(self.clients),
            "client_cpu_pct_each": client_cpu,
            # The machine's busy CPU in the window less the gateway's, the upstream's and the
            # readers': other processes on this host, which the gateway shared its cores with.
            "other_cpu_pct": 100 * (b1 - b0 - (g1 - g0) - (u1 - u0)) / s.window_s - sum(client_cpu),
            "loadavg_1m": psutil.getloadavg()[0],
        }
        out["complete"] = n_open == n and not out["readers_behind"] and not out["readers_lost"]
        self.log(
            f"7. fan-out {label:34} {n:>5} readers {out['events_per_s']:>9,.0f} ev/s "
            f"p50 {out.get('p50_ms', math.nan):.1f} ms p99 {out.get('p99_ms', math.nan):.1f} ms "
            f"gateway CPU {out['gateway_cpu_pct']:.0f} % upstream requests "
            f"{out['upstream_requests']}"
        )
        return out


def fanout(
    run: Run,
    upstream: Child,
    settings: FanoutSettings,
    log: Callable[[str], None],
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Figure 7; with ``profile_dir``, also the goal's case through a gateway under cProfile."""
    return Fanout(run, upstream, settings, log, profile_dir).measure()


def _f(value: float | None, digits: int = 1) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _md(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _ratios(cases: list[dict[str, Any]]) -> list[list[str]]:
    """Shared vs own upstream (resume, no share), per reader, for every N both were run at."""
    rows = []
    own = {c["readers"]: c for c in cases if c["route"] == "own"}
    for shared in (c for c in cases if c["route"] == "share"):
        base = own.get(shared["readers"])
        if base is None:
            continue

        def x(key: str, shared: dict[str, Any] = shared, base: dict[str, Any] = base) -> str:
            a, b = shared.get(key), base.get(key)
            return "—" if not a or not b else f"{a / b:.2f}x"

        rows.append(
            [
                f"{shared['readers']:,}",
                x("events_per_s"),
                x("p50_ms"),
                x("p99_ms"),
                x("gateway_cpu_us_per_event"),
                x("rss_per_reader_kb"),
                f"{shared['upstream_requests']} vs {base['upstream_requests']:,}",
            ]
        )
    return rows


def fanout_tables(fig: dict[str, Any]) -> str:
    s, cases = fig["settings"], fig["cases"]
    header = [
        "readers",
        "route",
        "upstream requests",
        "delivered ev/s (of)",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "gateway CPU %",
        "gateway CPU us / ev",
        "RSS KB / reader",
        "upstream CPU %",
        "client CPU % (each process)",
        "other CPU %",
        "open s",
        "behind / lost",
    ]
    rows = []
    for c in cases:
        mark = "" if c["complete"] else " (incomplete!)"
        rows.append(
            [
                f"{c['opened']:,} of {c['readers']:,}",
                c["label"],
                f"{c['upstream_requests']:,}",
                f"{c['events_per_s']:,.0f} ({c['expected_events_per_s']:,.0f}){mark}",
                _f(c.get("p50_ms"), 2),
                _f(c.get("p99_ms"), 2),
                _f(c.get("p999_ms"), 2),
                _f(c.get("max_ms"), 1),
                _f(c["gateway_cpu_pct"], 0),
                _f(c["gateway_cpu_us_per_event"], 1),
                _f(c["rss_per_reader_kb"], 1),
                _f(c["upstream_cpu_pct"], 0),
                " / ".join(f"{p:.0f}" for p in c["client_cpu_pct_each"]),
                _f(c.get("other_cpu_pct"), 0),
                _f(c["open_s"], 1),
                f"{c['readers_behind']} / {c['readers_lost']}",
            ]
        )
    parts = [
        f"7. Fan-out: one gateway process, one upstream stream at {s['rate']:g} ev/s, N readers "
        f"(the same request each) over {s['clients']} reader processes; a {s['window_s']:g} s "
        "window after all are connected; latency = arrival - upstream emit (same clock); "
        "other CPU: the rest of the host in the window (of 200 %)",
        _md(header, rows),
    ]
    if ratios := _ratios(cases):
        parts.append("Shared vs own upstream (resume, no share), per reader (shared / own)")
        parts.append(
            _md(
                [
                    "readers",
                    "delivered ev/s",
                    "p50",
                    "p99",
                    "gateway CPU / ev",
                    "RSS / reader",
                    "upstream requests",
                ],
                ratios,
            )
        )
    goal = [c for c in cases if c["route"] == "share" and c["readers"] == s["goal_readers"]]
    if goal:
        p99 = goal[0].get("p99_ms", math.inf)
        verdict = "met" if p99 < s["goal_p99_ms"] and goal[0]["complete"] else "MISSED"
        parts.append(
            f"Goal ({s['goal_readers']:,} readers of one stream, p99 < {s['goal_p99_ms']:g} ms): "
            f"{verdict} (p99 {_f(p99, 1)} ms)"
        )
    return "\n\n".join(parts)
