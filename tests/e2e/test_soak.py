"""A short soak (``bench/soak.py``) as a test: real upstream and gateway processes on loopback,
concurrent clients with faults and disconnects, every event checked, memory and descriptors
watched. The full run is manual: ``uv run python -m bench.soak`` (200 streams, 60 s)."""

from __future__ import annotations

import subprocess
import sys

import orjson

from tests.support import ROOT


def test_short_soak_receives_every_event_once_in_order_and_leaks_nothing(tmp_path):
    figures = tmp_path / "soak.json"
    argv = [sys.executable, "-m", "bench.soak", "--streams", "30", "--seconds", "8"]
    run = subprocess.run(
        [*argv, "--seed", "1", "--json", str(figures)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    result = orjson.loads(figures.read_bytes())
    tally = result["tally"]
    assert result["violations"] == []
    # The run did what a soak is for: many streams, both kinds of session, every fault met.
    assert tally["sessions"] >= 60
    assert tally["stayed"] > 0
    assert tally["left"] > 0
    assert tally["data_events"] > 2000
    assert set(tally["errors_matched"]) == {"invalid_json", "line_too_long", "upstream_closed"}
    assert result["fds"]["after"] <= result["fds"]["before"]
    assert result["rss"]["growth"] < 0.10
    assert result["upstream"]["open"] == 0
    assert "soak: ok" in run.stdout
