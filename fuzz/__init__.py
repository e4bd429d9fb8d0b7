"""Fuzzing the stream pipeline: ``stream_target.py`` (target and oracle), ``fuzz_stream.py``
(the atheris driver, with a pure-Python fallback). See ``README.md`` here."""
