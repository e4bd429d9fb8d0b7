"""Moved to tests/support/conformance.py. This name stays only because tests/test_readme_snippets.py
(owned elsewhere) still imports ``CASES``, ``Case`` and ``msg`` from it; delete it once that file
imports from tests.support.conformance."""

from tests.support.conformance import CASES, Case, msg

__all__ = ["CASES", "Case", "msg"]
