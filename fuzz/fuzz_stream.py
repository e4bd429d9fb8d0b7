"""Fuzz the stream pipeline (framer, converter, SSE parser) with atheris, or without it.

    uv run python fuzz/fuzz_stream.py -max_total_time=3600      # a long coverage-guided run
    uv run python fuzz/fuzz_stream.py --short                    # CI: about 25 s, quiet
    uv run python fuzz/fuzz_stream.py --pure -max_total_time=60  # no atheris: random inputs

The target and its oracle are :mod:`stream_target` (no atheris there). Arguments starting with
``-`` and positional corpus directories go to libFuzzer; when none are given, new inputs go to
``fuzz/work/`` and the seeds are read from ``fuzz/corpus/``, the dictionary is
``fuzz/stream.dict`` and a crashing input is written to ``fuzz/crashes/`` (both of those folders
are ignored by git).

Strategy: atheris instruments only the ``proxy`` package (imported inside
``instrument_imports``), so coverage feedback is about the gateway, not the oracle. Without
atheris (``--pure``, or where its wheel does not install) the same target runs on random inputs:
seeds mutated with dictionary tokens, byte flips and splices, for the same time limit.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SHORT_SECONDS = 25
_QUIET = "FUZZ_STREAM_QUIET"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fuzz/fuzz_stream.py", add_help=True)
    parser.add_argument("--pure", action="store_true", help="random inputs, no atheris")
    parser.add_argument(
        "--short", action="store_true", help=f"a {SHORT_SECONDS} s run for CI, stats only"
    )
    parser.add_argument("--write-seeds", action="store_true", help="(re)write fuzz/corpus/")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.write_seeds:
        return write_seeds(HERE / "corpus")
    if args.short:
        rest = [f"-max_total_time={SHORT_SECONDS}", *rest]
    try:
        import atheris
    except ImportError:
        atheris = None
        if not args.pure:
            print("fuzz: atheris is not installed; running the pure-Python driver", flush=True)
    if atheris is None or args.pure:
        return pure_fuzz(rest)
    if args.short:
        return short_run(rest)
    return atheris_fuzz(atheris, rest, quiet=os.environ.get(_QUIET) == "1")


def short_run(flags: list[str]) -> int:
    """libFuzzer writes its progress straight to the process's stderr; for CI, run it in a child
    and show its final stats (or, on a finding, its whole report)."""
    with tempfile.TemporaryFile() as log:
        env = {**os.environ, _QUIET: "1"}
        argv = [sys.executable, __file__, *flags]
        status = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        log.seek(0)
        output = log.read().decode(errors="replace")
    stats = dict(re.findall(r"^stat::(\w+):\s*(\S+)", output, re.MULTILINE))
    if status != 0 or not stats:
        print(output[-20000:], end="")
        print(f"fuzz: the short run failed (exit status {status})", flush=True)
        return status or 1
    print(
        f"fuzz (atheris): {stats.get('number_of_executed_units')} runs, "
        f"{stats.get('average_exec_per_sec')}/s, {stats.get('new_units_added')} new units, "
        f"peak RSS {stats.get('peak_rss_mb')} MB, no finding",
        flush=True,
    )
    return 0


def atheris_fuzz(atheris: Any, flags: list[str], *, quiet: bool) -> int:
    with atheris.instrument_imports(include=["proxy"]):
        import proxy.convert
        import proxy.framing
        import proxy.pointer
        import proxy.sse  # noqa: F401  (instrumented here, used by the target)
    stream_target = _target()
    options = [a for a in flags if a.startswith("-")]
    corpora = [a for a in flags if not a.startswith("-")]
    if not corpora and quiet:
        # CI: new inputs into a throwaway folder, so the run leaves nothing in the tree.
        corpora = [tempfile.mkdtemp(prefix="fuzz-stream-"), str(HERE / "corpus")]
    elif not corpora:
        (HERE / "work").mkdir(exist_ok=True)
        corpora = [str(HERE / "work"), str(HERE / "corpus")]
    defaults = {
        "-dict": str(HERE / "stream.dict"),
        "-artifact_prefix": f"{HERE / 'crashes'}{os.sep}",
        "-max_len": "4096",
        "-timeout": "10",
        "-print_final_stats": "1",
    }
    if quiet:
        defaults["-verbosity"] = "0"
        defaults["-print_pcs"] = "0"
        defaults["-reload"] = "0"
    given = {option.split("=", 1)[0] for option in options}
    options += [f"{key}={value}" for key, value in defaults.items() if key not in given]
    (HERE / "crashes").mkdir(exist_ok=True)
    atheris.Setup([sys.argv[0], *options, *corpora], stream_target.one_input)
    atheris.Fuzz()
    return 0  # atheris.Fuzz() exits the process itself


def _target() -> Any:
    """The target module: a sibling when this file runs as a script, ``fuzz.stream_target``
    when it is imported (by the tests)."""
    if __package__:
        from . import stream_target
    else:
        import stream_target
    return stream_target


# -- the driver without atheris ------------------------------------------------------------------


def pure_fuzz(flags: list[str]) -> int:
    stream_target = _target()

    seconds, runs, seed = 10.0, None, None
    for flag in flags:
        key, _, value = flag.lstrip("-").partition("=")
        if key == "max_total_time":
            seconds = float(value)
        elif key == "runs":
            runs = int(value)
        elif key == "seed":
            seed = int(value)
    rng = random.Random(seed)
    corpus = [path.read_bytes() for path in sorted((HERE / "corpus").glob("*"))] or [b""]
    tokens = read_dict(HERE / "stream.dict")
    started = time.monotonic()
    done = 0
    longest = 0
    while time.monotonic() - started < seconds and (runs is None or done < runs):
        data = mutate(rng, rng.choice(corpus), corpus, tokens)
        longest = max(longest, len(data))
        if not run_one(stream_target.one_input, data):
            return 1
        done += 1
    elapsed = time.monotonic() - started
    print(
        f"fuzz (pure): {done} runs in {elapsed:.1f} s ({done / max(elapsed, 1e-9):.0f}/s), "
        f"longest input {longest} bytes, no finding",
        flush=True,
    )
    return 0


def run_one(target: Callable[[bytes], None], data: bytes) -> bool:
    try:
        target(data)
    except Exception:
        crashes = HERE / "crashes"
        crashes.mkdir(exist_ok=True)
        path = crashes / f"crash-{hashlib.sha1(data).hexdigest()}"
        path.write_bytes(data)
        traceback.print_exc()
        print(f"fuzz (pure): finding, input written to {path}: {data!r}", flush=True)
        return False
    return True


def mutate(rng: random.Random, data: bytes, corpus: list[bytes], tokens: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        choice = rng.random()
        where = rng.randint(0, len(out))
        if choice < 0.4 and tokens:
            out[where:where] = rng.choice(tokens)
        elif choice < 0.6 and out:
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif choice < 0.75 and out:
            del out[where : where + rng.randint(1, 8)]
        elif choice < 0.9:
            other = rng.choice(corpus)
            start = rng.randint(0, len(other))
            out[where:where] = other[start : start + rng.randint(1, 64)]
        else:
            out[:3] = bytes(rng.randrange(256) for _ in range(3))
    return bytes(out[:4096])


def read_dict(path: Path) -> list[bytes]:
    """libFuzzer's dictionary format: one ``"..."`` string per line, C escapes, ``#`` comments."""
    tokens = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith('"'):
            tokens.append(ast.literal_eval("b" + line))
    return tokens


