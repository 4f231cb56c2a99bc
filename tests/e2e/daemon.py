"""Run ``aiops run`` as a real process for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import yaml

from tests.servers.common import free_port


class Daemon:
    """An ``aiops run`` subprocess with its own config file and HTTP port."""

    def __init__(self, tmp: Path, config: Mapping[str, object], *args: str) -> None:
        self.port = free_port()
        config = {**config, "http": {"host": "127.0.0.1", "port": self.port}}
        self.config_path = tmp / "agent.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = tmp / "agent.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(self.config_path), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def get(self, path: str) -> tuple[int, str]:
        """GET a path on the daemon's HTTP port; (0, error) when it is not listening."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    def wait_http(self, path: str, status: int, timeout: float = 30.0) -> str:
        """Wait until ``path`` answers ``status``; return the body."""
        deadline = time.monotonic() + timeout
        last: tuple[int, str] = (0, "")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.output()}")
            last = self.get(path)
            if last[0] == status:
                return last[1]
            time.sleep(0.1)
        raise AssertionError(
            f"{path} answered {last} instead of {status} within {timeout} s:\n{self.output()}"
        )

    def terminate(self, timeout: float = 20.0) -> tuple[int, float]:
        """Send SIGTERM; return the exit code and how long the exit took."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - started

    def output(self) -> str:
        """Everything the daemon logged so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()
