"""batch/v1: Jobs and CronJobs."""

from __future__ import annotations

import re

from simulations.twin.errors import FieldError, immutable, invalid, required
from simulations.twin.objects import Obj, metadata, name_of, uid_of
from simulations.twin.resources.base import ResourceType
from simulations.twin.resources.podspec import default_pod_template, template_labels, validate_pod_template
from simulations.twin.selectors import field_getters, from_label_selector, validate_label_selector
from simulations.twin.validation import dns1123_subdomain, max_length, nonnegative

JOB_RESTART_POLICIES = ["OnFailure", "Never"]
CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
LEGACY_CONTROLLER_UID = "controller-uid"
LEGACY_JOB_NAME = "job-name"


def _spec(obj: Obj) -> Obj:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = {}
        obj["spec"] = spec
    return spec


def _default_job(obj: Obj) -> None:
    spec = _spec(obj)
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    default_pod_template(spec.get("template"))


def _generated_selector(obj: Obj) -> Obj:
    return {"matchLabels": {CONTROLLER_UID: uid_of(obj)}}


def _prepare_job(obj: Obj) -> None:
    """The Job strategy on create: generate the selector and the template labels, reset status."""
    spec = _spec(obj)
    obj["status"] = {}
    if spec.get("manualSelector") is True:
        return
    if spec.get("selector") is None:
        spec["selector"] = _generated_selector(obj)
    template = spec.get("template")
    if isinstance(template, dict):
        labels = metadata(template).setdefault("labels", {})
        if isinstance(labels, dict):
            labels.setdefault(CONTROLLER_UID, uid_of(obj))
            labels.setdefault(JOB_NAME, name_of(obj))
            labels.setdefault(LEGACY_CONTROLLER_UID, uid_of(obj))
            labels.setdefault(LEGACY_JOB_NAME, name_of(obj))


def _validate_job_spec(spec: Obj, path: str) -> list[FieldError]:
    errors = validate_pod_template(spec.get("template"), f"{path}.template", JOB_RESTART_POLICIES)
    for key in ("parallelism", "completions", "backoffLimit"):
        errors += nonnegative(spec, key, path)
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (not isinstance(deadline, int) or deadline <= 0):
        errors.append(invalid(f"{path}.activeDeadlineSeconds", deadline, "must be greater than 0"))
    mode = spec.get("completionMode")
    if mode is not None and mode not in {"NonIndexed", "Indexed"}:
        errors.append(invalid(f"{path}.completionMode", mode, 'must be "NonIndexed" or "Indexed"'))
    return errors


def _validate_job(new: Obj, old: Obj | None) -> list[FieldError]:
    spec = new.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    errors = _validate_job_spec(spec, "spec")
    selector = spec.get("selector")
    if selector is None:
        errors.append(required("spec.selector"))
    else:
        errors += validate_label_selector(selector, "spec.selector")
        if spec.get("manualSelector") is not True and selector != _generated_selector(new):
            errors.append(invalid("spec.selector", selector, "`selector` not auto-generated"))
        elif not errors and not from_label_selector(selector).matches(template_labels(spec.get("template"))):
            errors.append(
                invalid(
                    "spec.template.metadata.labels",
                    template_labels(spec.get("template")),
                    "`selector` does not match template `labels`",
                )
            )
    if old is not None:
        before = old.get("spec") or {}
        for key in ("selector", "completions", "completionMode"):
            if before.get(key) != spec.get(key):
                errors.append(immutable(f"spec.{key}", spec.get(key)))
        if before.get("template") != spec.get("template") and not before.get("suspend"):
            errors.append(immutable("spec.template", spec.get("template")))
    return errors


JOBS = ResourceType(
    group="batch",
    version="v1",
    plural="jobs",
    singular="job",
    kind="Job",
    categories=("all",),
    subresources=("status",),
    name_rule=max_length(dns1123_subdomain, 63),
    defaults=_default_job,
    prepare_create=_prepare_job,
    validate=_validate_job,
    field_labels=field_getters("status.successful"),
)


# ---------------------------------------------------------------- CronJob

_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_CRON_FIELD = re.compile(r"^[\d*/,\-?A-Za-z]+$")
CRONJOB_NAME_MAX = 52
_CRON_FIELDS = 5


def _valid_schedule(schedule: str) -> bool:
    text = schedule.strip()
    if text.startswith("TZ=") or text.startswith("CRON_TZ="):
        return False
    if text in _CRON_MACROS or text.startswith("@every "):
        return True
    fields = text.split()
    return len(fields) == _CRON_FIELDS and all(_CRON_FIELD.match(f) for f in fields)


def _default_cronjob(obj: Obj) -> None:
    spec = _spec(obj)
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    template = spec.get("jobTemplate")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        default_pod_template(template["spec"].get("template"))


def _validate_cronjob(new: Obj, old: Obj | None) -> list[FieldError]:
    del old
    spec = new.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    errors: list[FieldError] = []
    schedule = spec.get("schedule")
    if not schedule:
        errors.append(required("spec.schedule"))
    elif not isinstance(schedule, str) or not _valid_schedule(schedule):
        errors.append(invalid("spec.schedule", schedule, "unparseable schedule"))
    policy = spec.get("concurrencyPolicy")
    if policy not in {"Allow", "Forbid", "Replace"}:
        errors.append(invalid("spec.concurrencyPolicy", policy, 'must be "Allow", "Forbid" or "Replace"'))
    template = spec.get("jobTemplate")
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        errors.append(required("spec.jobTemplate.spec"))
    else:
        errors += _validate_job_spec(template["spec"], "spec.jobTemplate.spec")
    for key in ("successfulJobsHistoryLimit", "failedJobsHistoryLimit", "startingDeadlineSeconds"):
        errors += nonnegative(spec, key, "spec")
    return errors


def _reset_status(obj: Obj) -> None:
    obj["status"] = {}


CRONJOBS = ResourceType(
    group="batch",
    version="v1",
    plural="cronjobs",
    singular="cronjob",
    kind="CronJob",
    short_names=("cj",),
    categories=("all",),
    subresources=("status",),
    name_rule=max_length(dns1123_subdomain, CRONJOB_NAME_MAX),
    defaults=_default_cronjob,
    prepare_create=_reset_status,
    validate=_validate_cronjob,
)

RESOURCES = (JOBS, CRONJOBS)
