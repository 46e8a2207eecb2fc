"""Repository-wide pytest setup.

``--require-engines`` (always passed by the nox sessions, hence by CI) turns every skipped test
into a failure: a backend test must never pass silently because its engine is missing.
"""

from __future__ import annotations

from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--require-engines", action="store_true", help="fail, rather than skip, tests that cannot run")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.config.getoption("--require-engines"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under --require-engines: {reason}"
