"""The figures: each sends jobs to the load client and samples the proxy's (and the upstream's)
CPU around them. Every party is measured against the same upstream in the same run.

A party is whatever sits between the client and the upstream: nothing (``direct``), the thin
aiohttp passthrough, nginx, or the gateway in one of its two modes. Its events are counted by their
terminators; an SSE party's stream also holds a ``retry:`` block and the ``end`` event, which are
not events of the upstream and are taken off.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import psutil

from .procs import Child, Client

SSE_BLOCKS_PER_STREAM = 2  # retry: 3000, and event: end


@dataclass
class Party:
    key: str
    label: str
    url: str  # the stream endpoint, without a query
    sse: bool
    proxy: Child | None  # None for direct

    def stream_url(self, **params: Any) -> str:
        return f"{self.url}?{urlencode(params)}"

    @property
    def overhead(self) -> int:
        return SSE_BLOCKS_PER_STREAM if self.sse else 0


@dataclass
class Settings:
    quick: bool
    small_count: int
    large_count: int
    repeats: int
    concurrent: list[tuple[int, int]]  # (streams, lines per stream)
    latency_streams: int
    latency_rate: float
    latency_seconds: float
    ttfe_n: int
    idle_n: int
    idle_heartbeat: float
    idle_window: float


FULL = Settings(
    quick=False,
    small_count=1_000_000,
    large_count=100_000,
    repeats=5,
    concurrent=[(100, 10_000), (1_000, 1_000)],
    latency_streams=100,
    latency_rate=20,
    latency_seconds=5,
    ttfe_n=500,
    idle_n=10_000,
    idle_heartbeat=30,  # longer than opening 10,000 streams takes, so the CPU window is quiet
    idle_window=5,
)
QUICK = Settings(
    quick=True,
    small_count=20_000,
    large_count=2_000,
    repeats=1,
    concurrent=[(100, 200)],
    latency_streams=10,
    latency_rate=20,
    latency_seconds=1,
    ttfe_n=10,
    idle_n=20,
    idle_heartbeat=1,
    idle_window=1,
)

_gate_ids = itertools.count(1)


class Bench:
    def __init__(self, client: Client, upstream: Child, settings: Settings) -> None:
        self.client = client
        self.upstream = upstream
        self.settings = settings

    def _cpu(self, party: Party) -> tuple[float, float]:
        return (party.proxy.cpu_s() if party.proxy else 0.0), self.upstream.cpu_s()

    def streams(
        self, party: Party, n: int, params: dict[str, Any], *, gated: bool = False
    ) -> dict[str, Any]:
        """n concurrent streams through ``party``, read to the end, with their costs."""
        if gated:
            params = {**params, "gate": f"g{next(_gate_ids)}", "gate_n": n}
        expected = n * int(params["count"])
        proxy0, upstream0 = self._cpu(party)
        job = {"type": "stream", "url": party.stream_url(**params), "n": n, "sse": party.sse}
        res = self.client.run({**job, "gated": gated}, timeout=300)
        proxy1, upstream1 = self._cpu(party)
        if "terminators" not in res:
            raise RuntimeError(f"{party.label}: {res}")
        events = res["terminators"] - party.overhead * res["streams_ok"]
        seconds = res["seconds"]
        out = {
            "streams": n,
            "events": events,
            "expected_events": expected,
            "complete": events == expected and not res["error_count"],
            "errors": res["errors"],
            "bytes": res["bytes"],
            "seconds": seconds,
            "events_per_s": events / seconds,
            "mb_per_s": res["bytes"] / seconds / 1e6,
            "client_cpu_s": res["client_cpu_s"],
            "client_cpu_pct": 100 * res["client_cpu_s"] / res["client_wall_s"],
            "upstream_cpu_s": upstream1 - upstream0,
        }
        if party.proxy:
            out["proxy_cpu_s"] = proxy1 - proxy0
            out["proxy_cpu_pct"] = 100 * (proxy1 - proxy0) / res["client_wall_s"]
            out["proxy_cpu_s_per_1m_events"] = (proxy1 - proxy0) / max(events, 1) * 1e6
        return out

    def one_stream(self, party: Party, kind: str, count: int) -> dict[str, Any]:
        """Figure 1: one stream as fast as possible; the median of the repeats by events/s."""
        params = {"kind": kind, "count": count}
        runs = [self.streams(party, 1, params) for _ in range(max(1, self.settings.repeats))]
        runs.sort(key=lambda r: r["events_per_s"])
        best = dict(runs[len(runs) // 2])
        best["runs_events_per_s"] = [r["events_per_s"] for r in runs]
        best["complete"] = all(r["complete"] for r in runs)
        return best

    def concurrent(self, party: Party, n: int, per_stream: int) -> dict[str, Any]:
        """Figure 2: n streams at once, timed from the moment all of them are open."""
        return self.streams(party, n, {"kind": "small", "count": per_stream}, gated=True)

    def latency(self, party: Party) -> dict[str, Any]:
        """Figure 3: paced, timestamped events; arrival minus emit time, same host clock."""
        s = self.settings
        count = int(s.latency_rate * s.latency_seconds)
        period = 1 / s.latency_rate
        urls = [
            party.stream_url(
                kind="small", count=count, rate=s.latency_rate, phase=period * i / s.latency_streams
            )
            for i in range(s.latency_streams)
        ]
        proxy0, _ = self._cpu(party)
        job = {"type": "latency", "urls": urls, "sse": party.sse}
        res = self.client.run(job, timeout=s.latency_seconds + 60)
        proxy1, _ = self._cpu(party)
        q = res.get("quantiles_ms") or []
        if not q:
            raise RuntimeError(f"{party.label}: no latency samples: {res}")
        return {
            "samples": res["samples"],
            "expected_samples": count * s.latency_streams,
            "errors": res["errors"],
            "p50_ms": q[100],
            "p99_ms": q[198],
            "max_ms": q[-1],
            "quantiles_ms": q,
            "client_cpu_pct": 100 * res["client_cpu_s"] / res["client_wall_s"],
            "proxy_cpu_pct": 100 * (proxy1 - proxy0) / res["client_wall_s"]
            if party.proxy
            else None,
        }

    def ttfe(self, party: Party) -> dict[str, Any]:
        """Figure 4: sequential new client connections, time to the first data event."""
        url = party.stream_url(kind="small", count=1)
        job = {"type": "ttfe", "url": url, "n": self.settings.ttfe_n, "sse": party.sse}
        res = self.client.run(job, timeout=120)
        q = res.get("quantiles_ms") or []
        if not q:
            raise RuntimeError(f"{party.label}: no time-to-first-event samples: {res}")
        return {
            "samples": res["samples"],
            "errors": res["errors"],
            "p50_ms": q[100],
            "p99_ms": q[198],
            "max_ms": q[-1],
        }

    def idle(self, gateway: Child, target: int) -> dict[str, Any]:
        """Figure 5: streams held open through a fresh gateway: RSS per stream, CPU at rest."""
        s = self.settings
        url = f"http://127.0.0.1:{gateway.port}/idle"
        warm_job = {"type": "stream", "url": f"{url}?kind=small&count=1", "n": 1, "sse": True}
        warm = self.client.run(warm_job, timeout=30)
        if warm.get("streams_ok") != 1:
            raise RuntimeError(f"idle warm-up failed: {warm}")
        time.sleep(0.5)
        rss0, fds0 = gateway.rss(), gateway.num_fds()
        nofile = psutil.Process(gateway.proc.pid).rlimit(psutil.RLIMIT_NOFILE)[0]
        # Each stream holds two descriptors in the gateway: the client's socket and the upstream's.
        fits = (nofile - fds0 - 64) // 2
        n = min(target, fits)
        limited_by = (
            f"RLIMIT_NOFILE is {nofile} (the hard limit, which this user cannot raise) and each "
            f"stream holds 2 descriptors in the gateway, so at most {fits} streams fit"
            if n < target
            else None
        )
        hold = 60 + s.idle_heartbeat * 3 + s.idle_window
        open_job = {"type": "idle_open", "url": f"{url}?kind=small&count=1&hold={hold}", "n": n}
        opened = self.client.run({**open_job, "sse": True}, timeout=240)
        try:
            time.sleep(1.0)
            rss1 = gateway.rss()
            pings0 = self.client.run({"type": "idle_stats"}, timeout=30)["pings"]
            cpu0, t0 = gateway.cpu_s(), time.monotonic()
            time.sleep(s.idle_window)
            cpu1, t1 = gateway.cpu_s(), time.monotonic()
            pings1 = self.client.run({"type": "idle_stats"}, timeout=30)["pings"]
            deadline = time.monotonic() + s.idle_heartbeat + 5
            stats = self.client.run({"type": "idle_stats"}, timeout=30)
            while stats["streams_with_ping"] < stats["alive"] and time.monotonic() < deadline:
                time.sleep(0.5)
                stats = self.client.run({"type": "idle_stats"}, timeout=30)
            rss2 = gateway.rss()
        finally:
            self.client.run({"type": "idle_close"}, timeout=60)
        return {
            "target_streams": target,
            "streams": opened["opened"],
            "limited_by": limited_by,
            "open_errors": opened["errors"],
            "open_seconds": opened["seconds"],
            "rss_before_mb": rss0 / 1e6,
            "rss_open_mb": rss1 / 1e6,
            "rss_after_heartbeats_mb": rss2 / 1e6,
            "rss_per_stream_kb": (rss1 - rss0) / max(opened["opened"], 1) / 1e3,
            "cpu_window_s": t1 - t0,
            "cpu_s_in_window": cpu1 - cpu0,
            "cpu_pct_at_rest": 100 * (cpu1 - cpu0) / (t1 - t0),
            "pings_in_window": pings1 - pings0,
            "heartbeat_s": s.idle_heartbeat,
            "streams_alive": stats["alive"],
            "streams_with_ping": stats["streams_with_ping"],
        }
