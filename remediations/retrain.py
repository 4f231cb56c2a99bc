"""``retrain``: start a training Job as ``kubectl create job --from=cronjob/NAME`` does; tell Kafka if asked.

The Job comes from a CronJob's ``jobTemplate`` (the target CronJob, or the one named in
``cronJob``), with an ownerReference to the CronJob and the annotation
``cronjob.kubernetes.io/instantiate: manual``, exactly as kubectl makes it; or from a Job
template given in ``jobTemplate``. It is named ``<cronjob>-aiops-<hash of the key>`` and labelled
and annotated with the incident and the idempotency key, so executing the request again finds the
Job and does nothing.

With ``topic``, a retrain request is also published through the :class:`RetrainPublisher` the
agent supplies (this package does not talk to Kafka). A publish that fails leaves the Job in place
and fails the action; executing it again publishes without creating a second Job, and the Job is
annotated once the request is out.
"""

from __future__ import annotations

import copy
import re
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from remediations import state as notes
from remediations.base import BaseAction
from remediations.diff import render
from remediations.errors import ActionRefused, AlreadyExistsError, NotFoundError, TemporaryError
from remediations.events import timestamp
from remediations.kube import PatchType
from remediations.names import LABEL_VALUE_MAX, check_label_value, check_subdomain
from remediations.params import ActionParams, KubernetesName
from remediations.types import ActionClass, ActionContext, ActionResult, ActionStatus, Plan, RetrainPublisher

__all__ = ["RetrainAction", "RetrainParams", "RetrainPublisher", "job_name"]

INSTANTIATE = "cronjob.kubernetes.io/instantiate"
KEY_ANNOTATION = notes.PREFIX + "idempotency-key"
INCIDENT = notes.PREFIX + "incident"
PLAYBOOK = notes.PREFIX + "playbook"
REASON = notes.PREFIX + "reason"
MODEL = notes.PREFIX + "model"
KEY_HASH = notes.PREFIX + "key-hash"
PUBLISHED = notes.PREFIX + "published-to"
JOB_NAME_MAX = 63
HASH_LENGTH = 8
_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")

Obj = dict[str, Any]


