"""Pending approvals: one small JSON record per action waiting for a person.

The executor writes a record when an action needs approval; ``aiops approve ID`` and ``aiops reject
ID`` write the decision into it; an executor reads decisions on its tick, acts (or not) and marks
the record done. A record nobody decides within its TTL expires; a settled record is deleted after
a retention window.

:class:`ApprovalStore` is the one interface, with two backends:

- :class:`ConfigMapStore`: one ConfigMap per record in the agent's namespace
  (``aiops-approval-<id>``, label ``aiops.dev/approval=true``, the record as JSON under
  ``data.record``), so every replica and a person on a laptop see the same records and a pending
  approval survives the replica that made it;
- :class:`DirectoryStore`: one file per record in a directory (one pod, local use, tests).

Every change is a read-modify-write that cannot lose a concurrent one: the ConfigMap is replaced
with the ``resourceVersion`` it was read at, and a 409 Conflict reads it again and re-applies the
change (so an approval racing the executor's expiry ends as one of the two, never a mix); the
directory backend holds a file lock around it. The id derives from the idempotency key, so the
same step of the same incident always has the same id: a replica that restarts, or a second one,
finds the record instead of making another; the same step of an incident opened anew (after a
failover) finds the open record of the first by its playbook, target, step and parameters.

Bounds: ``max_pending`` open records (pending, or approved and not yet run), ``max_record_bytes``
per record (the plan is cut to fit), finished records deleted after ``retention`` and beyond the
newest ``max_finished``.
"""

from __future__ import annotations

import abc
import contextlib
import enum
import fcntl
import json
import logging
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent.files import NotRegularFileError, read_regular_file
from remediations.errors import (
    AlreadyExistsError,
    ConflictError,
    KubeError,
    NotFoundError,
    TemporaryKubeError,
)
from remediations.jsontext import loads as loads_json
from remediations.names import check_label
from remediations.types import key_digest

if TYPE_CHECKING:
    from agent.config import ExecutorConfig
    from remediations.kube import KubeClients

log = logging.getLogger("aiops.approvals")

#: Where approvals live unless the config says otherwise (the directory backend).
DEFAULT_APPROVALS_DIR = Path("/tmp/aiops-approvals")  # noqa: S108 - records, not secrets
ID_LENGTH = 12
#: The ConfigMap backend's names, label and data key.
CONFIGMAP_PREFIX = "aiops-approval-"
APPROVAL_LABEL = "aiops.dev/approval"
STATE_LABEL = "aiops.dev/approval-state"
FINISHED_LABEL = "aiops.dev/approval-finished"
RECORD_KEY = "record"
#: A plan longer than this is cut (the record keeps its first lines).
PLAN_MAX = 8192
PLAN_CUT = "\n... (plan cut)"
#: A decision's reason longer than this is refused.
REASON_MAX = 1024
#: A record file larger than this is not read (a record is at most ``max_record_bytes``, 900 000
#: at most, as a ConfigMap is at most 1 MiB).
READ_MAX = 1024 * 1024
#: Conflicts re-read and re-applied before a change gives up.
CONFLICT_ATTEMPTS = 8


