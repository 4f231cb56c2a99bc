"""Test-wide setup: real-server fixtures, and CI's rule that integration tests may not skip."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from tests.servers.common import REQUIRE_INTEGRATION

pytest_plugins = [
    "tests.servers.kafka",
    "tests.servers.prometheus",
    "tests.servers.twin",
    "tests.servers.browser",
]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """With AIOPS_REQUIRE_INTEGRATION=1 a skipped integration or e2e test counts as a failure.

    An expected failure (a strict xfail that failed as declared) is reported as skipped with
    ``wasxfail`` set; it ran against the servers, so it is not a skip this rule is about.
    """
    outcome = yield
    report = outcome.get_result()
    if (
        REQUIRE_INTEGRATION
        and report.skipped
        and not hasattr(report, "wasxfail")
        and (item.get_closest_marker("integration") or item.get_closest_marker("e2e"))
    ):
        report.outcome = "failed"
        report.longrepr = f"AIOPS_REQUIRE_INTEGRATION=1 forbids skipping integration tests: {report.longrepr}"
