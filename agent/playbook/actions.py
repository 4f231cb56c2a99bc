"""The actions a playbook can name, each with the model of its parameters.

The set is closed: ``scale``, ``rollback``, ``restart``, ``delete_pod``, ``retrain``, ``notify``.
Parameters are validated when the playbook loads, never during the incident. The remediations
package implements the actions; these models only say what each accepts, what it can act on, and
how to say in words what it will do. They import nothing from the agent but the playbook field
types, so they can move next to their implementations.

String parameters may hold templates (see :mod:`agent.playbook.templating`). The parameters an
action lists in ``kubernetes_names`` are Kubernetes object names: their rendered values are checked
against the name rules before the action runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.playbook.fields import Duration, PositiveDuration, at_most

#: A templated string that renders to a Kubernetes object name (list it in ``kubernetes_names``).
KubernetesName = Annotated[str, Field(min_length=1, max_length=253)]


class ActionParams(BaseModel):
    """Base of every action's parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: The action's name in YAML.
    action: ClassVar[str] = ""
    #: Kinds of target the action can act on; None means any.
    target_kinds: ClassVar[frozenset[str] | None] = None
    #: Whether the action changes the workload (counted by rate limits); ``notify`` does not.
    changes_workload: ClassVar[bool] = True
    #: Parameters (YAML names) whose rendered value must be a Kubernetes object name.
    kubernetes_names: ClassVar[tuple[str, ...]] = ()

    def describe(self) -> str:
        """What the action does, in plain words (for ``aiops playbook explain``)."""
        raise NotImplementedError


class ForecastScaling(BaseModel):
    """Replicas from a forecast: ceil(forecast value x (1 + headroom) / perReplica)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    per_replica: float = Field(
        alias="perReplica", gt=0, description="how much of the forecast metric one replica serves"
    )
    headroom: float = Field(0.1, ge=0, le=10, description="extra capacity on top, as a fraction")

    def replicas(self, forecast: float) -> int:
        """The replica count that serves ``forecast`` with the headroom."""
        return max(0, math.ceil(forecast * (1.0 + self.headroom) / self.per_replica))


class ScaleParams(ActionParams):
    """Change the replica count of a Deployment or StatefulSet: exactly one of the four modes."""

    action: ClassVar[str] = "scale"
    target_kinds: ClassVar[frozenset[str] | None] = frozenset({"Deployment", "StatefulSet"})

    replicas: int | None = Field(None, ge=0, le=10_000, description="set this many replicas")
    by: int | None = Field(None, ge=-1000, le=1000, description="add (or remove, if negative) replicas")
    factor: float | None = Field(None, gt=0, le=100, description="multiply the replicas, rounding up")
    forecast: ForecastScaling | None = Field(None, description="replicas from the forecast signal's value")

    @model_validator(mode="after")
    def _one_mode(self) -> ScaleParams:
        modes = [m for m in ("replicas", "by", "factor", "forecast") if getattr(self, m) is not None]
        if len(modes) != 1:
            found = ", ".join(modes) if modes else "none"
            msg = f"scale takes exactly one of replicas, by, factor, forecast; found {found}"
            raise ValueError(msg)
        if self.by == 0:
            msg = "scale by 0 does nothing"
            raise ValueError(msg)
        return self

    def desired(self, current: int, signal_value: float) -> int:
        """The replica count this step asks for, before guardrail bounds and step limits."""
        if self.replicas is not None:
            return self.replicas
        if self.by is not None:
            return max(0, current + self.by)
        if self.factor is not None:
            return max(0, math.ceil(current * self.factor))
        assert self.forecast is not None  # one mode is set: checked at load
        return self.forecast.replicas(signal_value)

    def describe(self) -> str:
        """Plain words."""
        if self.replicas is not None:
            return f"scale the target to {self.replicas} replicas"
        if self.by is not None:
            verb = "add" if self.by > 0 else "remove"
            return f"{verb} {abs(self.by)} replica{'s' if abs(self.by) != 1 else ''}"
        if self.factor is not None:
            return f"multiply the replicas by {self.factor:g} (rounding up)"
        assert self.forecast is not None
        return (
            f"scale to the forecast: forecast value x {1 + self.forecast.headroom:g} "
            f"/ {self.forecast.per_replica:g} per replica, rounded up"
        )


class RollbackParams(ActionParams):
    """Roll a Deployment back, as ``kubectl rollout undo`` does."""

    action: ClassVar[str] = "rollback"
    target_kinds: ClassVar[frozenset[str] | None] = frozenset({"Deployment"})

    revision: int | None = Field(None, ge=1, description="the revision to go back to; default: the previous")

    def describe(self) -> str:
        """Plain words."""
        if self.revision is None:
            return "roll the Deployment back to its previous revision"
        return f"roll the Deployment back to revision {self.revision}"


class RestartParams(ActionParams):
    """A rolling restart through the pod template's ``restartedAt`` annotation."""

    action: ClassVar[str] = "restart"
    target_kinds: ClassVar[frozenset[str] | None] = frozenset({"Deployment", "StatefulSet", "DaemonSet"})

    def describe(self) -> str:
        """Plain words."""
        return "restart the target's pods, rolling, as kubectl rollout restart does"