def write_seeds(folder: Path) -> int:
    encode_input = _target().encode_input

    folder.mkdir(exist_ok=True)
    ndjson = (
        b'{"d":"a\\r\\nb","e":"tok","i":"7","err":null,"done":false}\n'
        b"not json\r\n\n"
        b'{"d":{"x":[1,"\\n\\ndata: forged\\n\\n"]},"e":"x\\ny","i":12}\n'
        b'{"err":"boom"}\n{"d":"\\u2028","e":1}\n{"i":true}\n{"done":true}\n'
    )
    seeds = {
        "ndjson-line": encode_input(ndjson, cuts=[1, 30, 31]),
        "ndjson-pointers": encode_input(
            ndjson, data="/d", event=3, id_rule=2, error_from=True, complete_when=True
        ),
        "json-seq-bom": encode_input(
            b"\xef\xbb\xbf\x1e" + ndjson.replace(b"\n", b"\n\x1e"), framing="json-seq", data="/d"
        ),
        "ndjson-too-long": encode_input(b"ok\n" + b"x" * 40 + b"\nlost\n", limit=0),
        "ndjson-cr-split": encode_input(b"a\r\nb\rc\r\r\n", cuts=[2, 3, 5]),
        "sse": encode_input(
            b"\xef\xbb\xbfretry: 10\nid: 1\nevent: x\ndata: a\rdata: b\r\n\n: c\n\nid\ndata:"
            b' {"done": true}\n\nevent: y\ndata',
            framing="sse",
            complete_when=True,
            cuts=[3, 4, 20],
        ),
        "sse-too-long": encode_input(
            b"data: a\n\ndata: " + b"y" * 30 + b"\n\n", framing="sse", limit=0
        ),
        "json-document": encode_input(
            b'{\r\n  "d": "x\\ny",\n  "e": "z"\n}\n', framing="json", data="/d", event=2
        ),
    }
    for name, data in seeds.items():
        (folder / name).write_bytes(data)
    print(f"fuzz: wrote {len(seeds)} seeds to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
