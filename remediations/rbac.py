"""The Kubernetes API access each action needs, in one table, and the RBAC rules made from it.

:data:`ACTION_PERMISSIONS` lists, for every action in :data:`remediations.registry.ACTIONS`, each
API resource it calls and the verbs it calls it with; :data:`AGENT_PERMISSIONS` adds what the
agent itself needs wherever it acts (the Events every action writes on its target), and
:data:`LEADER_ELECTION_PERMISSIONS` what it needs in its own namespace (the coordination.k8s.io
Lease of leader election). ``k8s/rbac.yaml`` is generated from these tables by ``k8s/sync.py``
(:func:`manifests`), and tests keep the three in step: the table's keys are the registry's
actions, the manifest is what the table renders to, and every API call an action makes against
the twin API server is one the table allows.

Least privilege: no wildcards, no Secrets, only the verbs the code calls (a ``get`` after an
``AlreadyExists`` counts). Besides the actions' own calls, the executor gets and patches the target
of each workload-changing action, where it records the action before it writes
(:func:`record_permissions`). Workload actions need a ClusterRole because playbooks target any
namespace the guardrails allow; bind it per namespace with RoleBindings to narrow it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from remediations.registry import ACTIONS
from remediations.types import ActionClass

#: The verbs a rule may name (the Kubernetes API verbs; no ``*``).
VERBS = frozenset({"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"})

#: Resources no rule may grant, whatever an action would like.
FORBIDDEN_RESOURCES = frozenset({"secrets", "*"})

#: The API group and plural resource of each kind the remediations address.
RESOURCES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "Deployment": ("apps", "deployments"),
        "StatefulSet": ("apps", "statefulsets"),
        "ReplicaSet": ("apps", "replicasets"),
        "DaemonSet": ("apps", "daemonsets"),
        "Pod": ("", "pods"),
        "Event": ("", "events"),
        "Job": ("batch", "jobs"),
        "CronJob": ("batch", "cronjobs"),
        "HorizontalPodAutoscaler": ("autoscaling", "horizontalpodautoscalers"),
        "Lease": ("coordination.k8s.io", "leases"),
    }
)


@dataclass(frozen=True, slots=True)
class Permission:
    """Verbs on one API resource (``deployments`` or a subresource such as ``deployments/scale``)."""

    api_group: str
    resource: str
    verbs: frozenset[str]

    def __post_init__(self) -> None:
        unknown = sorted(self.verbs - VERBS)
        if not self.verbs or unknown:
            msg = f"{self.resource}: verbs must be a non-empty subset of {sorted(VERBS)}, got {unknown}"
            raise ValueError(msg)
        if self.resource.split("/")[0] in FORBIDDEN_RESOURCES or "*" in self.api_group:
            msg = f"no rule may grant {self.api_group}/{self.resource}"
            raise ValueError(msg)

    def allows(self, api_group: str, resource: str, verb: str) -> bool:
        """Whether this permission covers ``verb`` on ``api_group``/``resource``."""
        return (api_group, resource) == (self.api_group, self.resource) and verb in self.verbs


def _on(group: str, resources: Iterable[str], *verbs: str) -> tuple[Permission, ...]:
    return tuple(Permission(group, resource, frozenset(verbs)) for resource in resources)


_WORKLOADS = ("deployments", "statefulsets")

#: What each action calls, by the action's name in playbooks (remediations.registry.ACTIONS).
ACTION_PERMISSIONS: Mapping[str, tuple[Permission, ...]] = MappingProxyType(
    {
        # the target (get, annotations by merge patch), its scale subresource, and the HPA that
        # scales it: list to find it, patch to raise (and restore) its minReplicas floor
        "scale": (
            *_on("apps", _WORKLOADS, "get", "patch"),
            *_on("apps", ("deployments/scale", "statefulsets/scale"), "get", "patch"),
            *_on("autoscaling", ("horizontalpodautoscalers",), "get", "list", "patch"),
        ),
        # the Deployment (get, JSON patch of the template) and its ReplicaSets (the history)
        "rollback": (
            *_on("apps", ("deployments",), "get", "patch"),
            *_on("apps", ("replicasets",), "list"),
        ),
        # the pod-template annotation, by strategic merge patch
        "restart": _on("apps", (*_WORKLOADS, "daemonsets"), "get", "patch"),
        # the pod and its owner (the deletion record is an annotation on the owner); a
        # Deployment's pods are found through its ReplicaSets
        "delete_pod": (
            *_on("", ("pods",), "get", "list", "delete"),
            *_on("apps", (*_WORKLOADS, "replicasets", "daemonsets"), "get", "patch"),
            *_on("apps", ("replicasets",), "list"),
        ),
        # a Job from a CronJob's jobTemplate (or a given template); the Job is annotated once the
        # retrain request is published; the target (a CronJob, Job or workload) is read for its Event
        "retrain": (
            *_on("batch", ("cronjobs",), "get"),
            *_on("batch", ("jobs",), "get", "create", "patch"),
            *_on("apps", _WORKLOADS, "get"),
        ),
        # an HTTP webhook; then the target is read for the Event on it (best effort: a denied read
        # only skips the Event). The kinds are those the other actions target, so nothing new.
        "notify": (
            *_on("apps", (*_WORKLOADS, "replicasets", "daemonsets"), "get"),
            *_on("", ("pods",), "get"),
            *_on("batch", ("jobs", "cronjobs"), "get"),
        ),
    }
)

#: What the agent needs in every namespace it acts in: the Events on the objects acted on
#: (remediations.events: create, and get when a retried create finds its own Event).
AGENT_PERMISSIONS: tuple[Permission, ...] = _on("", ("events",), "create", "get")

#: What the agent needs in its own namespace: the Lease of leader election (the kubernetes
#: client's LeaseLock reads, creates and replaces it) and the Lease recording every action of the
#: agent for its agent-wide budgets (the executor reads, creates and merge-patches it).
LEADER_ELECTION_PERMISSIONS: tuple[Permission, ...] = _on(
    "coordination.k8s.io", ("leases",), "get", "create", "update", "patch"
)


def record_permissions() -> tuple[Permission, ...]:
    """What the executor needs on the target of every workload-changing action: it records the
    action there (``aiops.dev/actions``, a merge patch on the object it read) before it writes."""
    kinds = {
        kind
        for action in ACTIONS.values()
        if action.action_class is not ActionClass.NOTIFY
        for kind in action.target_kinds
    }
    return tuple(Permission(*RESOURCES[kind], frozenset({"get", "patch"})) for kind in sorted(kinds))


def cluster_permissions() -> tuple[Permission, ...]:
    """Every permission of the cluster-wide role: all actions', the executor's record and the agent's own."""
    return (
        *(p for perms in ACTION_PERMISSIONS.values() for p in perms),
        *record_permissions(),
        *AGENT_PERMISSIONS,
    )


