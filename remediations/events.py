"""Kubernetes Events (core/v1) on the objects the agent acted on: ``kubectl describe`` shows them.

An Event names its object by kind, namespace, name, uid and resourceVersion (``involvedObject``),
comes from the component ``aiops-agent``, and has a reason (``AiopsScaled``, ``AiopsRolledBack``
...), so ``kubectl get events --field-selector involvedObject.name=web`` lists what the agent did.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Literal

from remediations.errors import AlreadyExistsError, KubeError
from remediations.kube import KubeClients, api_version_of
from remediations.names import DNS1123_SUBDOMAIN_MAX
from remediations.types import Clock, key_digest

log = logging.getLogger(__name__)

COMPONENT = "aiops-agent"
MESSAGE_MAX = 1024
REASON_MAX = 128

EventType = Literal["Normal", "Warning"]
Obj = dict[str, Any]


def timestamp(seconds: float) -> str:
    """RFC 3339 in UTC with whole seconds (``metav1.Time``)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def involved_object(kind: str, obj: Obj) -> Obj:
    """The ``involvedObject`` reference of an object as read from the API."""
    meta = obj.get("metadata") or {}
    ref: Obj = {
        "apiVersion": obj.get("apiVersion") or api_version_of(kind),
        "kind": obj.get("kind") or kind,
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
    }
    for source, field in (("uid", "uid"), ("resourceVersion", "resourceVersion")):
        if meta.get(source):
            ref[field] = meta[source]
    return ref


def event_body(
    kind: str,
    obj: Obj,
    *,
    reason: str,
    message: str,
    clock: Clock,
    event_type: EventType = "Normal",
    action: str = "",
    key: str = "",
    instance: str = "",
) -> Obj:
    """The Event to create (its name is unique per object, reason, key and time)."""
    involved = involved_object(kind, obj)
    now = clock.now()
    suffix = key_digest(f"{involved.get('uid', '')}/{reason}/{key}/{now!r}")
    base = str(involved["name"])[: DNS1123_SUBDOMAIN_MAX - len(suffix) - 1].rstrip(".-")
    if len(message) > MESSAGE_MAX:
        message = message[: MESSAGE_MAX - 3] + "..."
    body: Obj = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{base}.{suffix}", "namespace": involved["namespace"]},
        "involvedObject": involved,
        "reason": reason[:REASON_MAX],
        "message": message,
        "type": event_type,
        "source": {"component": COMPONENT},
        "firstTimestamp": timestamp(now),
        "lastTimestamp": timestamp(now),
        "count": 1,
        "reportingComponent": COMPONENT,
        "reportingInstance": instance or COMPONENT,
    }
    if action:
        body["action"] = action[:REASON_MAX]
    if key:
        body["metadata"]["annotations"] = {"aiops.dev/idempotency-key": key}
    return body


def record_event(
    kube: KubeClients,
    kind: str,
    obj: Obj,
    *,
    reason: str,
    message: str,
    clock: Clock,
    event_type: EventType = "Normal",
    action: str = "",
    key: str = "",
    instance: str = "",
) -> Obj:
    """Create an Event on ``obj`` (an object as read from the API); returns the Event.

    A retried create that finds its own Event already there counts as done.
    """
    body = event_body(
        kind,
        obj,
        reason=reason,
        message=message,
        clock=clock,
        event_type=event_type,
        action=action,
        key=key,
        instance=instance,
    )
    namespace = body["metadata"]["namespace"]
    try:
        return kube.create("Event", namespace, body)
    except AlreadyExistsError:
        return kube.get("Event", namespace, body["metadata"]["name"])


def try_record_event(
    kube: KubeClients,
    kind: str,
    obj: Obj,
    *,
    reason: str,
    message: str,
    clock: Clock,
    event_type: EventType = "Normal",
    action: str = "",
    key: str = "",
    instance: str = "",
) -> str:
    """:func:`record_event`, but a failure is logged and returned as text instead of raised.

    The action already happened when its Event is written: failing to write the Event must not
    turn an executed action into a failed one (which would invite a retry).
    """
    try:
        event = record_event(
            kube,
            kind,
            obj,
            reason=reason,
            message=message,
            clock=clock,
            event_type=event_type,
            action=action,
            key=key,
            instance=instance,
        )
    except KubeError as error:
        log.warning("could not record Event %s on %s: %s", reason, kind, error)
        return f"failed: {error}"
    return str((event.get("metadata") or {}).get("name") or "")
