"""``python -m bench [--quick] [--out DIR] [--profile]``: start every party, run the figures, print
the tables, write ``results.json`` and ``results.png``.

Every child process runs in its own process group and is stopped in a ``finally``, whatever
happens (an error, Ctrl-C or SIGTERM), so a failed run leaves nothing behind.
"""

from __future__ import annotations

import argparse
import platform
import pstats
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from io import StringIO
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import psutil

from . import procs
from .fanout import FANOUT_FULL, FANOUT_QUICK, fanout
from .figures import FULL, QUICK, Bench, Party, Settings
from .procs import Child, Client
from .report import tables, write_json, write_plot
from .upstream import LINE_KINDS, make_line, raise_nofile


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "nproc": psutil.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
    }
    info["summary"] = f"{info['nproc']} x {model}, Python {info['python']}"
    return info


class Run:
    """The children of one run; ``stop_all`` in a ``finally``."""

    def __init__(
        self, settings: Settings, tmp: Path, log: Callable[[str], None], loop: str = "asyncio"
    ) -> None:
        self.settings = settings
        self.tmp = tmp
        self.log = log
        self.loop = loop
        self.children: list[Child] = []

    def start(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def stop(self, child: Child | None) -> None:
        if child is not None and child in self.children:
            self.children.remove(child)
            child.stop()

    def stop_all(self) -> None:
        while self.children:
            self.children.pop().stop()

    def python(self, name: str, module: str, *args: str) -> Child:
        child = self.start(Child(name, [sys.executable, "-m", module, *args], self.tmp))
        child.wait_listening()
        return child

    def gateway(
        self,
        name: str,
        upstream_port: int,
        profile_to: Path | None = None,
        extra: Sequence[str] = (),
        config: Path | None = None,
    ) -> Child:
        """A gateway process; its config is the bench's usual routes unless ``config`` is given."""
        if config is None:
            config = self.tmp / f"{name}.yaml"
            procs.gateway_config(config, upstream_port, self.settings.idle_heartbeat)
        prefix = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
        argv = [sys.executable, *prefix, "-m", "proxy", "--config", str(config)]
        # Only the listening line is read from the child's stdout pipe: a line per stream there
        # would fill the pipe and block the gateway. Warnings and errors still go to its log.
        argv += ["--loop", self.loop, "--log-level", "warning", *extra]
        child = self.start(Child(name, [*argv, "--host", "127.0.0.1", "--port", "0"], self.tmp))
        child.wait_listening()
        return child

    def nginx(self, upstream_port: int, nofile: int) -> Child | None:
        binary = procs.find_nginx()
        if binary is None:
            self.log(
                "bench: nginx is not installed, so this run has no nginx party;"
                f" to add it: {procs.NGINX_INSTALL}"
            )
            return None
        prefix = self.tmp / "nginx"
        prefix.mkdir()
        port = procs.free_port()
        conf = procs.nginx_config(prefix, port, upstream_port, nofile)
        argv = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        child = self.start(Child("nginx", argv, self.tmp, stdout=False))
        try:
            procs.wait_port(port, 10, child)
        except procs.ChildError as exc:
            self.stop(child)
            errors = (prefix / "error.log").read_text(errors="replace")[-500:]
            self.log(f"bench: skipping nginx: it did not start ({exc}): {errors}")
            return None
        child.port = port
        return child


def _measure_all(bench: Bench, parties: list[Party], log: Callable[[str], None]) -> dict[str, Any]:
    s = bench.settings
    figs: dict[str, Any] = {"one_stream": {}, "concurrent": {}, "latency": {}, "ttfe": {}}
    for p in parties:  # warm-up: connections, imports, caches
        bench.streams(p, 1, {"kind": "small", "count": 2000})
    for kind in LINE_KINDS:
        count = s.small_count if kind == "small" else s.large_count
        figs["one_stream"][kind] = {}
        for p in parties:
            r = figs["one_stream"][kind][p.key] = bench.one_stream(p, kind, count)
            log(f"1. one stream {kind:5} {p.label:24} {r['events_per_s']:>12,.0f} ev/s")
    for n, per_stream in s.concurrent:
        figs["concurrent"][str(n)] = {}
        for p in parties:
            r = figs["concurrent"][str(n)][p.key] = bench.concurrent(p, n, per_stream)
            log(f"2. {n:>5} streams     {p.label:24} {r['events_per_s']:>12,.0f} ev/s")
    for p in parties:
        r = figs["latency"][p.key] = bench.latency(p)
        log(f"3. latency           {p.label:24} p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms")
    for p in parties:
        r = figs["ttfe"][p.key] = bench.ttfe(p)
        log(f"4. first event       {p.label:24} p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms")
    return figs


def _profile(
    run: Run, bench: Bench, upstream_port: int, out: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """Figure 1's small-line stream through a gateway under cProfile, one gateway per mode."""
    profiles: dict[str, Any] = {}
    for route in ("line", "pointer"):
        pstats_path = out / f"gateway-{route}.pstats"
        gateway = run.gateway(f"gateway-profiled-{route}", upstream_port, profile_to=pstats_path)
        party = Party(route, route, f"http://127.0.0.1:{gateway.port}/{route}", True, gateway)
        measured = bench.streams(party, 1, {"kind": "small", "count": bench.settings.small_count})
        run.stop(gateway)  # SIGTERM: the gateway shuts down cleanly and cProfile writes its file
        text = StringIO()
        stats = pstats.Stats(str(pstats_path), stream=text).strip_dirs()
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(20)
        (out / f"gateway-{route}-profile.txt").write_text(text.getvalue())
        profiles[route] = {
            "events_per_s_under_cprofile": measured["events_per_s"],
            "pstats": str(pstats_path),
            "text": text.getvalue().splitlines(),
        }
        log(f"profile {route}: {pstats_path} and gateway-{route}-profile.txt")
    return profiles


def _workers(
    run: Run, bench: Bench, upstream_port: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Figure 2's largest concurrent case (data: line) through one gateway process and through
    ``--workers 2``, one after the other."""
    n, per_stream = bench.settings.concurrent[-1]
    rates = {}
    for workers in (1, 2):
        gateway = run.gateway(
            f"gateway-workers-{workers}", upstream_port, extra=["--workers", str(workers)]
        )
        url = f"http://127.0.0.1:{gateway.port}/line"
        party = Party(f"workers_{workers}", f"--workers {workers}", url, True, gateway)
        bench.streams(party, 1, {"kind": "small", "count": 2000})  # warm-up
        result = bench.concurrent(party, n, per_stream)
        rates[workers] = result["events_per_s"]
        run.stop(gateway)
        log(f"6. --workers {workers}       {n} streams {result['events_per_s']:>12,.0f} ev/s")
    return {
        "streams": n,
        "lines_per_stream": per_stream,
        "one_worker_events_per_s": rates[1],
        "two_workers_events_per_s": rates[2],
        "ratio": rates[2] / rates[1],
    }


def _incomplete(figs: dict[str, Any]) -> list[str]:
    """Every measurement whose events (or latency samples) are not all there."""
    found = []
    for group in ("one_stream", "concurrent"):
        for name, by_party in figs.get(group, {}).items():
            found += [f"{group} {name} {k}" for k, r in by_party.items() if not r["complete"]]
    for k, r in figs.get("latency", {}).items():
        if r["samples"] != r["expected_samples"]:
            found.append(f"latency {k}: {r['samples']} of {r['expected_samples']} samples")
    for c in figs.get("fanout", {}).get("cases", []):
        if not c["complete"]:
            found.append(
                f"fan-out {c['route']} {c['readers']}: {c['opened']} opened, "
                f"{c['readers_behind']} behind, {c['readers_lost']} lost"
            )
    return found


def _header(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "command": " ".join(["uv run python -m bench", *sys.argv[1:]]),
        "machine": machine(),
    }


def run_fanout_only(
    args: argparse.Namespace, tmp: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """``--only fanout``: the upstream, and figure 7's gateways and readers; nothing else."""
    settings = QUICK if args.quick else FULL
    nofile = raise_nofile()
    run = Run(settings, tmp, log, args.loop)
    try:
        upstream = run.python("upstream", "bench.upstream")
        settings_fan = FANOUT_QUICK if args.quick else FANOUT_FULL
        profile_dir = args.out if args.profile else None
        fan = fanout(run, upstream, settings_fan, log, profile_dir)
        return {**_header(args), "nofile": nofile, "figures": {"fanout": fan}}
    finally:
        run.stop_all()


def run_all(args: argparse.Namespace, tmp: Path, log: Callable[[str], None]) -> dict[str, Any]:
    settings = QUICK if args.quick else FULL
    nofile = raise_nofile()  # children inherit it: the gateway cannot raise its own
    run = Run(settings, tmp, log, args.loop)
    try:
        upstream = run.python("upstream", "bench.upstream")
        up = f"http://127.0.0.1:{upstream.port}"
        passthrough = run.python(
            "passthrough", "bench.passthrough", "--upstream", up, "--loop", args.loop
        )
        nginx = None if args.quick else run.nginx(upstream.port, nofile)
        gateway = run.gateway("gateway", upstream.port)
        client = Client(tmp)
        run.start(client)
        client.wait_ready()
        parties = [
            Party("direct", "direct", f"{up}/stream", False, None),
            Party(
                "passthrough",
                "thin passthrough",
                f"http://127.0.0.1:{passthrough.port}/stream",
                False,
                passthrough,
            ),
        ]
        if nginx is not None:
            url = f"http://127.0.0.1:{nginx.port}/stream"
            parties.append(Party("nginx", "nginx", url, False, nginx))
        gw = f"http://127.0.0.1:{gateway.port}"
        parties += [
            Party("gateway_line", "gateway (data: line)", f"{gw}/line", True, gateway),
            Party("gateway_pointer", "gateway (pointers)", f"{gw}/pointer", True, gateway),
        ]
        bench = Bench(client, upstream, settings)
        figs = _measure_all(bench, parties, log)
        profile = _profile(run, bench, upstream.port, args.out, log) if args.profile else None
        for child in (passthrough, nginx, gateway):  # figure 5 has the machine to itself
            run.stop(child)
        idle_gateway = run.gateway("gateway-idle", upstream.port)
        figs["idle"] = bench.idle(idle_gateway, settings.idle_n)
        log(
            f"5. idle              {figs['idle']['streams']:,} streams, "
            f"{figs['idle']['rss_per_stream_kb']:.1f} KB each"
        )
        run.stop(idle_gateway)
        figs["workers"] = _workers(run, bench, upstream.port, log)
        run.stop(client)  # figure 7 brings its own readers
        figs["fanout"] = fanout(
            run,
            upstream,
            FANOUT_QUICK if args.quick else FANOUT_FULL,
            log,
            args.out if args.profile else None,
        )
        return {
            **_header(args),
            "nofile": nofile,
            "settings": vars(settings),
            "line_bytes": {k: len(make_line(k, 0)) for k in LINE_KINDS},
            "nginx": "skipped (--quick)" if args.quick else ("ran" if nginx else "not available"),
            "parties": [{"key": p.key, "label": p.label} for p in parties],
            "figures": figs,
            "profile": profile,
        }
    finally:
        run.stop_all()


def _on_sigterm(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # so every ``finally`` runs and the children are stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts, no nginx (CI, ~15 s)")
    parser.add_argument("--out", type=Path, help="default: bench/results (quick: .../quick)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run figure 1, and figure 7's goal case, against a cProfiled gateway",
    )
    parser.add_argument(
        "--loop",
        default="asyncio",
        choices=["asyncio", "uvloop"],
        help="event loop of the gateway and the thin passthrough (both, for a fair ratio)",
    )
    parser.add_argument(
        "--only",
        choices=["fanout"],
        help="run one figure alone (fanout: figure 7, one stream to thousands of readers)",
    )
    args = parser.parse_args(argv)
    default = procs.ROOT / "bench" / "results"
    if args.only:  # never over the full run's files
        default = default / args.only
    args.out = (args.out or (default / "quick" if args.quick else default)).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    ok = False
    try:
        measure = run_fanout_only if args.only == "fanout" else run_all
        results = measure(args, tmp, lambda text: print(text, flush=True))
        results["duration_s"] = round(time.monotonic() - started, 1)
        results["loop"] = args.loop
        report = tables(results)
        print("\n" + report + "\n")
        write_json(results, args.out / "results.json")
        (args.out / "results.md").write_text(report + "\n")
        if "one_stream" in results["figures"]:
            write_plot(results, args.out / "results.png")
        print(f"bench: {results['duration_s']} s; wrote {args.out}/results.*")
        ok = True
        if incomplete := _incomplete(results["figures"]):
            print("bench: events missing in: " + "; ".join(incomplete), file=sys.stderr)
            return 1
    finally:
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"bench: failed; the children's logs are in {tmp}", file=sys.stderr)
    return 0
