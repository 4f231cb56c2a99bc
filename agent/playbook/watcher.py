"""Hot reload: watch the playbook directory, validate a changed set, swap it in atomically.

The directory is polled on the injected clock (:meth:`PlaybookWatcher.poll`, or
:meth:`PlaybookWatcher.run` in a thread). Each poll reads the set and compares its content hash
with the last one seen; only a change triggers a load.

A ConfigMap mount is a directory of symlinks ``x.yaml -> ..data/x.yaml`` where ``..data`` is
itself a symlink that the kubelet swaps atomically to a new timestamped directory. The watcher
resolves ``..data`` once per poll and reads every file from that one snapshot, so it never mixes
files of two versions. A plain directory is read as it is; a half-written file fails validation
and is picked up complete at the next poll.

A set that fails validation is rejected: its errors are logged, counted
(``aiops_playbook_reloads{outcome="rejected"}``, ``aiops_playbook_errors``), and kept in the
:class:`PlaybookStatus` with the last good set's hash and load time, while the last good set
keeps running. The status is written as JSON to a file that ``aiops playbook status`` reads.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.clock import Clock
from agent.metrics import AgentMetrics
from agent.playbook.loader import (
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_TOTAL_BYTES,
    SUFFIXES,
    PlaybookLoadError,
    PlaybookSet,
    digest_of,
    load_sources,
)
from agent.yamlloc import LocatedError, Location, YamlValidationError, read_text, too_large_error
from remediations.jsontext import loads as loads_json

log = logging.getLogger("aiops.playbooks.watcher")

#: The name of the ConfigMap mount's current-version symlink.
CONFIGMAP_DATA = "..data"


@dataclass(slots=True)
class PlaybookStatus:
    """What ``aiops playbook status`` shows: the running set, and the last rejected one if newer."""

    directory: str = ""
    digest: str | None = None  # the running (last good) set
    loaded_at: float | None = None
    playbooks: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    checked_at: float | None = None
    rejected_digest: str | None = None  # the last set that failed, while it is what is on disk
    rejected_at: float | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """True when what is on disk is what runs."""
        return self.rejected_digest is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the status file)."""
        return {
            "directory": self.directory,
            "healthy": self.healthy,
            "digest": self.digest,
            "loadedAt": self.loaded_at,
            "playbooks": list(self.playbooks),
            "files": list(self.files),
            "checkedAt": self.checked_at,
            "rejectedDigest": self.rejected_digest,
            "rejectedAt": self.rejected_at,
            "errors": list(self.errors),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlaybookStatus:
        """Read back :meth:`to_dict`."""
        return cls(
            directory=str(data.get("directory", "")),
            digest=data.get("digest"),
            loaded_at=data.get("loadedAt"),
            playbooks=list(data.get("playbooks", [])),
            files=list(data.get("files", [])),
            checked_at=data.get("checkedAt"),
            rejected_digest=data.get("rejectedDigest"),
            rejected_at=data.get("rejectedAt"),
            errors=list(data.get("errors", [])),
        )


def write_status(path: Path, status: PlaybookStatus) -> None:
    """Write ``status`` to ``path`` atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(status.to_dict(), fh, indent=2, sort_keys=True)
            fh.write("\n")
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_status(path: Path) -> PlaybookStatus:
    """Read a status file written by :func:`write_status`; OSError or ValueError if unreadable."""
    try:
        data = loads_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # not JSON, or not UTF-8
        msg = f"{path} does not hold a playbook status: {exc}"
        raise ValueError(msg) from None
    if not isinstance(data, dict):
        msg = f"{path} does not hold a playbook status"
        raise ValueError(msg)
    return PlaybookStatus.from_dict(data)


def snapshot(directory: Path) -> list[tuple[str, str]]:
    """The playbook files of ``directory`` as (name, text), read from one consistent version.

    Names are ``directory/file.yaml`` whatever snapshot directory the text came from. Raises
    :class:`PlaybookLoadError` for unreadable, too many or too large files.
    """
    data_link = directory / CONFIGMAP_DATA
    source = Path(os.path.realpath(data_link)) if data_link.is_symlink() else directory
    try:
        entries = sorted(p for p in source.iterdir() if not p.name.startswith("."))
        versions = source is directory and any(p.name.startswith("..") for p in directory.iterdir())
    except OSError as exc:
        raise PlaybookLoadError(
            [LocatedError(Location(str(directory), 0, 0), "", f"cannot list: {exc}")]
        ) from exc
    if versions:  # a ConfigMap mount's version directories, but no ..data to say which is current
        msg = f"a ConfigMap mount without {CONFIGMAP_DATA}: cannot tell which version is current"
        raise PlaybookLoadError([LocatedError(Location(str(directory), 0, 0), "", msg)])
    playbooks = [p for p in entries if p.name.endswith(SUFFIXES)]
    broken = [p for p in playbooks if not p.is_file()]
    if broken:  # e.g. x.yaml -> ..data/x.yaml with ..data gone: not an empty set, an unreadable one
        raise PlaybookLoadError(
            [
                LocatedError(
                    Location(str(directory / p.name), 0, 0), "", "not a readable file (a dangling link?)"
                )
                for p in broken
            ]
        )
    files = playbooks
    if len(files) > MAX_FILES:
        msg = f"{len(files)} files, more than {MAX_FILES}"
        raise PlaybookLoadError([LocatedError(Location(str(directory), 0, 0), "", msg)])
    out: list[tuple[str, str]] = []
    errors: list[LocatedError] = []
    total = 0
    for f in files:
        name = str(directory / f.name)
        try:
            text = read_text(f, max_bytes=MAX_FILE_BYTES, file=name)
        except YamlValidationError as exc:
            errors.extend(exc.errors)
            continue
        total += len(text)
        if total > MAX_TOTAL_BYTES:
            errors.append(too_large_error(name, total, MAX_TOTAL_BYTES))
            break
        out.append((name, text))
    if errors:
        raise PlaybookLoadError(errors)
    return out


class PlaybookWatcher:
    """Polls a playbook directory and hands each new valid set to ``on_swap``."""

    def __init__(
        self,
        directory: Path,
        clock: Clock,
        on_swap: Callable[[PlaybookSet], None],
        *,
        metrics: AgentMetrics | None = None,
        status_file: Path | None = None,
    ) -> None:
        self.directory = directory
        self.clock = clock
        self.on_swap = on_swap
        self.metrics = metrics
        self.status_file = status_file
        self.status = PlaybookStatus(directory=str(directory))
        self._seen: str | None = None  # digest of the last set read, good or bad
        self._errors: list[LocatedError] = []
        self._lock = threading.Lock()

    def load_initial(self) -> None:
        """The first load, at start: like :meth:`poll`, but an invalid set raises.

        Raises :class:`PlaybookLoadError` with every located error, so a daemon can refuse to
        start with playbooks it cannot run (there is no last good set to keep yet).
        """
        self.poll()
        if not self.status.healthy:
            raise PlaybookLoadError(self._errors)

    def poll(self) -> bool:
        """Read the directory; load and swap if it changed. True when a new set was swapped in."""
        with self._lock:
            now = self.clock.now()
            self.status.checked_at = now
            try:
                sources = snapshot(self.directory)
            except PlaybookLoadError as exc:
                return self._rejected(_error_digest(exc.errors), exc.errors, now)
            digest = digest_of(sources)
            if digest == self._seen:
                self._write_status()
                return False
            try:
                new = load_sources(sources)
            except PlaybookLoadError as exc:
                return self._rejected(digest, exc.errors, now)
            self._seen = digest
            self.on_swap(new)
            self.status.digest = new.digest
            self.status.loaded_at = now
            self.status.playbooks = new.names
            self.status.files = list(new.files)
            self.status.rejected_digest = None
            self.status.rejected_at = None
            self.status.errors = []
            self._errors = []
            if self.metrics is not None:
                self.metrics.playbook_reloads.labels("loaded").inc()
                self.metrics.playbook_errors.set(0)
                self.metrics.playbooks_loaded.set(len(new))
                self.metrics.playbook_set_loaded_at.set(now)
            log.info("playbooks loaded: %d (%s), set %s", len(new), ", ".join(new.names), new.digest[:12])
            self._write_status()
            return True

    def _rejected(self, digest: str, errors: list[LocatedError], now: float) -> bool:
        if digest == self._seen:
            self._write_status()
            return False
        self._seen = digest
        self._errors = list(errors)
        self.status.rejected_digest = digest
        self.status.rejected_at = now
        self.status.errors = [e.to_dict() for e in errors]
        if self.metrics is not None:
            self.metrics.playbook_reloads.labels("rejected").inc()
            self.metrics.playbook_errors.set(len(errors))
        running = self.status.digest[:12] if self.status.digest else "none"
        log.error(
            "playbook set rejected with %d error(s); still running set %s",
            len(errors),
            running,
            extra={"errors": [e.to_dict() for e in errors]},
        )
        for err in errors:
            log.error("playbook error: %s", err)
        self._write_status()
        return False

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        try:
            write_status(self.status_file, self.status)
        except OSError as exc:
            log.warning("cannot write playbook status to %s: %s", self.status_file, exc)

    def run(self, stop: threading.Event, interval: float) -> None:
        """Poll every ``interval`` seconds until ``stop`` is set; never raises out of a poll."""
        while not stop.is_set():
            try:
                self.poll()
            except Exception:
                log.exception("playbook watcher poll failed")
            if self.clock.wait(interval, stop):
                return


def _error_digest(errors: list[LocatedError]) -> str:
    return digest_of([(str(e), "") for e in errors])