class RetrainParams(ActionParams):
    """Parameters of ``retrain``: where the Job comes from, and an optional Kafka topic to notify."""

    action: ClassVar[str] = "retrain"

    cron_job: KubernetesName | None = Field(
        None, alias="cronJob", description="the CronJob whose jobTemplate to run; default: the target"
    )
    job_template: dict[str, Any] | None = Field(
        None,
        alias="jobTemplate",
        description="a Job template ({metadata: {labels, annotations}, spec: JobSpec}) instead of a CronJob",
    )
    topic: str | None = Field(None, description="also publish a retrain request to this Kafka topic")
    model: str | None = Field(
        None, min_length=1, max_length=253, description="the model's name, for the record"
    )

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        if value is not None and (not _TOPIC.fullmatch(value) or value in {".", ".."}):
            msg = f"{value!r} is not a Kafka topic name (1-249 of letters, digits, '.', '_', '-')"
            raise ValueError(msg)
        return value

    @field_validator("job_template")
    @classmethod
    def _template(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        unknown = set(value) - {"metadata", "spec", "apiVersion", "kind"}
        if unknown:
            msg = f"jobTemplate has unknown fields: {', '.join(sorted(unknown))} (expected metadata, spec)"
            raise ValueError(msg)
        if value.get("kind", "Job") != "Job" or value.get("apiVersion", "batch/v1") != "batch/v1":
            msg = "jobTemplate must be a batch/v1 Job template"
            raise ValueError(msg)
        meta = value.get("metadata") or {}
        if not isinstance(meta, dict) or set(meta) - {"labels", "annotations", "namespace"}:
            msg = (
                "jobTemplate.metadata may only have labels, annotations, namespace (the agent names the Job)"
            )
            raise ValueError(msg)
        spec = value.get("spec")
        if not isinstance(spec, dict) or not isinstance(spec.get("template"), dict):
            msg = "jobTemplate.spec.template (the pod template) is required"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> RetrainParams:
        if self.cron_job is not None and self.job_template is not None:
            msg = "retrain takes at most one of cronJob, jobTemplate"
            raise ValueError(msg)
        return self

    def describe(self) -> str:
        """Plain words."""
        source = (
            "the given Job template"
            if self.job_template is not None
            else f"CronJob {self.cron_job}"
            if self.cron_job
            else "the target CronJob"
        )
        text = f"start a training Job from {source}"
        if self.topic:
            text += f" and publish a retrain request to {self.topic}"
        return text


def job_name(base: str, key_hash: str) -> str:
    """``<base>-aiops-<hash>``, the base cut so the name fits in 63 characters."""
    suffix = f"-aiops-{key_hash[:HASH_LENGTH]}"
    head = base[: JOB_NAME_MAX - len(suffix)].rstrip("-.")
    return check_subdomain("Job name", f"{head}{suffix}", JOB_NAME_MAX)


def _label_value(value: str) -> str | None:
    try:
        return check_label_value("label", value) if len(value) <= LABEL_VALUE_MAX else None
    except ValueError:
        return None


class RetrainAction(BaseAction[RetrainParams]):
    """Start a training Job from a CronJob (or a template), once per idempotency key."""

    name: ClassVar[str] = "retrain"
    params_model: ClassVar[type[ActionParams]] = RetrainParams
    target_kinds: ClassVar[frozenset[str]] = frozenset({"CronJob", "Job", "Deployment", "StatefulSet"})
    action_class: ClassVar[ActionClass] = ActionClass.CORRECTIVE

    def _job(self, ctx: ActionContext) -> tuple[Obj, Obj | None]:
        """The Job to create, and the CronJob it comes from (None for a template)."""
        request, params, target = ctx.request, self.params(ctx), ctx.target
        cron: Obj | None = None
        if params.job_template is not None:
            template = params.job_template
            namespace = (template.get("metadata") or {}).get("namespace")
            if namespace not in {None, target.namespace}:
                msg = f"retrain: jobTemplate is for namespace {namespace!r}, not {target.namespace!r}"
                raise ActionRefused(msg)
            base = target.name
        else:
            cron_name = params.cron_job or (target.name if target.kind == "CronJob" else None)
            if cron_name is None:
                msg = f"retrain on a {target.kind} needs cronJob or jobTemplate (a CronJob is its own source)"
                raise ActionRefused(msg)
            cron = ctx.kube.get("CronJob", target.namespace, cron_name)
            template = (cron.get("spec") or {}).get("jobTemplate") or {}
            base = cron_name
        meta = template.get("metadata") or {}
        labels = dict(meta.get("labels") or {})
        labels[KEY_HASH] = request.key_digest
        for label, value in ((INCIDENT, request.incident), (MODEL, params.model)):
            shown = _label_value(value) if value else None
            if shown:
                labels[label] = shown
        annotations = dict(meta.get("annotations") or {})
        annotations.update(
            {KEY_ANNOTATION: request.key, INCIDENT: request.incident, PLAYBOOK: request.playbook}
        )
        if request.reason:
            annotations[REASON] = request.reason
        if params.model:
            annotations[MODEL] = params.model
        metadata: Obj = {
            "name": job_name(base, request.key_digest),
            "namespace": target.namespace,
            "labels": labels,
            "annotations": annotations,
        }
        if cron is not None:
            annotations[INSTANTIATE] = "manual"
            cron_meta = cron.get("metadata") or {}
            metadata["ownerReferences"] = [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": cron_meta.get("name"),
                    "uid": cron_meta.get("uid"),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": metadata,
            "spec": copy.deepcopy(template.get("spec") or {}),
        }
        return job, cron

    def _existing(self, ctx: ActionContext, name: str) -> Obj | None:
        target = ctx.target
        try:
            found = ctx.kube.get("Job", target.namespace, name)
        except NotFoundError:
            return None
        if notes.annotations_of(found).get(KEY_ANNOTATION) != ctx.request.key:
            msg = (
                f"a Job named {name} exists in {target.namespace} that was not created for {ctx.request.key}"
            )
            raise ActionRefused(msg)
        return found

    def _check_publisher(self, ctx: ActionContext) -> RetrainPublisher | None:
        topic = self.params(ctx).topic
        if topic is not None and ctx.publisher is None:
            msg = f"retrain asks to publish to topic {topic!r}, but the agent has no retrain publisher"
            raise ActionRefused(msg)
        return ctx.publisher if topic is not None else None

    def _plan(self, ctx: ActionContext) -> Plan:
        target, params = ctx.target, self.params(ctx)
        self._check_publisher(ctx)
        job, cron = self._job(ctx)
        name = job["metadata"]["name"]
        existing = self._existing(ctx, name)
        if existing is not None and (params.topic is None or PUBLISHED in notes.annotations_of(existing)):
            return Plan(
                self.name, target, f"nothing to do: Job {name} already exists for this key", changes=False
            )
        source = (
            f"CronJob {target.namespace}/{cron['metadata']['name']}"
            if cron is not None
            else "the given template"
        )
        summary = f"create Job {target.namespace}/{name} from {source}"
        if existing is not None:
            summary = f"Job {name} exists; publish the retrain request"
        if params.topic:
            summary += f" and publish a retrain request to {params.topic}"
        diff = render(
            f"Job {target.namespace}/{name}", {}, {"metadata": job["metadata"], "spec": job["spec"]}
        )
        return Plan(self.name, target, summary, diff, details={"job": name, "topic": params.topic})

    def _execute(self, ctx: ActionContext) -> ActionResult:
        target, params, kube, request = ctx.target, self.params(ctx), ctx.kube, ctx.request
        publisher = self._check_publisher(ctx)
        job, cron = self._job(ctx)
        name = job["metadata"]["name"]
        created = False
        existing = self._existing(ctx, name)
        if existing is None:
            try:
                existing = kube.create("Job", target.namespace, job)
                created = True
            except AlreadyExistsError:
                # A retried create whose first try went through, or a race with another agent.
                existing = self._existing(ctx, name)
                if existing is None:
                    raise
        details: dict[str, Any] = {"job": name, "created": created}
        published = PUBLISHED in notes.annotations_of(existing)
        if publisher is not None and params.topic is not None and not published:
            message = {
                "type": "retrain",
                "key": request.key,
                "incident": request.incident,
                "playbook": request.playbook,
                "model": params.model,
                "reason": request.reason,
                "target": target.to_dict(),
                "job": {"namespace": target.namespace, "name": name},
                "requestedAt": timestamp(ctx.clock.now()),
            }
            try:
                publisher.publish(params.topic, request.key, message)
            except Exception as error:
                what = "created Job" if created else "Job"
                msg = f"{what} {target.namespace}/{name}, but publishing to {params.topic} failed: {error}"
                raise TemporaryError(msg) from error
            kube.patch(
                "Job",
                target.namespace,
                name,
                {"metadata": {"annotations": {PUBLISHED: params.topic}}},
                PatchType.MERGE,
            )
            details["published"] = params.topic
        elif not created:
            return self.result(
                ctx, ActionStatus.NOOP, f"already executed: Job {name} exists for {request.key}"
            )
        source = f"CronJob {cron['metadata']['name']}" if cron is not None else "the given template"
        text = (
            f"started Job {target.namespace}/{name} from {source}"
            if created
            else f"Job {name} was already there"
        )
        if details.get("published"):
            text += f"; published a retrain request to {params.topic}"
        diff = render(f"Job {target.namespace}/{name}", {}, {"metadata": {"name": name}}) if created else ""
        event_on = self.read_target(ctx)
        details["event"] = self.event(ctx, event_on, "AiopsRetrainStarted", text)
        return self.result(ctx, ActionStatus.EXECUTED, text, diff=diff, details=details)
