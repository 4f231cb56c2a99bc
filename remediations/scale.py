"""``scale``: set the replicas of a Deployment or StatefulSet, or raise its HPA's floor.

Exactly one way to say how many: ``replicas`` (absolute), ``by`` (relative), ``factor``
(relative, rounding up) or ``toForecast`` (``ceil(forecast x (1 + headroom) / capacity per pod)``,
the capacity measured by the forecast detector or given).
The result is clamped by ``minReplicas`` / ``maxReplicas`` and limited to ``maxStep`` away from
where it started, with the parameters' bounds and the guardrails' (:class:`~remediations.types.Limits`)
combined, the tighter winning. A forecast lowering an HPA's floor is the one change ``maxStep``
does not limit: it removes no pod itself, and the HPA's scale-down (its stabilisation window and
policies) paces the pods that go. An absolute ``replicas`` outside the bounds is refused rather than
quietly changed: it says the playbook contradicts itself.

Writes go through the ``scale`` subresource. A relative scale first records its starting point
on the workload (``aiops.dev/scale-origin``), so executing it again after a crash computes from
the same start instead of scaling twice; the key is then recorded in ``aiops.dev/executed-keys``.

When a HorizontalPodAutoscaler (autoscaling/v2) targets the workload, writing replicas would
fight it: the action raises the HPA's ``minReplicas`` instead (a predictive floor, never above
the HPA's ``maxReplicas``).

Every raise (of replicas, or of an HPA's floor) is recorded on the object it changed, in
``aiops.dev/capacity-raise``: the value before the first raise still outstanding, the value the
agent last set, and each incident holding a raise with the value it asked for.
:meth:`ScaleAction.restore` releases one incident's hold: the value drops to the highest hold
left, or back to the original when none is left, and stays where it is when someone changed it
since the agent set it. So two incidents raising one floor never undo each other. While a
corrective incident is open on the target (``Limits.scale_down`` false) a scale never goes down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, ClassVar, Literal, TypeGuard

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from remediations import state as notes
from remediations.base import BaseAction
from remediations.diff import render
from remediations.errors import ActionRefused
from remediations.kube import PatchType
from remediations.params import ActionParams, Duration
from remediations.types import ActionClass, ActionContext, ActionRequest, ActionResult, ActionStatus, Plan

SCALE_ORIGIN = notes.PREFIX + "scale-origin"
CAPACITY_RAISE = notes.PREFIX + "capacity-raise"
MAX_REPLICAS = 10_000
MAX_INT32 = 2**31 - 1
"""The most replicas a Kubernetes object holds (an int32)."""

Obj = dict[str, Any]


MEASURED: Literal["measured"] = "measured"
#: The least capacity per pod a playbook may fix: above 0 is not enough, a forecast divided by
#: 5e-324 is infinite. 1e-6 of the metric per pod keeps any forecast up to 1e300 finite.
MIN_CAPACITY = 1e-6


class ForecastTarget(BaseModel):
    """Replicas from a forecast: ``ceil(value x (1 + headroom) / capacity per pod)``, as a floor.

    The capacity per pod is measured (``capacityPerPod: measured``, the default): the forecast
    signal carries what one ready pod of the target serves at full utilisation, as the forecast
    detector measured it from demand, utilisation and ready replicas. Until it has a measurement
    the action uses ``fallbackCapacityPerPod``, or is refused when there is none. A number for
    ``capacityPerPod`` fixes the capacity and ignores the measurement.

    A forecast raises capacity above what the owner set and lowers only what it raised itself,
    never below the owner's value, and not before ``hold`` has passed since its last change; it
    changes nothing while the replicas the forecast needs (headroom included) are within
    ``tolerance`` of the current ones: the forecast's noise does not make the replicas flap, and it
    lowers only when that frees at least ``minLowering`` of them (an HPA's floor that the observed
    load holds up part-way: twice that). With
    ``lowerWithObserved`` (the default) it lowers only as far as the load observed over the last
    horizon (the signal's observed peak) allows too: forecast and observed load must agree that
    fewer replicas will do, as an HPA lowers only to the highest of its recent recommendations.
    An HPA's floor is lowered in one step, ``maxStep`` or not: the HPA paces the pods that go.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_by_name=False)

    value: float | None = Field(
        None,
        ge=0,
        description="the forecast (its upper bound), e.g. '{{ signal.value }}'; default: the signal's value",
    )
    capacity_per_pod: Annotated[float, Field(ge=MIN_CAPACITY)] | Literal["measured"] = Field(
        MEASURED,
        alias="capacityPerPod",
        description="how much of the forecast metric one pod serves at full utilisation: 'measured' "
        "(default) takes what the forecast detector measured for the target (its capacity "
        "parameter: demand / (ready replicas x CPU utilisation)); a number fixes it",
    )
    fallback_capacity_per_pod: float | None = Field(
        None,
        alias="fallbackCapacityPerPod",
        ge=MIN_CAPACITY,
        description="with capacityPerPod 'measured': the capacity per pod to use until a measurement "
        "exists; without it the action is refused until then",
    )
    headroom: float = Field(0.0, ge=0, le=10, description="extra capacity on top, as a fraction (0.2 = 20%)")
    tolerance: float = Field(
        0.1,
        ge=0,
        le=1,
        description="no change while the replicas the forecast needs (headroom included) are "
        "within this fraction of the current ones (the HPA's tolerance, 10 %)",
    )
    hold: Duration = Field(
        300.0,
        ge=0,
        le=86400,
        description="least time between a forecast's change of capacity and its lowering "
        "(default 5m, the HPA's scale-down stabilisation window)",
    )
    lower_with_observed: bool = Field(
        True,
        alias="lowerWithObserved",
        description="lower only as far as the load observed over the forecast's horizon allows "
        "too (the signal's observed peak, headroom included): fewer replicas only when forecast "
        "and observed load agree; false lowers on the forecast alone",
    )
    min_lowering: float = Field(
        0.2,
        alias="minLowering",
        ge=0,
        lt=1,
        description="lower only when that frees at least this fraction of the current replicas (or "
        "of the HPA's floor; twice it for an HPA's floor that the observed load holds up part-way): "
        "a forecast that decays slowly after a peak comes down in a few steps, not one replica "
        "per hold",
    )
    with_hpa: Literal["mean", "upper"] = Field(
        "mean",
        alias="withHpa",
        description="what an HPA's floor is sized on: the forecast's point value (mean: the HPA "
        "scales above the floor for what the forecast misses) or its upper bound (upper); a "
        "target without an HPA is always sized on the upper bound",
    )

    @field_validator("capacity_per_pod", mode="wrap")
    @classmethod
    def _measured_or_a_number(cls, value: object, handler: ValidatorFunctionWrapHandler) -> object:
        try:
            return handler(value)
        except ValidationError:  # one message, not one per member of the union
            msg = f"expected 'measured' or a number of at least {MIN_CAPACITY:g}, got {value!r}"
            raise ValueError(msg) from None

    @model_validator(mode="after")
    def _fallback_with_measured(self) -> ForecastTarget:
        if self.fallback_capacity_per_pod is not None and self.capacity_per_pod != MEASURED:
            msg = (
                "fallbackCapacityPerPod applies only with capacityPerPod 'measured' (a number is kept as is)"
            )
            raise ValueError(msg)
        return self

    def capacity(self, request: ActionRequest) -> tuple[float, str]:
        """The capacity per pod to size on, and where it came from (for the plan and the audit)."""
        if self.capacity_per_pod != MEASURED:
            return float(self.capacity_per_pod), f"{self.capacity_per_pod:g} per pod (capacityPerPod)"
        if request.signal.capacity is not None:
            return request.signal.capacity, f"{request.signal.capacity:.4g} per pod (measured)"
        if self.fallback_capacity_per_pod is not None:
            fallback = self.fallback_capacity_per_pod
            return fallback, f"{fallback:g} per pod (fallbackCapacityPerPod: not measured yet)"
        msg = (
            "scale toForecast: the capacity per pod of the target is not measured yet (the forecast "
            "signal carries no capacity_per_pod: configure the forecast detector's capacity, and "
            "let it see enough samples at moderate utilisation) and the playbook sets no "
            "toForecast.fallbackCapacityPerPod"
        )
        raise ActionRefused(msg)

    def describe_capacity(self) -> str:
        """The capacity per pod in plain words."""
        if self.capacity_per_pod != MEASURED:
            return f"{self.capacity_per_pod:g} per pod"
        if self.fallback_capacity_per_pod is not None:
            return f"the measured capacity per pod (until measured, {self.fallback_capacity_per_pod:g})"
        return "the measured capacity per pod"

    def sized_on(self, request: ActionRequest, *, hpa: bool) -> float | None:
        """The forecast to size on: ``value`` if set, the point forecast under an HPA, else the bound."""
        if self.value is not None:
            return self.value
        if hpa and self.with_hpa == "mean" and request.signal.mean is not None:
            return request.signal.mean
        return request.signal.value

    def need(self, forecast: float, capacity: float) -> float:
        """The replicas, not rounded, that serve ``forecast`` with the headroom, at ``capacity`` per pod."""
        return forecast * (1.0 + self.headroom) / capacity

    def replicas(self, forecast: float, capacity: float) -> int:
        """The replica count that serves ``forecast`` with the headroom, at ``capacity`` per pod."""
        need = self.need(forecast, capacity)
        if not math.isfinite(need):  # a measured capacity near 0, a forecast near the float limit
            msg = (
                f"scale toForecast: {forecast:g} x (1 + headroom {self.headroom:g}) / {capacity:g} per pod "
                "is not a finite number of replicas"
            )
            raise ActionRefused(msg)
        # Rounded before ceil so 2.0000000001 (float noise) does not become 3.
        return max(0, math.ceil(round(need, 9)))


class ScaleParams(ActionParams):
    """Parameters of ``scale``: exactly one of replicas, by, factor, toForecast; optional bounds."""

    action: ClassVar[str] = "scale"

    replicas: int | None = Field(None, ge=0, le=MAX_REPLICAS, description="set this many replicas")
    by: int | None = Field(None, ge=-1000, le=1000, description="add (or, if negative, remove) replicas")
    factor: float | None = Field(None, gt=0, le=100, description="multiply the replicas, rounding up")
    to_forecast: ForecastTarget | None = Field(
        None, alias="toForecast", description="replicas from a forecast and the capacity of one pod"
    )
    min_replicas: int | None = Field(
        None, alias="minReplicas", ge=0, le=MAX_REPLICAS, description="lower bound"
    )
    max_replicas: int | None = Field(
        None, alias="maxReplicas", ge=0, le=MAX_REPLICAS, description="upper bound"
    )
    max_step: int | None = Field(
        None,
        alias="maxStep",
        ge=1,
        le=MAX_REPLICAS,
        description="change the replicas by at most this much (not when a forecast lowers an HPA's floor)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ScaleParams:
        modes = [m for m, v in self._modes().items() if v is not None]
        if len(modes) != 1:
            found = ", ".join(modes) if modes else "none"
            msg = f"scale takes exactly one of replicas, by, factor, toForecast; found {found}"
            raise ValueError(msg)
        if self.by == 0:
            msg = "scale by 0 does nothing"
            raise ValueError(msg)
        low, high = self.min_replicas, self.max_replicas
        if low is not None and high is not None and low > high:
            msg = f"minReplicas ({low}) is greater than maxReplicas ({high})"
            raise ValueError(msg)
        if self.replicas is not None:
            if low is not None and self.replicas < low:
                msg = f"replicas ({self.replicas}) is below minReplicas ({low})"
                raise ValueError(msg)
            if high is not None and self.replicas > high:
                msg = f"replicas ({self.replicas}) is above maxReplicas ({high})"
                raise ValueError(msg)
        return self

    def _modes(self) -> dict[str, object]:
        return {
            "replicas": self.replicas,
            "by": self.by,
            "factor": self.factor,
            "toForecast": self.to_forecast,
        }

    @property
    def relative(self) -> bool:
        """Whether the count depends on where the workload starts (``by``, ``factor``)."""
        return self.by is not None or self.factor is not None

    def describe(self) -> str:
        """Plain words."""
        if self.replicas is not None:
            return f"scale to {self.replicas} replicas"
        if self.by is not None:
            plural = "s" if abs(self.by) != 1 else ""
            return f"{'add' if self.by > 0 else 'remove'} {abs(self.by)} replica{plural}"
        if self.factor is not None:
            return f"multiply the replicas by {self.factor:g}, rounding up"
        assert self.to_forecast is not None  # exactly one mode: checked above
        return f"scale to the forecast at {self.to_forecast.describe_capacity()}"


# ---------------------------------------------------------------- the decision, pure


@dataclass(frozen=True, slots=True)
class Decision:
    """How many replicas, from where, and which bound or step limit changed the number asked for."""

    current: int
    base: int
    requested: int
    desired: int
    notes: tuple[str, ...] = field(default=())
    sizing: str = ""
    """For a forecast: what it sized on (``forecast 1200 at 48.5 per pod (measured)``)."""

    def explain(self) -> str:
        """``4 (asked 9; clamped to maxReplicas 4)``."""
        if not self.notes:
            return str(self.desired)
        return f"{self.desired} (asked {self.requested}; {'; '.join(self.notes)})"


def bounds(params: ScaleParams, request: ActionRequest) -> tuple[int | None, int | None, int | None]:
    """``(min, max, maxStep)`` from the parameters and the request's limits; the tighter one wins."""
    limits = request.limits

    def tight(a: int | None, b: int | None, pick: Any) -> int | None:
        values = [v for v in (a, b) if v is not None]
        return pick(values) if values else None

    low = tight(params.min_replicas, limits.min_replicas, max)
    high = tight(params.max_replicas, limits.max_replicas, min)
    step = tight(params.max_step, limits.max_step, min)
    if low is not None and high is not None and low > high:
        msg = f"scale bounds contradict each other: minReplicas {low} > maxReplicas {high}"
        raise ActionRefused(msg)
    return low, high, step


def decide(
    params: ScaleParams,
    request: ActionRequest,
    current: int,
    base: int | None = None,
    record: Raise | None = None,
    now: float = 0.0,
    *,
    hpa: bool = False,
    running: int | None = None,
) -> Decision:
    """The replica count to set: from ``base`` (relative modes) or absolute, then bounds and maxStep.

    ``base`` is the recorded starting point of a relative scale (default: ``current``). The step
    limit applies against the base, so re-executing a relative scale gives the same number. A
    forecast (``toForecast``) lowers only what it raised (``record``), not before its hold; with
    ``hpa`` it sets an HPA's floor (sized as :meth:`ForecastTarget.sized_on` says), and
    ``running`` (the replicas the HPA runs) is what a raise of that floor must get past.
    """
    start = current if base is None else base
    sizing = ""
    if params.replicas is not None:
        requested = params.replicas
    elif params.by is not None:
        requested = max(0, start + params.by)
    elif params.factor is not None:
        requested = max(0, math.ceil(round(start * params.factor, 9)))
    else:
        assert params.to_forecast is not None  # exactly one mode: checked when validated
        requested, sizing = _from_forecast(params.to_forecast, request, current, hpa=hpa, running=running)
    low, high, step = bounds(params, request)
    if params.replicas is not None and (
        (low is not None and params.replicas < low) or (high is not None and params.replicas > high)
    ):
        msg = f"scale to {params.replicas} replicas violates the bounds [{low}, {high}]: refused, not clamped"
        raise ActionRefused(msg)
    desired, why = requested, []
    if high is not None and desired > high:
        desired = high
        why.append(f"clamped to maxReplicas {high}")
    if low is not None and desired < low:
        desired = low
        why.append(f"raised to minReplicas {low}")
    origin = start if params.relative else current
    if step is not None and abs(desired - origin) > step:
        if hpa and params.to_forecast is not None and desired < origin:
            # lowering an HPA's floor removes no pod itself: the HPA's scale-down paces them
            why.append(f"not limited to maxStep {step}: the HPA paces its own scale-down")
        else:
            desired = origin + step if desired > origin else origin - step
            why.append(f"limited to maxStep {step} from {origin}")
    if params.to_forecast is not None and desired < current:
        desired, note = _forecast_floor(params.to_forecast, request, current, desired, record, now)
        if note:
            why.append(note)
    if not request.limits.scale_down and desired < current:
        desired = current
        why.append("not scaled down: a corrective incident is open on the target")
    return Decision(current, start, requested, desired, tuple(why), sizing)


def _from_forecast(
    forecast: ForecastTarget, request: ActionRequest, current: int, *, hpa: bool, running: int | None
) -> tuple[int, str]:
    """The replicas a forecast asks for (before bounds and holds), and what it sized them on.

    No change within the tolerance; a raise only past what an HPA already runs (``running``); a
    lowering only as far as the load observed over the horizon allows too, with the tolerance
    kept as room so the next small rise does not raise it again, and only when it frees
    ``min_lowering`` of the replicas. An HPA's floor that the observed load holds up comes down
    part-way only when that frees twice as many: the HPA serves the load it sees, so the floor
    otherwise waits for the load to agree with the forecast and comes down once. "Holds up" is
    the observed load above the level the forecast would lower on, even where both round to the
    same replicas: forecast and load disagree until the load comes down too.
    """
    value = forecast.sized_on(request, hpa=hpa)
    if value is None or not math.isfinite(value) or value < 0:
        msg = "scale toForecast needs a forecast: set toForecast.value or send the signal's value"
        raise ActionRefused(msg)
    capacity, basis = forecast.capacity(request)
    sizing = f"forecast {value:.4g} at {basis}"
    requested = forecast.replicas(value, capacity)
    if abs(forecast.need(value, capacity) - current) <= forecast.tolerance * current:
        # within the tolerance (the HPA's: desired / current within 10 %): the forecast's noise
        # is not a reason to act
        return current, sizing
    if requested < current:
        lower_on = value / max(1.0 - forecast.tolerance, 1e-9)
        observed = request.signal.observed
        least, what = forecast.min_lowering, f"minLowering {forecast.min_lowering:g}"
        if forecast.lower_with_observed and observed is not None and observed > lower_on:
            lower_on = observed
            sizing += f"; observed up to {observed:.4g}"
            if hpa:
                # the HPA serves the load it sees: a floor lowered part-way to that load frees
                # little of what the HPA would not run anyway, and spends an action
                least, what = (
                    2 * least,
                    f"twice minLowering {forecast.min_lowering:g} (part-way, with an HPA)",
                )
        lowered = min(current, forecast.replicas(lower_on, capacity))
        if lowered < current and current - lowered < least * current:
            # each lowering is an action: one replica at a time is the budget spent on noise
            return current, f"{sizing}; {current} -> {lowered} frees less than {what}"
        return lowered, sizing
    if running is not None and requested <= running:
        # an HPA's floor below what the HPA runs: the replicas running already serve the forecast
        return current, f"{sizing}; the HPA runs {running}"
    return requested, sizing


def holder_of(request: ActionRequest) -> str:
    """Who holds a raise: the incident, or for a forecast the playbook (one hold, moved each time)."""
    if isinstance(request.params, ScaleParams) and request.params.to_forecast is not None:
        return f"forecast:{request.playbook}"
    return request.incident


def _forecast_floor(
    forecast: ForecastTarget,
    request: ActionRequest,
    current: int,
    desired: int,
    record: Raise | None,
    now: float,
) -> tuple[int, str]:
    """How far a forecast that needs fewer replicas may lower them: only what it raised."""
    holder = holder_of(request)
    if record is None or holder not in record.holders or record.set_to != current:
        return current, "the forecast needs fewer, but a forecast only lowers what it raised"
    if now - record.at < forecast.hold:
        return current, f"the forecast's raise is held until {record.at + forecast.hold:.0f} (hold)"
    others = [v for k, v in record.holders.items() if k != holder]
    floor = max([record.original, *others])
    if desired < floor:
        return floor, f"lowered no further than {floor} (the owner's value or another raise)"
    return desired, ""


# ---------------------------------------------------------------- raises and their release, pure


@dataclass(frozen=True, slots=True)
class Raise:
    """What the agent raised on one object: the value before, the value it set, who holds it."""

    original: int
    set_to: int
    holders: dict[str, int]
    at: float = 0.0
    """When the agent last changed the value."""

    def to_json(self) -> str:
        """The annotation's value."""
        return notes.dump_json(
            {"original": self.original, "set": self.set_to, "holders": self.holders, "at": self.at}
        )


def _count(value: object) -> TypeGuard[int]:
    """Whether ``value`` is a replica count the API could hold (an int32 of at least 0)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INT32


def raise_of(obj: Obj) -> Raise | None:
    """The raise recorded on ``obj``, or None (also for a record that does not parse, with a warning:
    a count the API could not hold, or a time that is not a finite number, is nobody's raise)."""
    data = notes.read_json(obj, CAPACITY_RAISE)
    if data is None:
        return None
    if not isinstance(data, dict):
        notes.unreadable(obj, CAPACITY_RAISE, "not an object")
        return None
    original, set_to, holders = data.get("original"), data.get("set"), data.get("holders")
    at = data.get("at", 0.0)
    if (
        not _count(original)
        or not _count(set_to)
        or not isinstance(holders, dict)
        or not all(_count(v) for v in holders.values())
        or not notes.finite_number(at)
    ):
        notes.unreadable(obj, CAPACITY_RAISE, "not a raise the agent records")
        return None
    holders_read = {str(k): int(v) for k, v in holders.items()}
    return Raise(original, set_to, holders_read, float(at))


def raised(record: Raise | None, incident: str, before: int, to: int, now: float = 0.0) -> Raise | None:
    """The record after ``incident`` moved the value from ``before`` to ``to`` (None: back to the
    owner's value, nothing held)."""
    if record is None or record.set_to != before:
        # first raise, or someone changed the value since the agent set it: start from theirs
        return Raise(before, to, {incident: to}, now) if to > before else None
    holders = {**record.holders, incident: to}
    if to <= record.original and len(holders) == 1:
        return None
    return Raise(record.original, to, holders, now)


@dataclass(frozen=True, slots=True)
class Release:
    """What releasing one incident's hold does: the value to write (None: keep) and the record after."""

    value: int | None
    record: Raise | None
    why: str
    changed_by_someone: bool = False


def release(record: Raise | None, incident: str, current: int) -> Release | None:
    """Release ``incident``'s hold; None when it holds nothing here."""
    if record is None or incident not in record.holders:
        return None
    if current != record.set_to:
        why = f"it was changed to {current} after the agent set {record.set_to}; left as it is"
        return Release(None, None, why, changed_by_someone=True)
    rest = {k: v for k, v in record.holders.items() if k != incident}
    if not rest:
        value = record.original
        return Release(value if value != current else None, None, f"back to {value}, as before the raise")
    value = max(record.original, *rest.values())
    others = ", ".join(sorted(rest))
    if value >= current:
        return Release(
            None, Raise(record.original, current, rest, record.at), f"kept at {current}: held by {others}"
        )
    return Release(
        value, Raise(record.original, value, rest, record.at), f"down to {value}: still held by {others}"
    )


def within(done: Release | None, low: int | None, high: int, current: int) -> Release | None:
    """``done`` with the value it writes kept within the bounds: a record read back from the object
    says what the value was before the raise, and the bounds hold whatever it says."""
    if done is None or done.value is None:
        return done
    value = min(max(done.value, low if low is not None else 0), high)
    if value == done.value:
        return done
    record = None if done.record is None else replace(done.record, set_to=value)
    why = f"{done.why}; kept within the bounds at {value}"
    return replace(done, value=None if value == current else value, record=record, why=why)


# ---------------------------------------------------------------- the action


def targeting_hpa(objects: list[Obj], kind: str, name: str) -> Obj | None:
    """The HPA (autoscaling/v2) among ``objects`` whose scaleTargetRef is ``kind/name`` (apps group)."""
    for hpa in sorted(objects, key=lambda h: str((h.get("metadata") or {}).get("name"))):
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        group = str(ref.get("apiVersion") or "apps/v1").split("/")[0]
        if ref.get("kind") == kind and ref.get("name") == name and group in {"apps", "extensions"}:
            return hpa
    return None


def _replicas_of(scale: Obj) -> int:
    return int((scale.get("spec") or {}).get("replicas") or 0)


def _min_of(hpa: Obj) -> int:
    return int((hpa.get("spec") or {}).get("minReplicas") or 1)


def _max_of(hpa: Obj) -> int:
    return int((hpa.get("spec") or {}).get("maxReplicas") or 1)


def _sizing(sizing: str) -> dict[str, str]:
    """``{"sizing": ...}`` for a forecast's decision (the capacity it used), else nothing."""
    return {"sizing": sizing} if sizing else {}


def _sized(sizing: str) -> str:
    """``"; <sizing>"`` to end a plan's or result's text with, or nothing."""
    return f"; {sizing}" if sizing else ""


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


class ScaleAction(BaseAction[ScaleParams]):
    """Scale a Deployment or StatefulSet, or raise the floor of the HPA that scales it."""

    name: ClassVar[str] = "scale"
    params_model: ClassVar[type[ActionParams]] = ScaleParams
    target_kinds: ClassVar[frozenset[str]] = frozenset({"Deployment", "StatefulSet"})
    action_class: ClassVar[ActionClass] = ActionClass.CAPACITY

    # ------------------------------------------------------------ reading

    def _hpa(self, ctx: ActionContext) -> Obj | None:
        target = ctx.target
        hpas = ctx.kube.list_objects("HorizontalPodAutoscaler", target.namespace)
        return targeting_hpa(hpas, target.kind, target.name)

    def _origin(self, ctx: ActionContext, workload: Obj) -> int | None:
        recorded = notes.read_json(workload, SCALE_ORIGIN)
        if isinstance(recorded, dict) and recorded.get("key") == notes.stored_key(ctx.request.key):
            replicas = recorded.get("replicas")
            if isinstance(replicas, int) and replicas >= 0:
                return replicas
        return None

    def _floor(self, ctx: ActionContext, hpa: Obj, decision: Decision) -> tuple[int, tuple[str, ...]]:
        ceiling = _max_of(hpa)
        if decision.desired > ceiling:
            return ceiling, (*decision.notes, f"capped at the HPA's maxReplicas {ceiling}")
        return decision.desired, decision.notes

    # ------------------------------------------------------------ plan

    def _plan(self, ctx: ActionContext) -> Plan:
        target, params = ctx.target, self.params(ctx)
        workload = self.read_target(ctx)
        if notes.was_executed(workload, ctx.request.key):
            return Plan(
                self.name, target, f"nothing to do: {ctx.request.key} already executed", changes=False
            )
        hpa = self._hpa(ctx)
        if hpa is not None and notes.was_executed(hpa, ctx.request.key):
            return Plan(
                self.name, target, f"nothing to do: {ctx.request.key} already executed", changes=False
            )
        current = _replicas_of(ctx.kube.get_scale(target.kind, target.namespace, target.name))
        if hpa is not None and params.to_forecast is not None:
            # as executed: the forecast is judged against the HPA's floor, which it moves
            decision = decide(
                params,
                ctx.request,
                _min_of(hpa),
                None,
                raise_of(hpa),
                ctx.clock.now(),
                hpa=True,
                running=current,
            )
        else:
            origin = self._origin(ctx, workload)
            decision = decide(params, ctx.request, current, origin, raise_of(workload), ctx.clock.now())
        details: dict[str, Any] = {
            "current": current,
            "requested": decision.requested,
            "desired": decision.desired,
            "notes": list(decision.notes),
            **_sizing(decision.sizing),
        }
        sized = _sized(decision.sizing)
        if hpa is not None:
            floor, why = self._floor(ctx, hpa, decision)
            now_min = _min_of(hpa)
            details.update({"hpa": _name(hpa), "floor": floor, "minReplicas": now_min})
            title = f"HorizontalPodAutoscaler {target.namespace}/{_name(hpa)}"
            if floor == now_min or (floor < now_min and params.to_forecast is None):
                summary = (
                    f"nothing to do: the HPA {_name(hpa)} already keeps at least {now_min} replicas{sized}"
                )
                return Plan(self.name, target, summary, changes=False, details=details)
            verb = "raise" if floor > now_min else "lower"
            summary = (
                f"{verb} the floor of HPA {_name(hpa)} (which scales {target}) from {now_min} to {floor}"
                + (f" ({'; '.join(why)})" if why else "")
                + sized
            )
            diff = render(title, {"spec": {"minReplicas": now_min}}, {"spec": {"minReplicas": floor}})
            return Plan(self.name, target, summary, diff, details=details)
        if decision.desired == current and origin is not None:
            # written before a restart, not yet recorded: executing records the key as executed
            summary = f"record {ctx.request.key} as executed: {target} already has {current} replicas"
            return Plan(self.name, target, summary, details=details)
        if decision.desired == current:
            summary = f"nothing to do: {target} already has {current} replicas{sized}"
            return Plan(self.name, target, summary, changes=False, details=details)
        summary = f"scale {target} from {current} to {decision.explain()} replicas{sized}"
        diff = render(
            f"{target.kind} {target.namespace}/{target.name}",
            {"spec": {"replicas": current}},
            {"spec": {"replicas": decision.desired}},
        )
        return Plan(self.name, target, summary, diff, details=details)

    # ------------------------------------------------------------ execute

    def _execute(self, ctx: ActionContext) -> ActionResult:
        workload = self.read_target(ctx)
        key = ctx.request.key
        if notes.was_executed(workload, key):
            return self.result(ctx, ActionStatus.NOOP, f"already executed: {key}")
        hpa = self._hpa(ctx)
        if hpa is not None:
            return self._raise_floor(ctx, workload)
        return self._scale(ctx, workload)

    def _scale(self, ctx: ActionContext, workload: Obj) -> ActionResult:
        target, params, kube, key = ctx.target, self.params(ctx), ctx.kube, ctx.request.key
        base = self._origin(ctx, workload)
        if params.relative and base is None:
            # Record where a relative scale starts before writing it: a re-execution after a crash
            # then computes from the same start instead of adding `by` twice.
            def note_origin(current: Obj) -> Obj | None:
                if notes.was_executed(current, key) or self._origin(ctx, current) is not None:
                    return None
                scale = kube.get_scale(target.kind, target.namespace, target.name)
                origin = {"key": notes.stored_key(key), "replicas": _replicas_of(scale)}
                return {
                    "metadata": {
                        "resourceVersion": notes.resource_version(current),
                        "annotations": {SCALE_ORIGIN: notes.dump_json(origin)},
                    }
                }

            workload, _ = kube.read_modify_write(
                lambda: self.read_target(ctx),
                note_origin,
                lambda _, body: kube.patch(target.kind, target.namespace, target.name, body, PatchType.MERGE),
            )
            if notes.was_executed(workload, key):
                return self.result(ctx, ActionStatus.NOOP, f"already executed: {key}")
            workload = self.read_target(ctx)
            base = self._origin(ctx, workload)
        decisions: list[Decision] = []

        now = ctx.clock.now()
        held_before = raise_of(workload)

        def resize(scale: Obj) -> Obj | None:
            decision = decide(params, ctx.request, _replicas_of(scale), base, held_before, now)
            decisions.append(decision)
            if decision.desired == decision.current:
                return None
            return {
                "metadata": {"resourceVersion": notes.resource_version(scale)},
                "spec": {"replicas": decision.desired},
            }

        _, written = kube.read_modify_write(
            lambda: kube.get_scale(target.kind, target.namespace, target.name),
            resize,
            lambda _, body: kube.patch_scale(target.kind, target.namespace, target.name, body),
        )
        decision = decisions[-1]
        details = {
            "from": decision.current,
            "to": decision.desired,
            "requested": decision.requested,
            "notes": list(decision.notes),
            **_sizing(decision.sizing),
        }
        if written is None and base is None:
            message = f"{target} already has {decision.current} replicas"
            return self.result(ctx, ActionStatus.NOOP, message, details=details)

        def record(current: Obj) -> Obj:
            changes: dict[str, str | None] = {SCALE_ORIGIN: None}
            if written is not None:
                held = raise_of(current)
                holder = holder_of(ctx.request)
                after: Raise | None
                if decision.desired > decision.current or (held is not None and holder in held.holders):
                    after = raised(held, holder, decision.current, decision.desired, now)
                elif held is not None:  # the agent lowered it: what it set is still the agent's
                    after = Raise(held.original, decision.desired, held.holders, now)
                else:
                    after = None
                if held is not None or after is not None:
                    changes[CAPACITY_RAISE] = None if after is None else after.to_json()
            return notes.record_key_patch(current, key, changes)

        workload, _ = kube.read_modify_write(
            lambda: self.read_target(ctx),
            record,
            lambda _, body: kube.patch(target.kind, target.namespace, target.name, body, PatchType.MERGE),
        )
        diff = render(
            f"{target.kind} {target.namespace}/{target.name}",
            {"spec": {"replicas": decision.current}},
            {"spec": {"replicas": decision.desired}},
        )
        if written is None:
            # A relative scale that had been written before a crash: now recorded as done.
            message = f"{target} already has {decision.current} replicas; recorded {key} as executed"
            return self.result(ctx, ActionStatus.NOOP, message, details=details)
        message = f"scaled {target} from {decision.current} to {decision.explain()} replicas"
        message += _sized(decision.sizing)
        details["event"] = self.event(ctx, workload, "AiopsScaled", message)
        return self.result(ctx, ActionStatus.EXECUTED, message, diff=diff, details=details)

    def _raise_floor(self, ctx: ActionContext, workload: Obj) -> ActionResult:
        target, params, kube, key = ctx.target, self.params(ctx), ctx.kube, ctx.request.key
        current = _replicas_of(kube.get_scale(target.kind, target.namespace, target.name))
        base = self._origin(ctx, workload)
        outcome: dict[str, Any] = {}

        def read_hpa() -> Obj:
            hpa = self._hpa(ctx)
            if hpa is None:
                msg = f"the HPA that scaled {target} is gone"
                raise ActionRefused(msg)
            return hpa

        now = ctx.clock.now()

        def raise_min(hpa: Obj) -> Obj | None:
            if notes.was_executed(hpa, key):
                outcome.update(done=True)
                return None
            now_min = _min_of(hpa)
            if params.to_forecast is not None:
                # the HPA's floor is the forecast's knob: the forecast is judged against the floor
                # (not the replicas the HPA runs above it), and lowers only as far as it raised it
                decision = decide(
                    params, ctx.request, now_min, None, raise_of(hpa), now, hpa=True, running=current
                )
            else:
                decision = decide(params, ctx.request, current, base)
            floor, why = self._floor(ctx, hpa, decision)
            outcome.update(
                hpa=_name(hpa),
                floor=floor,
                before=now_min,
                notes=list(why),
                done=False,
                **_sizing(decision.sizing),
            )
            if floor == now_min or (floor < now_min and params.to_forecast is None):
                return None
            held = raised(raise_of(hpa), holder_of(ctx.request), now_min, floor, now)
            body = notes.record_key_patch(
                hpa, key, {CAPACITY_RAISE: None if held is None else held.to_json()}
            )
            body["spec"] = {"minReplicas": floor}
            return body

        _, written = kube.read_modify_write(
            read_hpa,
            raise_min,
            lambda current_hpa, body: kube.patch(
                "HorizontalPodAutoscaler", target.namespace, _name(current_hpa), body, PatchType.MERGE
            ),
        )
        if outcome.get("done"):
            return self.result(ctx, ActionStatus.NOOP, f"already executed: {key}")
        name, floor, before = outcome["hpa"], outcome["floor"], outcome["before"]
        sizing = str(outcome.get("sizing", ""))
        details = {
            "hpa": name,
            "from": before,
            "to": floor,
            "replicas": current,
            "notes": outcome["notes"],
            **_sizing(sizing),
        }
        diff = render(
            f"HorizontalPodAutoscaler {target.namespace}/{name}",
            {"spec": {"minReplicas": before}},
            {"spec": {"minReplicas": floor}},
        )
        if written is None:
            message = f"the HPA {name} already keeps at least {before} replicas of {target}; left as is"
            message += _sized(sizing)
            return self.result(ctx, ActionStatus.NOOP, message, details=details)
        verb = "raised" if floor > before else "lowered"
        message = f"{verb} the floor of HPA {name} for {target} from {before} to {floor} replicas"
        if outcome["notes"]:
            message += f" ({'; '.join(outcome['notes'])})"
        message += _sized(sizing)
        details["event"] = self.event(ctx, workload, "AiopsScaleFloorRaised", message)
        return self.result(ctx, ActionStatus.EXECUTED, message, diff=diff, details=details)

    # ------------------------------------------------------------ restore

    def restore(self, ctx: ActionContext) -> ActionResult:
        """Release what the request's incident raised (when it resolves); idempotent.

        The replicas (or the HPA's floor) go down to the highest raise another incident still
        holds, or back to the value before the first raise. If someone changed the value since the
        agent set it, their value stays and only the agent's record is removed (``skipped``).
        """
        try:
            self.check(ctx)
            return self._restore(ctx)
        except Exception as error:  # same contract as execute: failures are results
            return self.failure(ctx, error)

    def _restore(self, ctx: ActionContext) -> ActionResult:
        target, kube, incident = ctx.target, ctx.kube, ctx.request.incident
        hpa = self._hpa(ctx)
        if hpa is not None and raise_of(hpa) is not None:
            kind, name, what = "HorizontalPodAutoscaler", _name(hpa), f"the floor of HPA {_name(hpa)}"
            read: Any = lambda: kube.get(kind, target.namespace, name)  # noqa: E731
            value_of: Any = _min_of
        else:
            kind, name, what = target.kind, target.name, f"the replicas of {target}"
            read = lambda: self.read_target(ctx)  # noqa: E731

            def value_of(_: Obj) -> int:
                return _replicas_of(kube.get_scale(target.kind, target.namespace, target.name))

        low, high, _ = bounds(self.params(ctx), ctx.request)

        def releasing(current: Obj) -> Release | None:
            ceiling = _max_of(current) if kind == "HorizontalPodAutoscaler" else None
            top = min(v for v in (high, ceiling, MAX_INT32) if v is not None)
            value = value_of(current)
            return within(release(raise_of(current), incident, value), low, top, value)

        obj = read()
        plan = releasing(obj)
        if plan is None:
            return self.result(ctx, ActionStatus.NOOP, f"{incident} holds no raise of {what}")
        title = f"{kind} {target.namespace}/{name}"
        field_name = "minReplicas" if kind == "HorizontalPodAutoscaler" else "replicas"
        before = value_of(obj)
        diff = (
            render(title, {"spec": {field_name: before}}, {"spec": {field_name: plan.value}})
            if plan.value is not None
            else ""
        )
        if ctx.request.dry_run:
            return self.result(ctx, ActionStatus.DRY_RUN, f"dry run: release {what}: {plan.why}", diff=diff)
        outcome: dict[str, Release] = {}

        def put_back(current: Obj) -> Obj | None:
            now = releasing(current)
            if now is None:
                return None
            outcome["release"] = now
            annotation = None if now.record is None else now.record.to_json()
            body: Obj = {
                "metadata": {
                    "resourceVersion": notes.resource_version(current),
                    "annotations": {CAPACITY_RAISE: annotation},
                }
            }
            if now.value is not None and kind == "HorizontalPodAutoscaler":
                body["spec"] = {"minReplicas": now.value}
            return body

        _, written = kube.read_modify_write(
            read,
            put_back,
            lambda _, body: kube.patch(kind, target.namespace, name, body, PatchType.MERGE),
        )
        done = outcome.get("release")
        if written is None or done is None:
            return self.result(ctx, ActionStatus.NOOP, f"{incident} holds no raise of {what}")
        if done.value is not None and kind != "HorizontalPodAutoscaler":
            kube.patch_scale(target.kind, target.namespace, target.name, {"spec": {"replicas": done.value}})
        details = {"kind": kind, "name": name, "from": before, "to": done.value}
        if done.changed_by_someone:
            message = f"left {what} at {before}: {done.why}; removed the agent's record only"
            return self.result(ctx, ActionStatus.SKIPPED, message, details=details)
        if done.value is None:
            return self.result(ctx, ActionStatus.NOOP, f"{what}: {done.why}", details=details)
        message = f"restored {what} from {before} to {done.value} ({done.why})"
        details["event"] = self.event(ctx, self.read_target(ctx), "AiopsScaleRestored", message)
        return self.result(ctx, ActionStatus.EXECUTED, message, diff=diff, details=details)
