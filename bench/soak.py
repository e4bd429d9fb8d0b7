"""``python -m bench.soak [--streams 200] [--seconds 60]``: many clients on a real gateway for a
while, with faults and disconnects, and every event checked.

It starts two processes on loopback: the numbered upstream (``bench/soak_upstream.py``) and a real
gateway (``python -m proxy --config <tmp>.yaml --port 0 --log-level warning``), then runs
``--streams`` client tasks here for ``--seconds``. Each client opens one stream after another, each
with a plan it chose at random and sent in the query: how many lines, and maybe one fault at one
line (``bad_json``, ``too_long`` or an upstream ``close``); sometimes it disconnects part-way
(a real socket close) and reconnects, now and then with ``Last-Event-ID``. A client's first stream
stays to the end with a fault chosen by the client's number, so every kind is met in any run.
Because the plan is the client's, each stream's exact events are known in advance:

* a stream that stayed connected must receive exactly ``retry``, every line's number once and in
  order (ids ``1, 2, ...`` or on from ``Last-Event-ID``), one ``error`` event where the plan put a
  fault (``invalid_json`` then on; ``line_too_long`` or ``upstream_closed`` then the end) and
  otherwise the ``end`` event, then the end of the response;
* a stream the client left must have received a prefix of that;
* the gateway's RSS, sampled every 0.5 s, must stay within 10 % of its level at the end of the
  warm-up (the first quarter of the run, at least 2 s);
* once the clients have stopped, the gateway's open descriptors must return to what they were
  before the first client (within 20 s), its ``proxy_open_streams`` must be 0, it must have
  counted every request, and the upstream must have no response still being written.

It prints a summary table and exits 1 on any violation (0 otherwise); ``--json FILE`` writes every
figure. Everything is bounded: each stream's plan fits in the time left, each read has a deadline,
and the children are stopped in a ``finally`` whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import orjson

from proxy.sse import SSEEvent, SSEParser, SSERetry

from .procs import Child
from .upstream import raise_nofile

RATE: Final = 20.0
"""Lines per second on every stream."""
MAX_LINE_BYTES: Final = 1024
RSS_GROWTH_LIMIT: Final = 0.10
FD_SETTLE_S: Final = 20.0
SAMPLE_S: Final = 0.5
FAULTS: Final = (("bad_json", 0.12), ("close", 0.08), ("too_long", 0.05))
DISCONNECT_P: Final = 0.2
RESUME_P: Final = 0.5
ROUTE: Final = "/soak"
MAX_VIOLATIONS_SHOWN: Final = 15

Item = tuple[Any, ...]


@dataclass
class Plan:
    sid: str
    count: int
    fault: str
    at: int
    leave_after: int | None
    """Disconnect after this many items (None: stay to the end)."""
    first_id: int
    """The id of the first data event (1, or on from the Last-Event-ID sent)."""

    def expected(self) -> list[Item]:
        """Every item a client that stays connected receives, in order."""
        items: list[Item] = [("retry", 3000)]
        last_id = ""  # a client's parser starts without an id, whatever Last-Event-ID it sent
        next_id = self.first_id
        for n in range(1, self.count + 1):
            if n == self.at and self.fault == "bad_json":
                items.append(("error", "invalid_json", n, last_id))
                continue
            if n == self.at and self.fault in ("too_long", "close"):
                code = "line_too_long" if self.fault == "too_long" else "upstream_closed"
                items.append(("error", code, None, last_id))
                return items
            last_id = str(next_id)
            next_id += 1
            items.append(("event", str(n), last_id))
        items.append(("end", last_id))
        return items


@dataclass
class Tally:
    sessions: int = 0
    stayed: int = 0
    left: int = 0
    items: int = 0
    data_events: int = 0
    errors_matched: Counter[str] = field(default_factory=Counter)
    faults_planned: Counter[str] = field(default_factory=Counter)
    resumed: int = 0
    violations: list[str] = field(default_factory=list)

    def violation(self, text: str) -> None:
        self.violations.append(text)


def as_item(item: SSEEvent | SSERetry) -> Item:
    if isinstance(item, SSERetry):
        return ("retry", item.milliseconds)
    if item.event == "error":
        try:
            payload = orjson.loads(item.data)
        except orjson.JSONDecodeError:
            return ("error", "data that is not JSON", item.data, item.id)
        return ("error", payload.get("code"), payload.get("line"), item.id)
    if item.event == "end":
        return ("end", item.id)
    return ("event", item.data, item.id)


class Client:
    """One client: streams one after another until the deadline, each checked against its plan."""

    def __init__(self, index: int, base: str, deadline: float, tally: Tally, seed: int) -> None:
        self.index = index
        self.base = base
        self.deadline = deadline
        self.tally = tally
        self.rng = random.Random(seed)
        self.last_id: str | None = None

    def plan(self, number: int, left_s: float) -> Plan | None:
        rng = self.rng
        most = int((left_s - 1.0) * RATE)
        if most < 10:
            return None
        count = rng.randint(10, min(most, 120))
        fault, at = "none", 0
        roll = rng.random()
        for name, p in FAULTS:
            if roll < p:
                fault, at = name, rng.randint(2, count)
                break
            roll -= p
        leave = rng.randint(0, count) if rng.random() < DISCONNECT_P else None
        if number == 0:
            # Each client's first stream stays to the end with a fault chosen by its index, so
            # that even a short run meets every kind of fault (and a clean stream) many times.
            fault = ("none", *(name for name, _ in FAULTS))[self.index % (len(FAULTS) + 1)]
            at, leave = (rng.randint(2, count) if fault != "none" else 0), None
        resume = self.last_id is not None and rng.random() < RESUME_P
        first_id = int(self.last_id) + 1 if resume and self.last_id else 1
        return Plan(f"c{self.index}-{number}", count, fault, at, leave, first_id)

    async def run(self, session: aiohttp.ClientSession) -> None:
        await asyncio.sleep(self.rng.random())  # spread the first requests over a second
        number = 0
        while (plan := self.plan(number, self.deadline - time.monotonic())) is not None:
            number += 1
            await self.stream(session, plan)
            await asyncio.sleep(self.rng.random() * 0.5)

    async def stream(self, session: aiohttp.ClientSession, plan: Plan) -> None:
        tally = self.tally
        tally.sessions += 1
        tally.faults_planned[plan.fault] += 1
        headers = {"Accept": "text/event-stream"}
        if plan.first_id > 1:
            headers["Last-Event-ID"] = str(plan.first_id - 1)
            tally.resumed += 1
        query = {"sid": plan.sid, "count": plan.count, "rate": RATE, "fault": plan.fault}
        query["at"] = plan.at
        expected = plan.expected()
        got: list[Item] = []
        parser = SSEParser()
        timeout = plan.count / RATE + 15
        try:
            async with asyncio.timeout(timeout):
                async with session.get(f"{self.base}{ROUTE}", params=query, headers=headers) as r:
                    if r.status != 200:
                        tally.violation(f"{plan.sid}: HTTP {r.status}: {await r.text()}")
                        return
                    async for chunk in r.content.iter_any():
                        got += [as_item(item) for item in parser.feed(chunk)]
                        if plan.leave_after is not None and len(got) >= plan.leave_after:
                            r.close()  # a real socket close, mid-stream
                            break
        except TimeoutError:
            tally.violation(f"{plan.sid}: no end within {timeout:.0f} s; got {len(got)} items")
            return
        except aiohttp.ClientError as exc:
            tally.violation(f"{plan.sid}: {type(exc).__name__}: {exc}; got {len(got)} items")
            return
        tally.items += len(got)
        tally.data_events += sum(1 for item in got if item[0] == "event")
        left = plan.leave_after is not None and len(got) >= plan.leave_after
        if left:
            tally.left += 1
            if got != expected[: len(got)]:
                tally.violation(_difference(plan, got, expected, "left"))
        else:
            tally.stayed += 1
            if got != expected:
                tally.violation(_difference(plan, got, expected, "stayed"))
            elif parser.in_event:
                tally.violation(f"{plan.sid}: the response ended in the middle of an event")
            else:
                tally.errors_matched.update(item[1] for item in got if item[0] == "error")
        ids = [item[-1] for item in got if item[0] == "event"]
        self.last_id = ids[-1] if ids else self.last_id


def _difference(plan: Plan, got: list[Item], expected: list[Item], how: str) -> str:
    index = next(
        (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
        min(len(got), len(expected)),
    )
    return (
        f"{plan.sid} ({how}, {plan.count} lines, fault {plan.fault} at {plan.at}, first id "
        f"{plan.first_id}): item {index} is {got[index] if index < len(got) else 'missing'}, "
        f"expected {expected[index] if index < len(expected) else 'nothing'} "
        f"({len(got)} items, {len(expected)} expected)"
    )


# -- the run --------------------------------------------------------------------------------------


@dataclass
class Samples:
    times: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)

    def add(self, at: float, rss: int, fds: int) -> None:
        self.times.append(at)
        self.rss.append(rss)
        self.fds.append(fds)


async def sample(child: Child, samples: Samples, started: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(Exception):  # a sample lost to a race is not a finding
            samples.add(time.monotonic() - started, child.rss(), child.num_fds())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_S)


def write_config(path: Path, upstream_port: int) -> None:
    path.write_text(
        f"""server: {{host: 127.0.0.1, port: 0, demo: false, mode: production}}