class ApprovalState(enum.StrEnum):
    """Where an approval is in its life."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    DONE = "done"
    """Approved and then executed (or failed): the executor has reported it."""


#: States that hold a slot of ``max_pending``: waiting for a person, or approved and not yet run.
OPEN_STATES = frozenset({ApprovalState.PENDING, ApprovalState.APPROVED})


class ApprovalError(ValueError):
    """An approval id that does not exist, a decision on a record that is not pending, a record
    that does not fit, or a store that cannot be reached."""


class ApprovalsUnavailableError(ApprovalError):
    """The store could not be read or written (the API server did not answer): may work later."""


class ApprovalsFullError(ApprovalError):
    """``max_pending`` records are open already: no new one is made."""


@dataclass(frozen=True, slots=True)
class ApprovalLimits:
    """What the records may cost: open records, bytes per record, how long settled ones stay."""

    max_pending: int = 100
    max_record_bytes: int = 64 * 1024
    retention: float = 86400.0
    max_finished: int = 500
    """Finished records kept at most (the newest), whatever their age."""

    def __post_init__(self) -> None:
        if (
            self.max_pending < 1
            or self.max_record_bytes < 1024
            or self.retention < 0
            or self.max_finished < 0
        ):
            msg = (
                "approval limits: max_pending >= 1, max_record_bytes >= 1024, retention >= 0 and "
                f"max_finished >= 0, got {self.max_pending}, {self.max_record_bytes}, {self.retention}, "
                f"{self.max_finished}"
            )
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """One action waiting for (or past) a decision."""

    id: str
    key: str
    state: ApprovalState
    created: float
    expires: float
    request: Mapping[str, Any]
    """The engine's request (``Proposal.to_dict()``), enough to run it after a restart."""
    plan: str = ""
    decided_by: str = ""
    decided_at: float | None = None
    reason: str = ""
    outcome: Mapping[str, Any] = field(default_factory=dict)
    owner: str = ""
    """The replica whose engine waits for the outcome (the one that proposed it last)."""
    settled: float | None = None
    """When the record reached its end (executed, rejected and reported, expired)."""

    @property
    def finished(self) -> bool:
        """Whether nothing more happens to the record (its outcome is written): only retention."""
        return self.settled is not None

    @property
    def settled_at(self) -> float | None:
        """When the record ended, for retention (None: still open)."""
        if self.settled is not None:
            return self.settled
        if self.state is ApprovalState.DONE:  # claimed, and its claimer never reported
            return self.decided_at if self.decided_at is not None else self.created
        if self.state is ApprovalState.EXPIRED:
            return self.expires
        return None

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
            "owner": self.owner,
            "settled": self.settled,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ApprovalRecord:
        """The record from its JSON form; ValueError when it does not fit."""
        try:
            record = cls(
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
                owner=str(data.get("owner") or ""),
                settled=None if data.get("settled") is None else float(data["settled"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            msg = f"not an approval record: {exc}"
            raise ValueError(msg) from None
        for name, when in (("created", record.created), ("expires", record.expires)):
            if not math.isfinite(when):  # NaN never expires: approvable for ever
                msg = f"not an approval record: {name} is {when}, not a time"
                raise ValueError(msg)
        return record


def approval_id(key: str) -> str:
    """The approval id of an idempotency key (hex, stable)."""
    return key_digest(key, ID_LENGTH)


def check_id(approval: str) -> str:
    """``approval`` if it is an approval id (hex digits); ApprovalError naming it otherwise."""
    if not approval or len(approval) > 64 or not all(c in "0123456789abcdef" for c in approval):
        msg = f"{approval!r} is not an approval id (hex digits)"
        raise ApprovalError(msg)
    return approval


#: What makes two requests the same step of a playbook on a target, whatever their incident.
STEP_FIELDS = ("playbook", "target", "step", "action", "params", "restore")


def same_step(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two requests (``Proposal.to_dict()``) are the same step, with the same parameters,
    of one playbook on one target."""
    return all(a.get(f) == b.get(f) for f in STEP_FIELDS)


Change = Callable[[ApprovalRecord], ApprovalRecord | None]
"""A change of one record: the new record, or None to leave it as it is."""


class ApprovalStore(Protocol):
    """Where approval records live; every method may raise :class:`ApprovalError`."""

    limits: ApprovalLimits

    @property
    def where(self) -> str:
        """Where the records are, for messages (``directory /tmp/x``, ``ConfigMaps in namespace aiops``)."""
        ...

    def get(self, approval: str) -> ApprovalRecord:
        """The record with this id; ApprovalError when there is none (or it is unreadable)."""
        ...

    def find(self, approval: str) -> ApprovalRecord | None:
        """The record, or None when there is none."""
        ...

    def records(self, finished: bool | None = None) -> Iterator[ApprovalRecord]:
        """The readable records, in id order (unreadable ones are skipped with a warning): every
        one, or only the finished (True) or unfinished (False) ones."""
        ...

    def create(
        self,
        key: str,
        request: Mapping[str, Any],
        now: float,
        ttl: float,
        plan: str = "",
        owner: str = "",
    ) -> ApprovalRecord:
        """A pending record for ``key``, or the existing one; ApprovalsFullError past ``max_pending``."""
        ...

    def change(self, approval: str, change: Change) -> ApprovalRecord | None:
        """Apply ``change`` to the record as it is now, atomically (a concurrent change makes it
        read again and re-apply); the record written, or None when ``change`` left it."""
        ...

    def decide(self, approval: str, approve: bool, by: str, now: float, reason: str = "") -> ApprovalRecord:
        """Approve or reject a pending record; ApprovalError when it is not pending or has expired."""
        ...

    def prune(self, now: float) -> int:
        """Delete the records settled longer than ``retention`` ago; how many went."""
        ...


class _Records(abc.ABC):
    """What both backends share: the operations made of each one's primitives ``where``, ``get``,
    ``records``, ``change``, ``_insert`` and ``_delete``."""

    limits: ApprovalLimits

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """Where the records are, for messages."""

    @abc.abstractmethod
    def get(self, approval: str) -> ApprovalRecord:
        """The record with this id; ApprovalError when there is none (or it is unreadable)."""

    @abc.abstractmethod
    def records(self, finished: bool | None = None) -> Iterator[ApprovalRecord]:
        """The readable records, in id order: all, or the finished or unfinished ones."""

    @abc.abstractmethod
    def change(self, approval: str, change: Change) -> ApprovalRecord | None:
        """Apply ``change`` atomically; the record written, or None."""

    @abc.abstractmethod
    def _insert(self, record: ApprovalRecord, text: str) -> ApprovalRecord | None:
        """Write a new record; the existing one if there is one already (then nothing is written)."""

    @abc.abstractmethod
    def _delete(self, record: ApprovalRecord) -> bool:
        """Delete the record if it is still as read; whether it went."""

    def find(self, approval: str) -> ApprovalRecord | None:
        """The record, or None."""
        try:
            return self.get(approval)
        except ApprovalError:
            return None

    def encode(self, record: ApprovalRecord) -> str:
        """The record's JSON text, within ``max_record_bytes``: a large outcome is reduced to its
        status and message, then the plan is cut (it keeps its first lines); ApprovalError naming
        the sizes if it still does not fit."""
        limit = self.limits.max_record_bytes
        if len(record.plan) > PLAN_MAX:
            record = replace(record, plan=record.plan[:PLAN_MAX] + PLAN_CUT)
        text = _dumps(record)
        if len(text.encode()) > limit and record.outcome:
            outcome = record.outcome
            small = {"status": outcome.get("status"), "message": str(outcome.get("message") or "")[:1000]}
            record = replace(record, outcome={**small, "cut": True})
            text = _dumps(record)
        plan = record.plan.removesuffix(PLAN_CUT)
        while len(text.encode()) > limit and plan:
            over = len(text.encode()) - limit
            plan = plan[: max(0, len(plan) - over - len(PLAN_CUT))]
            text = _dumps(replace(record, plan=plan + PLAN_CUT))
        size = len(text.encode())
        if size > limit:
            msg = (
                f"approval record for {record.key} is {size} bytes without its plan, over the limit "
                f"of {limit} (executor.approvals.max_record_bytes)"
            )
            raise ApprovalError(msg)
        return text

    def create(
        self,
        key: str,
        request: Mapping[str, Any],
        now: float,
        ttl: float,
        plan: str = "",
        owner: str = "",
    ) -> ApprovalRecord:
        """A pending record for ``key``; the existing one if there is a record for it, or an open one
        for the same step of another incident of the same playbook and target (an incident opened
        again after a failover: one decision per step, whichever incident carries it)."""
        existing = self.find(approval_id(key))
        if existing is not None:
            return existing
        records = list(self.records(finished=False))
        for record in records:
            if record.state in OPEN_STATES and same_step(record.request, request):
                return record
        open_now = sum(1 for r in records if r.state in OPEN_STATES)
        if open_now >= self.limits.max_pending:
            msg = (
                f"{open_now} approvals are open in {self.where}, the limit "
                f"(executor.approvals.max_pending = {self.limits.max_pending}): decide or reject "
                "some (aiops approvals lists them)"
            )
            raise ApprovalsFullError(msg)
        record = ApprovalRecord(
            id=approval_id(key),
            key=key,
            state=ApprovalState.PENDING,
            created=now,
            expires=now + ttl,
            request=dict(request),
            plan=plan,
            owner=owner,
        )
        found = self._insert(record, self.encode(record))
        return record if found is None else found

    def decide(self, approval: str, approve: bool, by: str, now: float, reason: str = "") -> ApprovalRecord:
        """Approve or reject a pending record; ApprovalError when it is not pending."""
        if len(reason) > REASON_MAX or len(by) > REASON_MAX:
            msg = f"a reason or a name is at most {REASON_MAX} characters"
            raise ApprovalError(msg)
        for what, text in (("reason", reason), ("name", by)):
            try:
                text.encode()
            except UnicodeEncodeError as exc:  # a byte that was not UTF-8, from the command line
                msg = f"the {what} is not UTF-8 text (character {exc.start + 1}: {text[exc.start]!r})"
                raise ApprovalError(msg) from None

        def decided(record: ApprovalRecord) -> ApprovalRecord:
            if record.state is not ApprovalState.PENDING:
                msg = f"approval {approval} is {record.state.value}, not pending"
                raise ApprovalError(msg)
            if now >= record.expires:
                msg = f"approval {approval} has expired"
                raise ApprovalError(msg)
            state = ApprovalState.APPROVED if approve else ApprovalState.REJECTED
            return replace(record, state=state, decided_by=by, decided_at=now, reason=reason)

        written = self.change(approval, decided)
        if written is None:  # pragma: no cover - decided() always answers a record or raises
            msg = f"approval {approval} was not changed"
            raise ApprovalError(msg)
        return written

    def prune(self, now: float) -> int:
        """Delete the records settled longer than ``retention`` ago, and the oldest finished ones
        past ``max_finished``; how many went."""
        settled = sorted(
            ((r.settled_at, r) for r in self.records() if r.settled_at is not None),
            key=lambda pair: (pair[0], pair[1].id),
            reverse=True,
        )
        kept_finished = 0
        gone = 0
        for at, record in settled:
            over = False
            if record.finished:
                kept_finished += 1
                over = kept_finished > self.limits.max_finished
            if (over or now - at >= self.limits.retention) and self._delete(record):
                gone += 1
        return gone


def _dumps(record: ApprovalRecord) -> str:
    return json.dumps(record.to_dict(), sort_keys=True)


def _parse(approval: str, text: str) -> ApprovalRecord:
    try:
        record = ApprovalRecord.from_dict(loads_json(text))
    except ValueError as exc:  # json.JSONDecodeError is one
        msg = f"approval {approval!r} is unreadable: {exc}"
        raise ApprovalError(msg) from None
    if record.id != approval:
        msg = f"approval {approval!r} holds the record of {record.id!r}"
        raise ApprovalError(msg)
    return record


# ---------------------------------------------------------------- one file per record


class DirectoryStore(_Records):
    """The approval records as ``<id>.json`` files in one directory (one pod, local use).

    Whoever can write a file there can approve any action, so a directory owned by another user
    (root excepted) or writable by every user is refused (an ``/tmp/aiops-approvals`` another user
    made first, say). A record is read only from a regular file of at most :data:`READ_MAX` bytes,
    never through a symbolic link: a FIFO or ``/dev/zero`` there cannot hang or fill the agent."""

    def __init__(self, directory: Path, limits: ApprovalLimits | None = None) -> None:
        self.directory = directory
        self.limits = limits if limits is not None else ApprovalLimits()

    @property
    def where(self) -> str:
        """The directory."""
        return f"directory {self.directory}"

    def _path(self, approval: str) -> Path:
        return self.directory / f"{check_id(approval)}.json"

    def _trusted(self) -> bool:
        """Whether the directory exists; ApprovalError when another user could write records in it."""
        try:
            info = self.directory.stat()
        except FileNotFoundError:
            return False
        except OSError as exc:
            msg = f"cannot read approvals ({self.where}): {exc}"
            raise ApprovalError(msg) from None
        if not stat.S_ISDIR(info.st_mode):
            msg = f"{self.where} is not a directory"
            raise ApprovalError(msg)
        me = os.geteuid()
        if info.st_uid not in {0, me}:
            problem = f"is owned by uid {info.st_uid}, not by this user (uid {me}) or root"
        elif info.st_mode & stat.S_IWOTH:
            problem = f"is writable by every user (mode {stat.filemode(info.st_mode)})"
        else:
            return True
        msg = (
            f"{self.where} {problem}: whoever can write there can approve any action; choose another "
            "executor.approvals_dir (--dir), or make it this user's and not writable by others"
        )
        raise ApprovalError(msg)

    def _read(self, approval: str, path: Path) -> str:
        """The text of a record file: a regular file (not followed through a link) of at most
        READ_MAX bytes, read without waiting on a FIFO; ApprovalError otherwise."""
        try:
            data = read_regular_file(path, READ_MAX, follow_links=False)
        except FileNotFoundError:
            msg = f"no approval {approval!r} in {self.where}"
            raise ApprovalError(msg) from None
        except NotRegularFileError as exc:
            msg = f"approval {approval!r} is not a regular file ({path}: {exc})"
            raise ApprovalError(msg) from None
        except OSError as exc:  # ELOOP: a symbolic link
            msg = f"approval {approval!r} is unreadable ({path}): {exc.strerror}"
            raise ApprovalError(msg) from None
        if len(data) > READ_MAX:
            msg = f"approval {approval!r} is over {READ_MAX} bytes ({path})"
            raise ApprovalError(msg)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            msg = f"approval {approval!r} is unreadable ({path}): not UTF-8 at byte {exc.start}"
            raise ApprovalError(msg) from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive use of the directory between processes on this host (a read-modify-write)."""
        # this user's alone, whatever the umask: a directory others can write is refused below
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._trusted()
        with (self.directory / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _write(self, approval: str, text: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, self._path(approval))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def get(self, approval: str) -> ApprovalRecord:
        """The record with this id; ApprovalError when there is none (or it is unreadable)."""
        path = self._path(approval)
        if not self._trusted():
            msg = f"no approval {approval!r} in {self.where}"
            raise ApprovalError(msg)
        return _parse(approval, self._read(approval, path))

    def records(self, finished: bool | None = None) -> Iterator[ApprovalRecord]:
        """The readable records, in id order (unreadable files are skipped with a warning)."""
        if not self._trusted():
            return
        for path in sorted(self.directory.glob("*.json")):
            if path.name.startswith("."):
                continue
            try:
                record = self.get(path.stem)
            except ApprovalError as exc:
                if os.path.lexists(path):  # not deleted meanwhile
                    log.warning("skipping %s: %s", path, exc)
                continue
            if finished is None or record.finished is finished:
                yield record

    def _insert(self, record: ApprovalRecord, text: str) -> ApprovalRecord | None:
        with self._locked():
            existing = self.find(record.id)
            if existing is not None:
                return existing
            self._write(record.id, text)
        return None

    def change(self, approval: str, change: Change) -> ApprovalRecord | None:
        """Apply ``change`` under the directory's lock."""
        with self._locked():
            new = change(self.get(approval))
            if new is not None:
                self._write(approval, self.encode(new))
        return new

    def _delete(self, record: ApprovalRecord) -> bool:
        with self._locked():
            if self.find(record.id) != record:
                return False
            with contextlib.suppress(FileNotFoundError):
                self._path(record.id).unlink()
        return True


# ---------------------------------------------------------------- one ConfigMap per record


class ConfigMapStore(_Records):
    """The approval records as ConfigMaps ``aiops-approval-<id>`` in one namespace."""

    def __init__(self, kube: KubeClients, namespace: str, limits: ApprovalLimits | None = None) -> None:
        try:
            self.namespace = check_label("the approvals namespace", namespace)
        except ValueError as exc:
            raise ApprovalError(str(exc)) from None
        self.kube = kube
        self.limits = limits if limits is not None else ApprovalLimits()

    @property
    def where(self) -> str:
        """The namespace."""
        return f"ConfigMaps in namespace {self.namespace}"

    @staticmethod
    def name_of(approval: str) -> str:
        """The ConfigMap name of an approval id."""
        return CONFIGMAP_PREFIX + check_id(approval)

    def _body(self, record: ApprovalRecord, text: str, version: str | None = None) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": self.name_of(record.id),
            "namespace": self.namespace,
            "labels": {
                APPROVAL_LABEL: "true",
                STATE_LABEL: record.state.value,
                FINISHED_LABEL: str(record.finished).lower(),
                "app.kubernetes.io/part-of": "aiops",
            },
        }
        if version is not None:
            metadata["resourceVersion"] = version
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {RECORD_KEY: text}}

    def _unreachable(self, verb: str, exc: KubeError) -> ApprovalError:
        """A clear error for a failed call: temporary ones (no answer, 429, 5xx) may work later."""
        kind = ApprovalsUnavailableError if isinstance(exc, TemporaryKubeError) else ApprovalError
        return kind(f"cannot {verb} approvals ({self.where}): {exc}")

    def _read(self, approval: str) -> tuple[ApprovalRecord, str]:
        """The record and the resourceVersion it was read at."""
        try:
            obj = self.kube.get("ConfigMap", self.namespace, self.name_of(approval))
        except NotFoundError:
            msg = f"no approval {approval!r} in {self.where}"
            raise ApprovalError(msg) from None
        except KubeError as exc:
            raise self._unreachable("read", exc) from exc
        return self._decode(approval, obj)

    @staticmethod
    def _decode(approval: str, obj: Mapping[str, Any]) -> tuple[ApprovalRecord, str]:
        text = (obj.get("data") or {}).get(RECORD_KEY)
        if not isinstance(text, str):
            msg = f"approval {approval!r} has no data.{RECORD_KEY}"
            raise ApprovalError(msg)
        return _parse(approval, text), str((obj.get("metadata") or {}).get("resourceVersion") or "")

    def get(self, approval: str) -> ApprovalRecord:
        """The record with this id; ApprovalError when there is none (or it is unreadable)."""
        return self._read(approval)[0]

    def _listed(self, finished: bool | None = None) -> list[tuple[ApprovalRecord, str]]:
        selector = f"{APPROVAL_LABEL}=true"
        if finished is not None:
            selector += f",{FINISHED_LABEL}={str(finished).lower()}"
        try:
            items = self.kube.list_objects("ConfigMap", self.namespace, label_selector=selector)
        except KubeError as exc:
            raise self._unreachable("list", exc) from exc
        found = []
        for obj in items:
            name = str((obj.get("metadata") or {}).get("name") or "")
            approval = name.removeprefix(CONFIGMAP_PREFIX)
            try:
                found.append(self._decode(check_id(approval), obj))
            except ApprovalError as exc:
                log.warning("skipping ConfigMap %s/%s: %s", self.namespace, name, exc)
        return sorted(found, key=lambda pair: pair[0].id)

    def records(self, finished: bool | None = None) -> Iterator[ApprovalRecord]:
        """The readable records, in id order (one LIST by label)."""
        for record, _ in self._listed(finished):
            yield record

    def _insert(self, record: ApprovalRecord, text: str) -> ApprovalRecord | None:
        try:
            self.kube.create("ConfigMap", self.namespace, self._body(record, text))
        except AlreadyExistsError:
            return self.get(record.id)
        except KubeError as exc:
            raise self._unreachable("create", exc) from exc
        return None

    def change(self, approval: str, change: Change) -> ApprovalRecord | None:
        """Apply ``change`` and replace the ConfigMap at the version read; on a 409 Conflict read
        again and re-apply (``change`` sees what the other writer wrote)."""
        for _ in range(CONFLICT_ATTEMPTS):
            record, version = self._read(approval)
            new = change(record)
            if new is None:
                return None
            body = self._body(new, self.encode(new), version)
            try:
                self.kube.replace("ConfigMap", self.namespace, self.name_of(approval), body)
            except ConflictError:
                log.info("approval %s changed meanwhile; reading it again", approval)
                continue
            except NotFoundError:
                msg = f"approval {approval!r} was deleted meanwhile from {self.where}"
                raise ApprovalError(msg) from None
            except KubeError as exc:
                raise self._unreachable("write", exc) from exc
            return new
        msg = f"approval {approval!r} kept changing under {CONFLICT_ATTEMPTS} tries to write it"
        raise ApprovalError(msg)

    def _delete(self, record: ApprovalRecord) -> bool:
        try:
            current, version = self._read(record.id)
            if current != record:
                return False
            self.kube.delete("ConfigMap", self.namespace, self.name_of(record.id), resource_version=version)
        except (ConflictError, NotFoundError):
            return False
        except ApprovalError:
            return False
        except KubeError as exc:
            raise self._unreachable("delete", exc) from exc
        return True


# ---------------------------------------------------------------- from the config


def approvals_namespace(config: ExecutorConfig, environ: Mapping[str, str]) -> str:
    """The namespace of the ConfigMap records: ``executor.approvals.namespace``, else the Lease's
    (``executor.lease_namespace``), else ``$POD_NAMESPACE``, else ``default``."""
    return config.approvals.namespace or config.lease_namespace or environ.get("POD_NAMESPACE") or "default"


def open_store(config: ExecutorConfig, kube: KubeClients | None, environ: Mapping[str, str]) -> ApprovalStore:
    """The store ``executor.approvals.store`` names; the ConfigMap one needs ``kube``."""
    settings = config.approvals
    limits = ApprovalLimits(
        settings.max_pending, settings.max_record_bytes, settings.retention, settings.max_finished
    )
    if settings.store == "directory":
        return DirectoryStore(Path(config.approvals_dir), limits)
    if kube is None:
        msg = "executor.approvals.store: configmap needs a Kubernetes connection"
        raise ApprovalError(msg)
    return ConfigMapStore(kube, approvals_namespace(config, environ), limits)
