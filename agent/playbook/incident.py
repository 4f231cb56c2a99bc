"""One incident's working state, and its hand-over form: what another replica needs to go on with it.

:class:`Incident` is the playbook engine's mutable record of one open incident. :func:`freeze`
turns it into plain JSON data (version :data:`VERSION`) and :func:`thaw` builds it again on
another replica, against that replica's playbooks: the incident keeps its id, its ``for:``
window (``startedAt``), the steps done and the one next, its deadlines (``actedAt``,
``retryAt``, the alerts' notification times) and the series verification waits on. An entry of
another version, one whose playbook is gone or was changed since, or one that does not hold
together is refused with a :class:`HandoverError` naming what is wrong.

What is not carried: the samples counted per series (those counts are the detecting replica's;
the new owner counts fresh samples from the hand-over) and the ``when`` values of the record
(checked again before acting).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.playbook.events import IncidentState
from agent.playbook.guardrails import ALERTS, SIGNALS, EffectiveGuardrails, namespace_closed
from agent.playbook.loader import LoadedPlaybook, PlaybookSet
from agent.playbook.templating import TemplateError
from detectors.series import SeriesKey
from detectors.signal import Signal
from remediations.state import finite_number
from remediations.types import ActionClass, Target

#: A firing alert not re-notified for this long counts as resolved (Alertmanager re-sends firing
#: alerts every repeat_interval, 4h by default; three missed repeats mean the resolve was lost).
ALERT_STALE_AFTER = 12 * 3600.0
#: The hand-over form's version; entries of any other are refused.
VERSION = 1
#: Most series (and alerts) one handed-over incident carries; the rest are left out.
MAX_SERIES = 1000
_PHASES = frozenset({"actions", "onFailure"})


class HandoverError(ValueError):
    """A handed-over incident that cannot be taken in: the message says what is wrong."""


@dataclass(slots=True, eq=False)
class Incident:
    """One incident's working state (mutable; the engine publishes snapshots, not these)."""

    id: str
    playbook: LoadedPlaybook
    guardrails: EffectiveGuardrails
    target: Target
    state: IncidentState
    started_at: float
    signal: Signal
    last_point: float | None = None  # clock time of the last matching non-alert signal
    alerts: dict[str, float] = field(default_factory=dict)  # firing alert fingerprint -> last notified
    cleared_at: float | None = None  # when the last active alert resolved
    signals: int = 0
    held: str | None = None
    retry_at: float | None = None
    acted_at: float | None = None
    phase: str = "actions"
    step_index: int = 0
    waiting_key: str | None = None
    cls: ActionClass = ActionClass.CORRECTIVE
    source: str = SIGNALS  # where the evidence came from: its own budgets and slots
    series: dict[SeriesKey, int] = field(default_factory=dict)  # fired series -> samples at last match
    fired_at: float | None = None  # when it reached firing (the target's incident history)
    acting_since: float | None = None
    raised: bool = False  # a scale step executed: released when it resolves
    remediated: bool = False  # a workload step ran: the cooldown started
    when_checked: list[dict[str, Any]] = field(default_factory=list)  # the `when` values, for the record
    origin: str | None = None  # the signals partition its signals come from (decisions by topic)

    def condition_last(self, now: float) -> float:
        """The last time the condition was seen to hold (``now`` while an alert is firing)."""
        for fp, notified in list(self.alerts.items()):
            if now - notified >= ALERT_STALE_AFTER:
                del self.alerts[fp]
                self.cleared_at = max(self.cleared_at or -math.inf, notified + ALERT_STALE_AFTER)
        if self.alerts:
            return now
        return max(self.last_point or -math.inf, self.cleared_at or -math.inf, self.started_at)

    def lapsed(self, now: float) -> bool:
        """Whether the condition has been silent for ``maxGap`` or longer."""
        return now - self.condition_last(now) >= self.playbook.model.spec.trigger.max_gap

    def snapshot(self) -> dict[str, object]:
        """A JSON-ready view."""
        return {
            "id": self.id,
            "playbook": self.playbook.name,
            "target": self.target.to_dict(),
            "state": self.state.value,
            "startedAt": self.started_at,
            "signals": self.signals,
            "heldBy": self.held,
            "actedAt": self.acted_at,
            "class": self.cls.value,
        }


def definition(playbook: LoadedPlaybook) -> str:
    """A digest of the playbook's definition: an incident goes on only under the one it started with."""
    return hashlib.sha256(playbook.model.model_dump_json().encode()).hexdigest()[:16]


def freeze(inc: Incident) -> dict[str, Any]:
    """``inc`` as plain JSON data, for another replica's :func:`thaw`."""
    return {
        "v": VERSION,
        "id": inc.id,
        "playbook": inc.playbook.name,
        "definition": definition(inc.playbook),
        "target": inc.target.to_dict(),
        "state": inc.state.value,
        "startedAt": inc.started_at,
        "signal": inc.signal.to_dict(),
        "lastPoint": inc.last_point,
        "alerts": dict(list(inc.alerts.items())[:MAX_SERIES]),
        "clearedAt": inc.cleared_at,
        "signals": inc.signals,
        "held": inc.held,
        "retryAt": inc.retry_at,
        "actedAt": inc.acted_at,
        "phase": inc.phase,
        "stepIndex": inc.step_index,
        "waitingKey": inc.waiting_key,
        "source": inc.source,
        "series": [[k.name, k.label_dict] for k in list(inc.series)[:MAX_SERIES]],
        "firedAt": inc.fired_at,
        "actingSince": inc.acting_since,
        "raised": inc.raised,
        "remediated": inc.remediated,
        "origin": inc.origin,
    }