routes:
  - path: {ROUTE}
    upstream: http://127.0.0.1:{upstream_port}/numbered
    methods: [GET]
    events: {{data: /n, id: sequence, heartbeat: 15, retry: 3000}}
    limits: {{max_line_bytes: {MAX_LINE_BYTES}}}
    timeouts: {{connect: 5, read: 30}}
"""
    )


class OutputDrain:
    """The gateway's stdout after its listening line: read on, so the pipe can never fill."""

    def __init__(self, child: Child) -> None:
        assert child.proc.stdout is not None
        self._fd = child.proc.stdout.fileno()
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = b""
        while data := os.read(self._fd, 1 << 16):
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            self.lines += [line.decode(errors="replace") for line in lines][-200:]


async def _get_text(session: aiohttp.ClientSession, url: str) -> str:
    async with asyncio.timeout(10), session.get(url) as response:
        return await response.text()


async def run_soak(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    children: list[Child] = []
    try:
        upstream = Child("soak-upstream", [sys.executable, "-m", "bench.soak_upstream"], tmp)
        children.append(upstream)
        upstream_port = upstream.wait_listening()
        config = tmp / "soak.yaml"
        write_config(config, upstream_port)
        argv = [sys.executable, "-m", "proxy", "--config", str(config)]
        argv += ["--host", "127.0.0.1", "--port", "0", "--log-level", "warning"]
        gateway = Child("gateway", argv, tmp)
        children.append(gateway)
        port = gateway.wait_listening()
        drain = OutputDrain(gateway)
        return await _drive(args, gateway, f"http://127.0.0.1:{port}", upstream_port, drain)
    finally:
        for child in reversed(children):
            child.stop()


async def _drive(
    args: argparse.Namespace, gateway: Child, base: str, upstream_port: int, drain: OutputDrain
) -> dict[str, Any]:
    tally = Tally()
    samples = Samples()
    rng = random.Random(args.seed)
    warmup = max(2.0, args.seconds / 4)
    await asyncio.sleep(0.5)  # let start-up allocations settle
    rss_start, fds_before = gateway.rss(), gateway.num_fds()
    started = time.monotonic()
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample(gateway, samples, started, stop))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        clients = [
            Client(i, base, started + args.seconds, tally, rng.randrange(1 << 30))
            for i in range(args.streams)
        ]
        tasks = [asyncio.create_task(client.run(session)) for client in clients]
        done, pending = await asyncio.wait(tasks, timeout=args.seconds + 30)
        for task in pending:
            task.cancel()
        if pending:
            tally.violation(f"{len(pending)} clients still running 30 s after the end")
        for task in done:
            if task.exception() is not None:
                tally.violation(f"a client failed: {task.exception()!r}")
    stop.set()
    await sampler
    load_s = time.monotonic() - started
    # The clients are gone (their session closed every socket): the gateway must let go too.
    fds_after, settle = gateway.num_fds(), time.monotonic()
    while fds_after > fds_before and time.monotonic() - settle < FD_SETTLE_S:
        await asyncio.sleep(0.25)
        fds_after = gateway.num_fds()
    fd_settle_s = time.monotonic() - settle
    if fds_after > fds_before:
        tally.violation(
            f"gateway descriptors: {fds_after} after the clients stopped, {fds_before} before "
            f"(waited {FD_SETTLE_S:.0f} s)"
        )
    metrics, upstream_stats = "", {}
    async with aiohttp.ClientSession() as session:
        try:
            metrics = await _get_text(session, f"{base}/metrics")
            upstream_stats = orjson.loads(
                await _get_text(session, f"http://127.0.0.1:{upstream_port}/stats")
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.violation(f"after the run, a GET of /metrics or /stats failed: {exc!r}")
    ended, open_streams = _metrics(metrics)
    if open_streams != 0:
        tally.violation(f"proxy_open_streams is {open_streams} after the clients stopped")
    if sum(ended.values()) != tally.sessions:
        tally.violation(f"the gateway counted {ended} streams, the clients made {tally.sessions}")
    if upstream_stats.get("open", 0) != 0:
        tally.violation(f"the upstream is still writing {upstream_stats['open']} responses")
    rss = _rss_figures(samples, warmup, rss_start)
    if rss["growth"] >= RSS_GROWTH_LIMIT:
        tally.violation(
            f"gateway RSS grew {rss['growth']:.1%} after the warm-up "
            f"({rss['warm_mb']:.1f} MB -> peak {rss['peak_mb']:.1f} MB)"
        )
    noisy = [line for line in drain.lines if '"level":"error"' in line or "Traceback" in line]
    log_errors = [line for line in gateway.log_tail(1 << 20).splitlines() if "Traceback" in line]
    if noisy or log_errors:
        tally.violation(f"the gateway logged errors: {(noisy + log_errors)[:3]}")
    return {
        "streams": args.streams,
        "seconds": args.seconds,
        "seed": args.seed,
        "load_s": round(load_s, 1),
        "tally": {
            **{name: value for name, value in vars(tally).items() if name != "violations"},
            "errors_matched": dict(tally.errors_matched),
            "faults_planned": dict(tally.faults_planned),
            "violations": len(tally.violations),
        },
        "violations": tally.violations,
        "rss": rss,
        "fds": {
            "before": fds_before,
            "peak": max(samples.fds, default=fds_before),
            "after": fds_after,
            "settle_s": round(fd_settle_s, 2),
        },
        "gateway_streams_ended": ended,
        "upstream": upstream_stats,
    }


def _metrics(text: str) -> tuple[dict[str, int], int]:
    """The route's finished streams by how they ended, and its open streams now."""
    ended: Counter[str] = Counter()
    for labels, value in re.findall(r"^proxy_streams_total\{(.*)\} (\S+)$", text, re.M):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if fields.get("route") == ROUTE:
            ended[fields.get("ended", "?")] += int(float(value))
    found = re.search(rf'^proxy_open_streams\{{route="{ROUTE}"\}} (\S+)$', text, re.M)
    return dict(ended), int(float(found.group(1))) if found else -1


def _rss_figures(samples: Samples, warmup: float, start: int) -> dict[str, float]:
    mb = 1 << 20
    warm = [rss for at, rss in zip(samples.times, samples.rss, strict=True) if at <= warmup]
    after = [rss for at, rss in zip(samples.times, samples.rss, strict=True) if at > warmup]
    warm_level = max(warm, default=start)
    peak = max(after, default=warm_level)
    return {
        "start_mb": round(start / mb, 1),
        "warm_mb": round(warm_level / mb, 1),
        "peak_mb": round(peak / mb, 1),
        "end_mb": round((samples.rss[-1] if samples.rss else start) / mb, 1),
        "growth": round(peak / warm_level - 1, 4),
        "warmup_s": warmup,
        "samples": len(samples.rss),
    }


def summary(result: dict[str, Any]) -> str:
    tally, rss, fds = result["tally"], result["rss"], result["fds"]
    faults = tally["faults_planned"]
    errors = tally["errors_matched"]
    rows = [
        (
            "streams x seconds",
            f"{result['streams']} x {result['seconds']} s (seed {result['seed']})",
        ),
        ("sessions (stayed / left)", f"{tally['sessions']} ({tally['stayed']} / {tally['left']})"),
        ("sessions resumed with Last-Event-ID", str(tally["resumed"])),
        ("items received / data events", f"{tally['items']:,} / {tally['data_events']:,}"),
        (
            "faults planned (bad_json / too_long / close)",
            f"{faults.get('bad_json', 0)} / {faults.get('too_long', 0)} / {faults.get('close', 0)}",
        ),
        (
            "error events matched (invalid_json / line_too_long / upstream_closed)",
            f"{errors.get('invalid_json', 0)} / {errors.get('line_too_long', 0)} / "
            f"{errors.get('upstream_closed', 0)}",
        ),
        ("gateway RSS MB: start / after warm-up / peak / end", _rss_row(rss)),
        ("RSS growth after warm-up (limit 10 %)", f"{rss['growth']:.1%}"),
        ("gateway fds: before / peak / after", f"{fds['before']} / {fds['peak']} / {fds['after']}"),
        ("gateway's streams by end (/metrics)", _ended_row(result["gateway_streams_ended"])),
        ("upstream: streams / lines / still open", _upstream_row(result["upstream"])),
        ("violations", str(tally["violations"])),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'soak'.ljust(width)} | figure |", f"|{'-' * (width + 2)}|--------|"]
    lines += [f"| {name.ljust(width)} | {value} |" for name, value in rows]
    shown = result["violations"][:MAX_VIOLATIONS_SHOWN]
    lines += [f"violation: {text}" for text in shown]
    if len(result["violations"]) > len(shown):
        lines.append(f"... and {len(result['violations']) - len(shown)} more")
    lines.append("soak: ok" if not result["violations"] else "soak: FAILED")
    return "\n".join(lines)


def _rss_row(rss: dict[str, float]) -> str:
    return f"{rss['start_mb']} / {rss['warm_mb']} / {rss['peak_mb']} / {rss['end_mb']}"


def _ended_row(ended: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(ended.items())) or "none"


def _upstream_row(stats: dict[str, Any]) -> str:
    return f"{stats.get('streams', 0)} / {stats.get('lines', 0):,} / {stats.get('open', 0)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--streams", type=int, default=200, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long they run")
    parser.add_argument("--seed", type=int, default=None, help="for a run that can be repeated")
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument(
        "--logs", type=Path, default=None, help="keep the config and the children's logs here"
    )
    args = parser.parse_args(argv)
    if args.streams < 1 or not 3 <= args.seconds <= 3600:
        parser.error("--streams must be at least 1 and --seconds between 3 and 3600")
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    raise_nofile()
    print(f"soak: {args.streams} streams for {args.seconds:g} s on loopback ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        try:
            result = asyncio.run(run_soak(args, logs))
        except Exception as exc:  # a child that did not start: say which, and fail
            print(f"soak: FAILED: {type(exc).__name__}: {exc}", flush=True)
            return 1
    print(summary(result), flush=True)
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
