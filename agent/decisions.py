"""Decision records: one JSON document per incident that says why the agent acted (or did not).

A record is folded from the audit entries of one incident, in the order they were audited: the
playbook engine's incident events (:mod:`agent.playbook.events`, which carry the signal, the
rule that matched, the guardrails checked with their values and the verification evidence in
their ``details``) and the executor's decisions (:class:`~agent.audit.AuditRecord`: the plan's
diff, the outcome, the executor's own guards). :func:`fold` is the one place that builds a
record; :class:`DecisionRecords` is the audit sink that folds live in the daemon (and in a
replay), and :func:`records_from_lines` folds an audit file offline with the same code.

What a record holds (``docs/incidents.md`` describes every field): ``signals`` (detector, score,
tail probability, expected value or band vs the value seen, as seen at each decision point;
``signalsSeen`` counts them all), ``rule`` (the trigger that matched), ``guardrails`` (each one
checked with its value), ``holds`` (the guardrails that held it back), ``actions`` (each step's
plan with its diff, its outcome as an :class:`~remediations.types.ActionStatus`, and the
executor's decisions), ``verification`` (the fresh samples that cleared, or why not) and the
``timeline`` of state changes.

Everything is bounded: signals, list entries and decisions per action are capped, long texts
are cut, a record past ``max_bytes`` drops its oldest entries, and at most ``max_incidents``
records are kept in memory (the least recently updated go first).
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from agent.audit import Audit, AuditSink, Entry
from agent.http import GetRoute, Response
from remediations.jsontext import loads as loads_json

#: The ``type`` of a decision record in the audit file and topic.
RECORD_TYPE = "decision"
#: The version of the record's layout.
RECORD_VERSION = 1

#: States after which an incident does not change any more.
TERMINAL_STATES = frozenset({"resolved", "failed", "escalated", "suppressed", "expired"})
#: Transitions after which an updated record is published (to the audit file and topic).
_PUBLISH_STATES = frozenset({"acting", "verifying", "stale"}) | TERMINAL_STATES
#: States that end a verification (from ``verifying`` or ``stale``).
_VERIFIED_STATES = frozenset({"resolved", "escalated", "stale"})

#: Signal fields kept in a record (the rest of a detector's details stay in the signal topic).
_SIGNAL_FACTS = (
    "expected",
    "band",
    "p_value",
    "seen",
    "limit",
    "above",
    "below",
    "forecast_upper",
    "capacity_per_pod",
    "observed_peak",
    "window",
)


@dataclass(frozen=True, slots=True)
class RecordBounds:
    """What one record, and the records kept in memory, may cost."""

    max_incidents: int = 1000
    max_signals: int = 20
    max_entries: int = 50
    """Entries of each list (timeline, holds, actions); the oldest after the first go first."""
    max_decisions: int = 10
    """Executor decisions kept per action."""
    max_text: int = 4000
    """Characters of any one text (a diff, a reason)."""
    max_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        for name in ("max_incidents", "max_signals", "max_entries", "max_decisions", "max_text"):
            if getattr(self, name) < 1:
                msg = f"decision record bound {name} must be at least 1, got {getattr(self, name)}"
                raise ValueError(msg)
        if self.max_bytes < 4096:
            msg = f"decision record bound max_bytes must be at least 4096, got {self.max_bytes}"
            raise ValueError(msg)


DEFAULT_BOUNDS = RecordBounds()


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A record as an audit entry (what goes to the audit file and topic)."""

    data: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The record, JSON-ready (a deep copy)."""
        return copy.deepcopy(dict(self.data))


# ---------------------------------------------------------------- the why, in words


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.3g}"


def _span(low: Any, high: Any) -> str:
    sep = "-" if isinstance(low, int | float) and low >= 0 else " to "
    return f"{_num(low)}{sep}{_num(high)}"


def _p(value: float) -> str:
    text = f"{value:.1g}"
    mantissa, _, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else text


def explain_signal(signal: Mapping[str, Any]) -> str:
    """What a signal saw against what was expected, in words.

    ``expected 0.005 (band 0.003-0.008), saw 0.12, p=2e-9``; a threshold rule's limits, a
    forecast's upper bound against its limit; at least ``saw VALUE``.
    """
    details = signal.get("details") or {}
    if not isinstance(details, Mapping):
        details = {}
    parts: list[str] = []
    expected = details.get("expected")
    band = details.get("band")
    if isinstance(expected, int | float):
        text = f"expected {_num(expected)}"
        if isinstance(band, Sequence) and len(band) == 2:
            text += f" (band {_span(band[0], band[1])})"
        parts.append(text)
    elif isinstance(band, Sequence) and len(band) == 2:
        parts.append(f"expected within {_span(band[0], band[1])}")
    above, below = details.get("above"), details.get("below")
    if above is not None or below is not None:
        limits = [f"{name} {_num(v)}" for name, v in (("above", above), ("below", below)) if v is not None]
        parts.append("rule: " + " or ".join(limits))
    upper = details.get("forecast_upper")
    if isinstance(upper, int | float):
        text = f"forecast up to {_num(upper)}"
        limit = details.get("limit")
        if isinstance(limit, int | float):
            text += f" vs limit {_num(limit)}"
        capacity = details.get("capacity_per_pod")
        if isinstance(capacity, int | float):
            text += f" (measured {_num(capacity)} per pod)"
        observed = details.get("observed_peak")
        if isinstance(observed, int | float):
            text += f", observed up to {_num(observed)}"
        parts.append(text)
    value = signal.get("value")
    if isinstance(value, int | float):
        parts.append(f"saw {_num(value)}")
    p = details.get("p_value")
    if isinstance(p, int | float):
        parts.append(f"p={_p(float(p))}")
    elif isinstance(signal.get("score"), int | float):
        parts.append(f"score {float(signal['score']):.3g}")
    return ", ".join(parts)


# ---------------------------------------------------------------- the fold


def new_record(incident: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """An empty record of ``incident``, named from its first entry."""
    return {
        "type": RECORD_TYPE,
        "version": RECORD_VERSION,
        "incident": incident,
        "playbook": entry.get("playbook", ""),
        "target": dict(entry.get("target") or {}),
        "rule": None,
        "priority": None,
        "class": None,
        "source": None,
        "state": None,
        "opened": entry.get("time"),
        "fired": None,
        "updated": entry.get("time"),
        "closed": None,
        "signalsSeen": 0,
        "window": None,
        "signals": [],
        "timeline": [],
        "guardrails": [],
        "holds": [],
        "actions": [],
        "verification": None,
        "dropped": {},
    }


def _cut(text: Any, bounds: RecordBounds) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= bounds.max_text else s[: bounds.max_text - 12] + " [truncated]"


def _drop(record: dict[str, Any], what: str, n: int = 1) -> None:
    dropped = record.setdefault("dropped", {})
    dropped[what] = int(dropped.get(what, 0)) + n


def _append(record: dict[str, Any], what: str, item: dict[str, Any], bounds: RecordBounds) -> None:
    """Append to a list, keeping its first entry and the newest ones within the bound."""
    items: list[dict[str, Any]] = record[what]
    items.append(item)
    if len(items) > bounds.max_entries:
        del items[1]
        _drop(record, what)


def compact_signal(signal: Mapping[str, Any]) -> dict[str, Any]:
    """The facts of a signal a record keeps, with the why in words."""
    details = signal.get("details") or {}
    facts = {k: details[k] for k in _SIGNAL_FACTS if isinstance(details, Mapping) and k in details}
    return {
        "time": signal.get("timestamp"),
        "kind": signal.get("kind"),
        "metric": signal.get("metric"),
        "labels": dict(signal.get("labels") or {}),
        "detector": signal.get("detector"),
        "value": signal.get("value"),
        "score": signal.get("score"),
        **facts,
        "why": explain_signal(signal),
    }


def _same_signal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("detector", "metric", "labels", "time"))


def _add_signal(record: dict[str, Any], signal: Mapping[str, Any], seen: Any, bounds: RecordBounds) -> None:
    kept = compact_signal(signal)
    signals: list[dict[str, Any]] = record["signals"]
    if not any(_same_signal(s, kept) for s in signals):
        signals.append(kept)
        if len(signals) > bounds.max_signals:
            del signals[1]  # the first signal (what opened it) and the newest stay
            _drop(record, "signals")
    if isinstance(seen, int):
        record["signalsSeen"] = max(int(record.get("signalsSeen") or 0), seen)
    when = kept["time"]
    if isinstance(when, int | float):
        window = record.get("window") or {"from": when, "to": when}
        record["window"] = {"from": min(window["from"], when), "to": max(window["to"], when)}


def _upsert_guardrails(record: dict[str, Any], checks: Iterable[Mapping[str, Any]]) -> None:
    by_name = {g["name"]: i for i, g in enumerate(record["guardrails"])}
    for check in checks:
        item = dict(check)
        i = by_name.get(item.get("name"))
        if i is None:
            by_name[item.get("name")] = len(record["guardrails"])
            record["guardrails"].append(item)
        else:
            record["guardrails"][i] = item


def _action(record: dict[str, Any], entry: Mapping[str, Any], bounds: RecordBounds) -> dict[str, Any] | None:
    key = entry.get("key")
    if not key:
        return None
    for item in reversed(record["actions"]):
        if item["key"] == key:
            return item  # type: ignore[no-any-return]  # the record is JSON: items are dicts
    item = {
        "key": key,
        "step": entry.get("step"),
        "action": entry.get("action"),
        "status": None,
        "diff": "",
        "plan": "",
        "message": "",
        "decisions": [],
    }
    _append(record, "actions", item, bounds)
    return item


def _fold_event(record: dict[str, Any], e: Mapping[str, Any], bounds: RecordBounds) -> bool:
    """An engine event into ``record``; True when it is a moment worth publishing."""
    details = e.get("details") or {}
    state, previous, now = e.get("state"), e.get("previous"), e.get("time")
    if "rule" in details:
        for name in ("rule", "priority", "class", "source"):
            record[name] = details.get(name)
    if "signal" in details:
        _add_signal(record, details["signal"], details.get("signals"), bounds)
    if "guardrails" in details:
        _upsert_guardrails(record, details["guardrails"])
    record["state"] = state
    publish = False
    if previous != state:
        _append(
            record,
            "timeline",
            {"time": now, "from": previous, "to": state, "reason": _cut(e.get("reason"), bounds)},
            bounds,
        )
        if state in TERMINAL_STATES:
            record["closed"] = now
        if state == "firing" and record.get("fired") is None:
            record["fired"] = now
        if (previous in {"verifying", "stale"} and state in _VERIFIED_STATES) or (
            previous == "acting" and state == "resolved"
        ):
            record["verification"] = {
                "time": now,
                "result": state,
                "reason": _cut(e.get("reason"), bounds),
                **({"evidence": details["evidence"]} if "evidence" in details else {}),
            }
        fired = record.get("fired") is not None
        publish = state in _PUBLISH_STATES and (fired or state not in TERMINAL_STATES)
    if e.get("guardrail") and not e.get("key"):
        _append(
            record,
            "holds",
            {"time": now, "guardrail": e["guardrail"], "reason": _cut(e.get("reason"), bounds)},
            bounds,
        )
    status = e.get("status")
    if status and e.get("key"):
        item = _action(record, e, bounds)
        if item is not None:
            item["status"] = status
            item["message"] = _cut(e.get("reason"), bounds)
            item["time"] = now
            publish = publish or status not in {"retry"}
    return publish


def _fold_decision(record: dict[str, Any], d: Mapping[str, Any], bounds: RecordBounds) -> bool:
    """An executor decision into ``record``; never a moment to publish by itself."""
    item = _action(record, d, bounds)
    if item is None:
        return False
    details = d.get("details") or {}
    decision = str(d.get("decision"))
    kept = {
        "time": d.get("time"),
        "decision": decision,
        "message": _cut(d.get("message"), bounds),
        **({"guardrail": d["guardrail"]} if d.get("guardrail") else {}),
        **({"error": d["error"]} if d.get("error") else {}),
    }
    decisions: list[dict[str, Any]] = item["decisions"]
    decisions.append(kept)
    if len(decisions) > bounds.max_decisions:
        del decisions[1]
        _drop(record, "decisions")
    if details.get("diff"):
        item["diff"] = _cut(details["diff"], bounds)
    if details.get("plan"):
        item["plan"] = _cut(details["plan"], bounds)
    if "guards" in details:
        _upsert_guardrails(record, details["guards"])
    if d.get("guardrail") and decision == "skipped":
        held = {"name": d["guardrail"], "ok": False, "value": _cut(d.get("message"), bounds)}
        _upsert_guardrails(record, [held])
    return False  # the engine's event with the outcome follows: that one publishes


def _shrink(record: dict[str, Any], bounds: RecordBounds) -> None:
    """Drop the oldest entries (after the first) until the record fits ``max_bytes``."""
    while len(json.dumps(record, default=str)) > bounds.max_bytes:
        longest = max(("signals", "timeline", "holds", "actions"), key=lambda k: len(record[k]))
        if len(record[longest]) <= 1:
            for item in record["actions"]:
                item["diff"], item["plan"] = _cut(item["diff"], RecordBounds(max_text=200)), ""
            _drop(record, "bytes")
            return
        del record[longest][1 if len(record[longest]) > 1 else 0]
        _drop(record, longest)


def fold(
    record: dict[str, Any] | None, entry: Mapping[str, Any], bounds: RecordBounds = DEFAULT_BOUNDS
) -> tuple[dict[str, Any] | None, bool]:
    """``entry`` (an audit entry's JSON form) folded into ``record`` (None: none yet).

    Returns the record (None when the entry belongs to no incident) and whether the entry is a
    moment worth publishing (a transition to acting or later, an action's outcome). A decision
    record entry replaces what was folded so far.
    """
    incident = entry.get("incident")
    if not incident or not isinstance(incident, str):
        return record, False
    if entry.get("type") == RECORD_TYPE:
        return copy.deepcopy(dict(entry)), False
    if record is None:
        record = new_record(incident, entry)
    if entry.get("type") == "incident":
        publish = _fold_event(record, entry, bounds)
    elif "decision" in entry:
        publish = _fold_decision(record, entry, bounds)
    else:
        return record, False
    if isinstance(entry.get("time"), int | float):
        record["updated"] = entry["time"]
    _shrink(record, bounds)
    return record, publish


# ---------------------------------------------------------------- live, and from a file


class DecisionRecords:
    """The audit sink that keeps one record per incident and publishes it as it progresses.

    ``publish`` receives each updated record (a :class:`DecisionRecord`) after a transition to
    acting or later and after each action's outcome; the daemon gives it the audit file and
    topic. Thread-safe: the engine and the executor record from different threads.
    """

    def __init__(self, publish: Sequence[AuditSink] = (), bounds: RecordBounds = DEFAULT_BOUNDS) -> None:
        self.bounds = bounds
        self.publish = Audit(list(publish))
        self._records: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._publishing = threading.Lock()

    def publish_to(self, sinks: Iterable[AuditSink]) -> None:
        """Also publish updated records to ``sinks``."""
        self.publish.sinks.extend(sinks)

    def record(self, entry: Entry) -> None:
        """Fold one audit entry into its incident's record (its own records are ignored)."""
        if isinstance(entry, DecisionRecord):
            return
        data = entry.to_dict()
        incident = data.get("incident")
        if not incident:
            return
        self._lock.acquire()
        try:
            record, publish = fold(self._records.get(incident), data, self.bounds)
            if record is None:
                return
            self._records[incident] = record
            self._records.move_to_end(incident)
            while len(self._records) > self.bounds.max_incidents:
                self._records.popitem(last=False)
            if not (publish and self.publish.sinks):
                return
            out = DecisionRecord(copy.deepcopy(record))
            # published in the order folded (the last line of an incident in the file is its
            # newest record), without holding readers of /incidents up during a slow sink
            self._publishing.acquire()
        finally:
            self._lock.release()
        try:
            self.publish.record(out)
        finally:
            self._publishing.release()

    def get(self, incident: str) -> dict[str, Any] | None:
        """The record of ``incident`` (a copy), or None."""
        with self._lock:
            record = self._records.get(incident)
            return None if record is None else copy.deepcopy(record)

    def summaries(self, limit: int = 50) -> list[dict[str, Any]]:
        """:func:`summary` of up to ``limit`` records, the most recently opened first."""
        with self._lock:
            return [summary(r) for r in newest_first(self._records.values())[: max(0, limit)]]

    def latest(self, limit: int = 50) -> list[dict[str, Any]]:
        """Up to ``limit`` records, the most recently opened first (copies)."""
        with self._lock:
            records = newest_first(self._records.values())[: max(0, limit)]
            return [copy.deepcopy(dict(r)) for r in records]

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


def records_from_lines(
    lines: Iterable[str], bounds: RecordBounds = DEFAULT_BOUNDS
) -> dict[str, dict[str, Any]]:
    """Every incident's record from audit JSON lines (a file): the records published in it, with
    any later entries folded on top; incidents with entries but no record are folded from them.
    Lines that are not JSON objects are skipped. At most ``bounds.max_incidents`` are kept."""
    records: OrderedDict[str, dict[str, Any]] = OrderedDict()
    for line in lines:
        try:
            data = loads_json(line)
        except ValueError:
            continue
        if not isinstance(data, dict) or not isinstance(data.get("incident"), str):
            continue
        incident = data["incident"]
        record, _ = fold(records.get(incident), data, bounds)
        if record is not None:
            records[incident] = record
            records.move_to_end(incident)
            while len(records) > bounds.max_incidents:
                records.popitem(last=False)
    return dict(records)


def newest_first(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Records ordered by when they opened, newest first."""
    return sorted(records, key=lambda r: (r.get("opened") or 0.0, str(r.get("incident"))), reverse=True)


def summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record in a few fields: for lists."""
    actions = record.get("actions") or []
    signals = record.get("signals") or []
    return {
        "incident": record.get("incident"),
        "playbook": record.get("playbook"),
        "target": dict(record.get("target") or {}),
        "state": record.get("state"),
        "opened": record.get("opened"),
        "closed": record.get("closed"),
        "actions": [f"{a.get('action')} {a.get('status')}" for a in actions],
        "why": signals[-1].get("why") if signals else "",
    }


#: What an incident id may look like (``inc-`` and hex, a ``-N`` suffix; anything safe).
_INCIDENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
#: The most records one ``GET /incidents`` lists.
MAX_LIST = 200


def _json(status: int, body: object) -> Response:
    data = json.dumps(body, indent=1, sort_keys=True, default=str).encode() + b"\n"
    return Response(status, data, "application/json")


def incidents_route(records: DecisionRecords) -> GetRoute:
    """``GET /incidents[?limit=N]`` (summaries, newest first, at most :data:`MAX_LIST`) and
    ``GET /incidents/ID`` (one whole record)."""

    def handle(rest: str, query: str) -> Response:
        if not rest:
            raw = parse_qs(query).get("limit", ["50"])[-1]
            try:
                limit = int(raw)
            except ValueError:
                return _json(400, {"error": f"limit: expected an integer, got {raw[:40]!r}"})
            if not 1 <= limit <= MAX_LIST:
                return _json(400, {"error": f"limit: expected 1 to {MAX_LIST}, got {limit}"})
            return _json(200, {"incidents": records.summaries(limit)})
        if not _INCIDENT_ID.match(rest):
            return _json(400, {"error": f"not an incident id: {rest[:40]!r}"})
        record = records.get(rest)
        if record is None:
            return _json(404, {"error": f"no record of incident {rest} (records kept: {len(records)})"})
        return _json(200, record)

    return handle
