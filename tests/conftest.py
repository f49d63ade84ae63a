"""Shared by every pytest suite under tests/ (chart, pod): each skipped test
is appended to DOZLAB_SKIP_LOG in the Rust tests' format (docs/testing.md),
so scripts/test lists it and fails the run: nothing on the allow-list can
make a pytest test skip."""

from __future__ import annotations

import os

import pytest


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    log = os.environ.get("DOZLAB_SKIP_LOG")
    if not report.skipped or hasattr(report, "wasxfail") or not log:
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    reason = reason.removeprefix("Skipped: ").replace("\n", " ")
    with open(log, "a") as f:
        f.write(f"SKIPPED {report.nodeid}: {reason} [needs pytest-skip]\n")
