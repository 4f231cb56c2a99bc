"""Pending approvals: one small JSON file per action waiting for a person, in a directory.

The executor writes ``<dir>/<id>.json`` when an action needs approval; ``aiops approve ID`` and
``aiops reject ID`` write the decision into the same file; the executor reads decisions on its
tick, acts (or not) and marks the record done. A record nobody decides within its TTL expires.

The id derives from the idempotency key, so the same step of the same incident always has the same
id: a replica that restarts, or a second replica, finds the record instead of making another.
Writes are atomic (a temporary file renamed over the record), so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from remediations.types import key_digest

#: Where approvals live unless the config says otherwise (in a pod: a shared volume).
DEFAULT_APPROVALS_DIR = Path("/tmp/aiops-approvals")  # noqa: S108 - records, not secrets
ID_LENGTH = 12


class ApprovalState(enum.StrEnum):
    """Where an approval is in its life."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    DONE = "done"
    """Approved and then executed (or failed): the executor has reported it."""


class ApprovalError(ValueError):
    """An approval id that does not exist, or a decision on a record that is not pending."""


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """One action waiting for (or past) a decision."""

    id: str
    key: str
    state: ApprovalState
    created: float
    expires: float
    request: Mapping[str, Any]
    """The engine's request (``ActionRequest.to_dict()``), enough to run it after a restart."""
    plan: str = ""
    decided_by: str = ""
    decided_at: float | None = None
    reason: str = ""
    outcome: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "key": self.key,
            "state": self.state.value,
            "created": self.created,
            "expires": self.expires,
            "request": dict(self.request),
            "plan": self.plan,
            "decidedBy": self.decided_by,
            "decidedAt": self.decided_at,
            "reason": self.reason,
            "outcome": dict(self.outcome),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ApprovalRecord:
        """The record from its JSON form; ValueError when it does not fit."""
        try:
            return cls(
                id=str(data["id"]),
                key=str(data["key"]),
                state=ApprovalState(data["state"]),
                created=float(data["created"]),
                expires=float(data["expires"]),
                request=dict(data["request"]),
                plan=str(data.get("plan") or ""),
                decided_by=str(data.get("decidedBy") or ""),
                decided_at=None if data.get("decidedAt") is None else float(data["decidedAt"]),
                reason=str(data.get("reason") or ""),
                outcome=dict(data.get("outcome") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"not an approval record: {exc}"
            raise ValueError(msg) from None


def approval_id(key: str) -> str:
    """The approval id of an idempotency key (hex, stable)."""
    return key_digest(key, ID_LENGTH)


class ApprovalStore:
    """The approval records in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, approval: str) -> Path:
        if not approval or not all(c in "0123456789abcdef" for c in approval) or len(approval) > 64:
            msg = f"{approval!r} is not an approval id (hex digits)"
            raise ApprovalError(msg)
        return self.directory / f"{approval}.json"

    def _write(self, record: ApprovalRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(record.to_dict(), fh, indent=2, sort_keys=True)
            os.replace(tmp, self._path(record.id))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def get(self, approval: str) -> ApprovalRecord:
        """The record with this id; ApprovalError when there is none (or it is unreadable)."""
        path = self._path(approval)
        try:
            return ApprovalRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            msg = f"no approval {approval!r} in {self.directory}"
            raise ApprovalError(msg) from None
        except ValueError as exc:
            msg = f"approval {approval!r} is unreadable: {exc}"
            raise ApprovalError(msg) from None

    def find(self, approval: str) -> ApprovalRecord | None:
        """The record, or None."""
        try:
            return self.get(approval)
        except ApprovalError:
            return None

    def create(
        self, key: str, request: Mapping[str, Any], now: float, ttl: float, plan: str = ""
    ) -> ApprovalRecord:
        """A pending record for ``key`` (the existing one if there is already a record for it)."""
        existing = self.find(approval_id(key))
        if existing is not None:
            return existing
        record = ApprovalRecord(
            id=approval_id(key),
            key=key,
            state=ApprovalState.PENDING,
            created=now,
            expires=now + ttl,
            request=dict(request),
            plan=plan,
        )
        self._write(record)
        return record

    def decide(self, approval: str, approve: bool, by: str, now: float, reason: str = "") -> ApprovalRecord:
        """Approve or reject a pending record; ApprovalError when it is not pending."""
        record = self.get(approval)
        if record.state is not ApprovalState.PENDING:
            msg = f"approval {approval} is {record.state.value}, not pending"
            raise ApprovalError(msg)
        if now >= record.expires:
            msg = f"approval {approval} has expired"
            raise ApprovalError(msg)
        state = ApprovalState.APPROVED if approve else ApprovalState.REJECTED
        decided = replace(record, state=state, decided_by=by, decided_at=now, reason=reason)
        self._write(decided)
        return decided

    def update(self, record: ApprovalRecord) -> None:
        """Write ``record`` back (the executor marking it expired or done)."""
        self._write(record)

    def records(self) -> Iterator[ApprovalRecord]:
        """Every readable record, in id order (unreadable files are skipped)."""
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob("*.json")):
            if path.name.startswith("."):
                continue
            record = self.find(path.stem)
            if record is not None:
                yield record