def allowed(action: str, api_group: str, resource: str, verb: str) -> bool:
    """Whether the table lets ``action`` (with the agent's own permissions) call ``verb`` on a resource."""
    perms = (*ACTION_PERMISSIONS.get(action, ()), *AGENT_PERMISSIONS)
    return any(p.allows(api_group, resource, verb) for p in perms)


def rules(permissions: Iterable[Permission]) -> list[dict[str, list[str]]]:
    """RBAC ``rules``: verbs merged per resource, then resources with the same verbs in one rule."""
    verbs: dict[tuple[str, str], set[str]] = {}
    for p in permissions:
        verbs.setdefault((p.api_group, p.resource), set()).update(p.verbs)
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, resource), names in verbs.items():
        grouped.setdefault((group, tuple(sorted(names))), []).append(resource)
    return [
        {"apiGroups": [group], "resources": sorted(resources), "verbs": list(names)}
        for (group, names), resources in sorted(
            grouped.items(), key=lambda item: (item[0][0], sorted(item[1]))
        )
    ]


def manifests(namespace: str = "aiops", name: str = "aiops-agent") -> list[dict[str, Any]]:
    """The ClusterRole, Role and their bindings to the ServiceAccount ``namespace/name``."""
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "aiops"}
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
    leader = f"{name}-leader-election"

    def meta(object_name: str, *, namespaced: bool) -> dict[str, Any]:
        found: dict[str, Any] = {"name": object_name}
        if namespaced:
            found["namespace"] = namespace
        found["labels"] = dict(labels)
        return found

    def ref(kind: str, role: str) -> dict[str, str]:
        return {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role}

    api = "rbac.authorization.k8s.io/v1"
    cluster_role: dict[str, Any] = {
        "apiVersion": api,
        "kind": "ClusterRole",
        "metadata": meta(name, namespaced=False),
        "rules": rules(cluster_permissions()),
    }
    cluster_binding: dict[str, Any] = {
        "apiVersion": api,
        "kind": "ClusterRoleBinding",
        "metadata": meta(name, namespaced=False),
        "roleRef": ref("ClusterRole", name),
        "subjects": subject,
    }
    role: dict[str, Any] = {
        "apiVersion": api,
        "kind": "Role",
        "metadata": meta(leader, namespaced=True),
        "rules": rules(LEADER_ELECTION_PERMISSIONS),
    }
    binding: dict[str, Any] = {
        "apiVersion": api,
        "kind": "RoleBinding",
        "metadata": meta(leader, namespaced=True),
        "roleRef": ref("Role", leader),
        "subjects": subject,
    }
    return [cluster_role, cluster_binding, role, binding]
