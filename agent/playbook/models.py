"""The playbook format, as pydantic models: the single source of validation and of the JSON Schema.

```yaml
apiVersion: aiops/v1
kind: Playbook
metadata: {name: rollback-on-error-spike}
spec:
  priority: 100
  trigger:
    signal: anomaly                 # or a list: [anomaly, threshold]
    metric: http_requests_error_ratio
    match: {namespace: shop, deployment: "checkout|cart"}
    minScore: 0.99
    for: 2m
  target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
  when:
    - rolloutWithin: 30m
  actions:
    - rollback: {}
    - notify: {webhookEnv: OPS_WEBHOOK, message: "rolled back {{ target.name }}"}
  verify: {clears: true, within: 10m, quiet: 2m}
  onFailure:
    - notify: {webhookEnv: OPS_WEBHOOK, message: "rollback of {{ target.name }} did not help"}
  guardrails: {cooldown: 30m, maxPerHour: 2, dryRun: false, approval: none}
```

Models check what one document can check alone. What needs more context (templates against
their scope, actions against the target kind, names across files) is checked by the loader, which
also turns every error into a located one.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    model_validator,
)

from agent.playbook.actions import (
    ACTIONS,
    ActionParams,
    DeletePodParams,
    NotifyParams,
    RestartParams,
    RetrainParams,
    RollbackParams,
    ScaleParams,
)
from agent.playbook.fields import Duration, LabelName, PositiveDuration, Regex
from agent.playbook.guardrails import PlaybookGuardrails, format_seconds
from detectors.signal import SignalKind

API_VERSION = "aiops/v1"

#: Kinds of object a playbook can target.
TargetKind = Literal["Deployment", "StatefulSet", "DaemonSet", "CronJob", "Pod"]

_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Metadata(_Model):
    """Who the playbook is."""

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=_NAME_PATTERN,
        description="unique across all loaded playbooks; lowercase letters, digits and '-'",
    )
    description: str | None = Field(None, max_length=2000, description="what the playbook is for")


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


_KINDS = [k.value for k in SignalKind]

SignalKinds = Annotated[
    list[SignalKind],
    BeforeValidator(_as_list),
    Field(min_length=1),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "enum": _KINDS},
                {"type": "array", "items": {"type": "string", "enum": _KINDS}, "minItems": 1},
            ],
            "description": "the kind of signal, or a list of kinds: " + " | ".join(_KINDS),
        }
    ),
]


class Trigger(_Model):
    """Which signals open an incident, and how long they must last."""

    signal: SignalKinds
    metric: Regex | None = Field(
        None, description="the metric name, or a regular expression matching whole names; default: any"
    )
    match: dict[LabelName, Regex] = Field(
        default_factory=dict,
        description="label matchers: each label's value must fully match the regular expression "
        "(a missing label matches as the empty string)",
    )
    min_score: float = Field(0.0, alias="minScore", ge=0.0, le=1.0, description="least signal score")
    for_: Duration = Field(
        0.0, alias="for", description="how long matching signals must last before the incident fires"
    )
    max_gap: PositiveDuration = Field(
        300.0,
        alias="maxGap",
        description="the longest silence between matching signals that still counts as one "
        "condition; a longer one drops the incident (default 5m)",
    )


class Target(_Model):
    """The object the actions act on, resolved from each signal."""

    kind: TargetKind
    namespace: str = Field(
        min_length=1, max_length=253, description='a namespace, or a template like "{{ labels.namespace }}"'
    )
    name: str = Field(
        min_length=1,
        max_length=253,
        description='an object name, or a template like "{{ labels.deployment }}"',
    )


class SignalAbsence(_Model):
    """No signal of ``signal`` kind on a metric matching ``metric`` pointed at the target (by the
    playbook's own target template) within ``within`` before now."""

    signal: SignalKind = Field(description="the kind of signal that must be absent")
    metric: Regex = Field(description="the metric name, or a regular expression matching whole names")
    within: PositiveDuration = Field(description="how long back no such signal may have arrived")


class Condition(_Model):
    """An extra condition on the target; all conditions of ``when`` must hold for the actions to run."""

    rollout_within: PositiveDuration | None = Field(
        None,
        alias="rolloutWithin",
        description="the target changed version within this long (a rollout, or a rollback by the agent)",
    )
    restarted_within: PositiveDuration | None = Field(
        None,
        alias="restartedWithin",
        description=(
            "the agent restarted the target within this long before the incident began: the "
            "condition came back after a restart"
        ),
    )
    without_signal: SignalAbsence | None = Field(
        None,
        alias="withoutSignal",
        description=(
            "no such signal pointed at the target within the last `within` (e.g. no saturation "
            "signal: then latency is the load's, not the version's)"
        ),
    )

    @model_validator(mode="after")
    def _one(self) -> Condition:
        given = [
            c for c in (self.rollout_within, self.restarted_within, self.without_signal) if c is not None
        ]
        if len(given) != 1:
            msg = "a condition names one check: rolloutWithin, restartedWithin or withoutSignal"
            raise ValueError(msg)
        return self

    def describe(self) -> str:
        """Plain words."""
        if self.restarted_within is not None:
            return (
                f"the agent restarted the target within {format_seconds(self.restarted_within)} "
                "before the incident began"
            )
        if self.without_signal is not None:
            absent = self.without_signal
            return (
                f"no {absent.signal.value} signal on {absent.metric} for the target within the last "
                f"{format_seconds(absent.within)}"
            )
        assert self.rollout_within is not None
        return f"the target had a rollout within the last {format_seconds(self.rollout_within)}"


class Verify(_Model):
    """How the engine checks that the actions helped.

    With ``clears: true`` the incident is resolved once no matching signal has arrived for
    ``quiet``, counted from the end of the last action, provided that quiet period is complete
    within ``within`` of the last action and each series that fired has sent ``samples`` fresh
    samples since its last matching one (a series that stops reporting makes the incident stale).
    Otherwise, at ``within``, verification fails, the
    ``onFailure`` steps run and the incident is escalated. With ``clears: false`` the incident is
    resolved when the actions are done.
    """

    clears: bool = Field(True, description="the condition must clear after the actions")
    within: PositiveDuration = Field(600.0, description="how long the condition has to clear (default 10m)")
    quiet: PositiveDuration = Field(
        120.0, description="how long without a matching signal counts as cleared (default 2m)"
    )
    samples: int = Field(
        3,
        ge=1,
        le=1000,
        description="fresh samples each series that fired must send, under the bar, before the "
        "incident counts as resolved (default 3): silence is not recovery",
    )

    @model_validator(mode="after")
    def _quiet_fits(self) -> Verify:
        if self.clears and self.quiet >= self.within:
            msg = f"quiet ({self.quiet:g} s) must be shorter than within ({self.within:g} s)"
            raise ValueError(msg)
        return self


class _Step(_Model):
    """One action step: a mapping with exactly one key, the action's name."""

    action: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _null_params(cls, data: Any) -> Any:
        # `- restart:` (no parameters) means `- restart: {}`
        if isinstance(data, dict) and data.get(cls.action, {}) is None:
            return {cls.action: {}}
        return data

    @property
    def params(self) -> ActionParams:
        """The action's parameters."""
        value = getattr(self, self.action)
        assert isinstance(value, ActionParams)
        return value


def _nullable(schema: dict[str, Any], model: type[BaseModel]) -> None:
    # editors must accept `- restart:` as the loader does
    for key, prop in schema.get("properties", {}).items():
        schema["properties"][key] = {"anyOf": [prop, {"type": "null"}]}
    _ = model


class ScaleStep(_Step):
    """``scale``: change the replica count."""

    action: ClassVar[str] = "scale"
    scale: ScaleParams


class RollbackStep(_Step):
    """``rollback``: roll a Deployment back."""

    model_config = ConfigDict(json_schema_extra=_nullable)
    action: ClassVar[str] = "rollback"
    rollback: RollbackParams


class RestartStep(_Step):
    """``restart``: rolling restart."""

    model_config = ConfigDict(json_schema_extra=_nullable)
    action: ClassVar[str] = "restart"
    restart: RestartParams


class DeletePodStep(_Step):
    """``delete_pod``: delete one pod."""

    action: ClassVar[str] = "delete_pod"
    delete_pod: DeletePodParams


class RetrainStep(_Step):
    """``retrain``: start a training Job."""

    model_config = ConfigDict(json_schema_extra=_nullable)
    action: ClassVar[str] = "retrain"
    retrain: RetrainParams


class NotifyStep(_Step):
    """``notify``: post a message to a webhook."""

    action: ClassVar[str] = "notify"
    notify: NotifyParams


#: pydantic's error type for a step that does not name exactly one known action.
UNKNOWN_ACTION = "unknown_action"


def _step_tag(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        key = next(iter(value))
        return key if isinstance(key, str) else None
    if isinstance(value, _Step):
        return value.action
    return None


ActionStep = Annotated[
    Annotated[ScaleStep, Tag("scale")]
    | Annotated[RollbackStep, Tag("rollback")]
    | Annotated[RestartStep, Tag("restart")]
    | Annotated[DeletePodStep, Tag("delete_pod")]
    | Annotated[RetrainStep, Tag("retrain")]
    | Annotated[NotifyStep, Tag("notify")],
    Discriminator(
        _step_tag,
        custom_error_type=UNKNOWN_ACTION,
        custom_error_message="expected one action: " + ", ".join(ACTIONS),
    ),
]


class Spec(_Model):
    """What the playbook does."""

    priority: int = Field(
        0, ge=-1000, le=1000, description="when several playbooks match one target, the highest acts"
    )
    trigger: Trigger
    target: Target
    when: list[Condition] = Field(
        default_factory=list, max_length=20, description="extra conditions; all must hold"
    )
    actions: list[ActionStep] = Field(min_length=1, max_length=20, description="the steps, in order")
    verify: Verify = Field(default_factory=Verify)
    on_failure: list[ActionStep] = Field(
        default_factory=list,
        alias="onFailure",
        max_length=20,
        description="steps to run when an action fails or verification fails",
    )
    guardrails: PlaybookGuardrails = Field(default_factory=PlaybookGuardrails)


class Playbook(_Model):
    """One playbook document."""

    model_config = ConfigDict(title="aiops Playbook")

    api_version: Literal["aiops/v1"] = Field(alias="apiVersion")
    kind: Literal["Playbook"]
    metadata: Metadata
    spec: Spec

    @property
    def name(self) -> str:
        """The playbook's name."""
        return self.metadata.name