class DeletePodParams(ActionParams):
    """Delete one pod (its controller replaces it)."""

    action: ClassVar[str] = "delete_pod"
    kubernetes_names: ClassVar[tuple[str, ...]] = ("pod",)

    pod: KubernetesName = Field(description="the pod to delete, e.g. {{ labels.pod }}")
    grace_period: Annotated[Duration, at_most(3600)] = Field(
        30.0, alias="gracePeriod", description="how long the pod gets to stop"
    )

    def describe(self) -> str:
        """Plain words."""
        return f"delete pod {self.pod} (grace period {self.grace_period:g} s)"


class RetrainParams(ActionParams):
    """Start a training Job: from the target CronJob's jobTemplate, or from a CronJob named here."""

    action: ClassVar[str] = "retrain"
    target_kinds: ClassVar[frozenset[str] | None] = frozenset({"CronJob"})
    kubernetes_names: ClassVar[tuple[str, ...]] = ("cronJob",)

    cron_job: KubernetesName | None = Field(
        None, alias="cronJob", description="the CronJob to run; default: the target"
    )
    topic: str | None = Field(
        None,
        min_length=1,
        max_length=249,
        pattern=r"^[a-zA-Z0-9._-]+$",
        description="also publish a retrain request to this Kafka topic",
    )
    model: str | None = Field(None, max_length=253, description="the model's name, passed to the Job")

    def describe(self) -> str:
        """Plain words."""
        source = f"CronJob {self.cron_job}" if self.cron_job else "the target CronJob"
        text = f"start a retraining Job from {source}"
        if self.model:
            text += f" for model {self.model}"
        if self.topic:
            text += f" and publish a retrain request to Kafka topic {self.topic}"
        return text


class NotifyParams(ActionParams):
    """Post a JSON message (Slack-compatible ``text``) to a webhook."""

    action: ClassVar[str] = "notify"
    changes_workload: ClassVar[bool] = False

    webhook: str | None = Field(
        None, pattern=r"^https?://[^\s]+$", max_length=2048, description="the webhook URL"
    )
    webhook_env: str | None = Field(
        None,
        alias="webhookEnv",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable holding the webhook URL (for URLs that are secrets)",
    )
    message: str = Field(min_length=1, max_length=4000, description="the text; templates allowed")
    timeout: Annotated[PositiveDuration, at_most(300)] = Field(10.0, description="time per attempt")

    @model_validator(mode="after")
    def _one_destination(self) -> NotifyParams:
        if (self.webhook is None) == (self.webhook_env is None):
            msg = "notify takes exactly one of webhook, webhookEnv"
            raise ValueError(msg)
        return self

    def describe(self) -> str:
        """Plain words."""
        where = self.webhook if self.webhook else f"the webhook in ${self.webhook_env}"
        return f"post {self.message!r} to {where}"


#: Every action by its YAML name; read-only.
ACTIONS: Mapping[str, type[ActionParams]] = MappingProxyType(
    {
        cls.action: cls
        for cls in (ScaleParams, RollbackParams, RestartParams, DeletePodParams, RetrainParams, NotifyParams)
    }
)

#: The action names as a Literal, for places that need the type.
ActionName = Literal["scale", "rollback", "restart", "delete_pod", "retrain", "notify"]