def thaw(
    data: object, playbooks: PlaybookSet, guardrails: Mapping[str, EffectiveGuardrails], cls: ActionClass
) -> Incident:
    """The incident :func:`freeze` wrote, under this replica's playbook of the same definition;
    ``cls`` is that playbook's action class. HandoverError naming the field that is wrong."""
    if not isinstance(data, dict):
        raise HandoverError(f"an incident must be a JSON object, got {type(data).__name__}")
    if data.get("v") != VERSION:
        raise HandoverError(f"version {data.get('v')!r} is not supported (this replica reads {VERSION})")
    ident = _text(data, "id")
    name = _text(data, "playbook")
    playbook = playbooks.get(name)
    if playbook is None:
        raise HandoverError(f"incident {ident}: playbook {name!r} is not loaded here")
    if data.get("definition") != definition(playbook):
        raise HandoverError(f"incident {ident}: playbook {name!r} was changed since it started")
    try:
        raw_target = data.get("target")
        if not isinstance(raw_target, dict):
            raise HandoverError("field 'target' must be an object")
        target = Target(
            str(raw_target.get("kind")), str(raw_target.get("namespace")), str(raw_target.get("name"))
        )
        state = IncidentState(str(data.get("state")))
        signal = Signal.from_dict(data.get("signal"))
    except ValueError as exc:
        raise HandoverError(f"incident {ident}: {exc}") from exc
    _check_target(ident, playbook, guardrails[name], target, signal)
    phase = _text(data, "phase")
    if phase not in _PHASES:
        raise HandoverError(
            f"incident {ident}: field 'phase' must be one of {sorted(_PHASES)}, got {phase!r}"
        )
    source = _text(data, "source")
    if source not in {SIGNALS, ALERTS}:
        raise HandoverError(f"incident {ident}: field 'source' must be {SIGNALS!r} or {ALERTS!r}")
    alerts = data.get("alerts")
    if not isinstance(alerts, dict) or not all(finite_number(v) for v in alerts.values()):
        raise HandoverError(f"incident {ident}: field 'alerts' must be an object of times")
    series = data.get("series")
    if not isinstance(series, list) or len(series) > MAX_SERIES:
        raise HandoverError(f"incident {ident}: field 'series' must be a list of at most {MAX_SERIES}")
    keys: dict[SeriesKey, int] = {}
    for item in series:
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and isinstance(item[1], dict)
        ):
            raise HandoverError(f"incident {ident}: field 'series' holds {item!r}, not [metric, labels]")
        keys[SeriesKey.of(item[0], {str(k): str(v) for k, v in item[1].items()})] = 0
    step = data.get("stepIndex")
    count = data.get("signals")
    if not (isinstance(step, int) and 0 <= step < 1000) or not (isinstance(count, int) and count >= 0):
        raise HandoverError(f"incident {ident}: fields 'stepIndex' and 'signals' must be small counts")
    waiting, held, origin = data.get("waitingKey"), data.get("held"), data.get("origin")
    if not all(v is None or isinstance(v, str) for v in (waiting, held, origin)):
        raise HandoverError(f"incident {ident}: fields 'waitingKey', 'held' and 'origin' must be strings")
    return Incident(
        id=ident,
        playbook=playbook,
        guardrails=guardrails[name],
        target=target,
        state=state,
        started_at=_time(data, "startedAt", ident, required=True) or 0.0,
        signal=signal,
        last_point=_time(data, "lastPoint", ident),
        alerts={str(k): float(v) for k, v in alerts.items()},
        cleared_at=_time(data, "clearedAt", ident),
        signals=count,
        held=held,
        retry_at=_time(data, "retryAt", ident),
        acted_at=_time(data, "actedAt", ident),
        phase=phase,
        step_index=step,
        waiting_key=waiting,
        cls=cls,
        source=source,
        series=keys,
        fired_at=_time(data, "firedAt", ident),
        acting_since=_time(data, "actingSince", ident),
        raised=data.get("raised") is True,
        remediated=data.get("remediated") is True,
        origin=origin,
    )


def _check_target(
    ident: str, playbook: LoadedPlaybook, g: EffectiveGuardrails, target: Target, signal: Signal
) -> None:
    """HandoverError unless ``target`` is what ``playbook`` names for ``signal`` and the guardrails
    let the agent act there: a record cannot make the engine act where a signal could not."""
    try:
        expected = playbook.resolve_target(signal)
    except TemplateError as exc:
        raise HandoverError(f"incident {ident}: its signal names no target: {exc}") from exc
    if target != expected:
        msg = (
            f"incident {ident}: target {target} is not {expected}, the one its playbook names for its signal"
        )
        raise HandoverError(msg)
    closed = namespace_closed(g, target.namespace)
    if closed is not None:
        raise HandoverError(f"incident {ident}: {closed.reason}")


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise HandoverError(f"field {name!r} must be a non-empty string, got {value!r}")
    return value


def _time(data: Mapping[str, Any], name: str, ident: str, *, required: bool = False) -> float | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not finite_number(value):
        raise HandoverError(f"incident {ident}: field {name!r} must be a time in seconds, got {value!r}")
    return float(value)
