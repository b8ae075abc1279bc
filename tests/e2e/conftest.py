"""Show the end-to-end test's measured detection time in pytest's summary, with or without
`-s` (the test also attaches it to the JUnit report as the `detection_seconds` property)."""

from __future__ import annotations

from typing import Any

import pytest

_measured: list[tuple[str, Any]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _measured.extend(
            (report.nodeid, value)
            for name, value in report.user_properties
            if name == "detection_seconds"
        )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for nodeid, seconds in _measured:
        terminalreporter.write_line(
            f"end-to-end detection time: {seconds} s from the errors starting to the breaker"
            f" open (budget 20 s for a tenant failing at 90 %) [{nodeid.split('::')[-1]}]"
        )
