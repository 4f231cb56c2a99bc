"""Helpers shared by the real-server fixtures."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import pytest

REQUIRE_INTEGRATION = os.environ.get("AIOPS_REQUIRE_INTEGRATION", "") not in {"", "0", "false", "no"}


def unavailable(reason: str) -> None:
    """Skip the test because a real server is missing, or fail it when CI requires integration tests."""
    if REQUIRE_INTEGRATION:
        pytest.fail(f"AIOPS_REQUIRE_INTEGRATION=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s") from None
            time.sleep(0.02)


def eventually(
    check: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> None:
    """Poll ``check`` until it is true; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or check}")
        time.sleep(interval)
