"""The Kubernetes API access each action needs, in one table, and the RBAC manifests made from it.

:data:`TARGET_PERMISSIONS` lists, for every action in :data:`remediations.registry.ACTIONS` and
each kind of target it acts on, each API resource it calls and the verbs it calls it with
(:data:`ACTION_PERMISSIONS`: the same over every kind); :data:`AGENT_PERMISSIONS` adds what the
agent itself needs wherever it acts (the Events every action writes on its target),
:data:`ROLLOUT_HISTORY_PERMISSIONS` what reading a Deployment's rollout history takes,
:func:`annotate_permissions` the annotation of a target, and
:data:`LEADER_ELECTION_PERMISSIONS` what it needs in its own namespace (the coordination.k8s.io
Lease of leader election) and :data:`APPROVALS_PERMISSIONS` what its approval records take
there. Tests keep the table in step: its keys are the registry's actions, and every API call an
action makes against the twin API server is one the table allows.

Which of these rights a deployment needs, and in which namespaces, is an :class:`Access`, worked
out from the agent's config and playbooks by :mod:`agent.rbac`; :func:`manifests` renders it
(``aiops rbac``, and ``k8s/rbac.yaml`` by ``k8s/sync.py``).

Least privilege: no wildcards, no Secrets, only the verbs the code calls (a ``get`` after an
``AlreadyExists`` counts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from remediations.names import check_label, check_subdomain

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
        "ConfigMap": ("", "configmaps"),
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


def _get_patch(kind: str, *extra: str) -> tuple[Permission, ...]:
    """Get and patch on ``kind``'s resource and on its subresources ``extra`` (``scale``)."""
    group, resource = RESOURCES[kind]
    return _on(group, (resource, *(f"{resource}/{sub}" for sub in extra)), "get", "patch")


def _get(kind: str) -> tuple[Permission, ...]:
    group, resource = RESOURCES[kind]
    return _on(group, (resource,), "get")


Table = Mapping[str, Mapping[str, tuple[Permission, ...]]]
"""Action name -> target kind -> what the action calls on a target of that kind."""

_HPA = _on("autoscaling", ("horizontalpodautoscalers",), "get", "list", "patch")
_OWNERS = ("Deployment", "StatefulSet", "ReplicaSet", "DaemonSet")
_RETRAIN = (*_on("batch", ("cronjobs",), "get"), *_on("batch", ("jobs",), "get", "create", "patch"))

_TABLE: dict[str, dict[str, tuple[Permission, ...]]] = {
    # the target (get, annotations by merge patch), its scale subresource, and the HPA that
    # scales it: list to find it, patch to raise (and restore) its minReplicas floor
    "scale": {kind: (*_get_patch(kind, "scale"), *_HPA) for kind in ("Deployment", "StatefulSet")},
    # the Deployment (get, JSON patch of the template) and its ReplicaSets (the history)
    "rollback": {"Deployment": (*_get_patch("Deployment"), *_on("apps", ("replicasets",), "list"))},
    # the pod-template annotation, by strategic merge patch
    "restart": {kind: _get_patch(kind) for kind in ("Deployment", "StatefulSet", "DaemonSet")},
    # the workload and its pods (the deletion record is an annotation on the workload); a
    # Deployment's pods are found through its ReplicaSets. A Pod target: the pod, and its
    # controller (a ReplicaSet's Deployment when it has one), whatever workload that is.
    "delete_pod": {
        **{kind: (*_get_patch(kind), *_on("", ("pods",), "list", "delete")) for kind in _OWNERS[1:]},
        "Deployment": (
            *_get_patch("Deployment"),
            *_on("", ("pods",), "list", "delete"),
            *_on("apps", ("replicasets",), "list"),
        ),
        "Pod": (
            *_on("", ("pods",), "get", "delete"),
            *(p for kind in _OWNERS for p in _get_patch(kind)),
        ),
    },
    # a Job from a CronJob's jobTemplate (or a given template); the Job is annotated once the
    # retrain request is published; the target is read for its Event
    "retrain": {kind: (*_RETRAIN, *_get(kind)) for kind in ("CronJob", "Job", "Deployment", "StatefulSet")},
    # an HTTP webhook; then the target is read for the Event on it (best effort: a denied read
    # only skips the Event)
    "notify": {kind: _get(kind) for kind in (*_OWNERS, "Pod", "Job", "CronJob")},
}

#: What each action calls, by the action's name in playbooks (remediations.registry.ACTIONS) and
#: the kind of its target: a playbook on Deployments needs no right on StatefulSets.
TARGET_PERMISSIONS: Table = MappingProxyType({a: MappingProxyType(k) for a, k in _TABLE.items()})

#: What each action calls on any target: the union over the kinds of :data:`TARGET_PERMISSIONS`.
ACTION_PERMISSIONS: Mapping[str, tuple[Permission, ...]] = MappingProxyType(
    {
        action: tuple(p for perms in by_kind.values() for p in perms)
        for action, by_kind in TARGET_PERMISSIONS.items()
    }
)

#: What the agent needs in every namespace it acts in: the Events on the objects acted on
#: (remediations.events: create, and get when a retried create finds its own Event).
AGENT_PERMISSIONS: tuple[Permission, ...] = _on("", ("events",), "create", "get")

#: What reading a Deployment's rollout history takes (:func:`remediations.rollback.history`: the
#: Deployment, then its ReplicaSets); the agent reads it for playbooks' ``when: rolloutWithin``.
ROLLOUT_HISTORY_PERMISSIONS: tuple[Permission, ...] = (
    *_on("apps", ("deployments",), "get"),
    *_on("apps", ("replicasets",), "list"),
)

#: What the agent needs in its own namespace: the Lease of leader election (the kubernetes
#: client's LeaseLock reads, creates and replaces it) and the Lease recording every action of the
#: agent for its agent-wide budgets (the executor reads, creates and merge-patches it).
LEADER_ELECTION_PERMISSIONS: tuple[Permission, ...] = _on(
    "coordination.k8s.io", ("leases",), "get", "create", "update", "patch"
)


#: What the approval records take where they live (``executor.approvals.store: configmap``): one
#: ConfigMap per approval, listed by label, created, replaced at a resourceVersion, deleted.
APPROVALS_PERMISSIONS: tuple[Permission, ...] = _on(
    "", ("configmaps",), "get", "list", "create", "update", "delete"
)


def annotate_permissions(kinds: Iterable[str]) -> tuple[Permission, ...]:
    """Patch on the resources of ``kinds``: the executor's annotations of a target, the record of
    each workload-changing action before it writes (``aiops.dev/actions``), and the mark of one it
    acted on behind its GitOps controller's back (``executor.gitops: annotate``)."""
    found = []
    for kind in sorted(set(kinds)):
        if kind not in RESOURCES:
            msg = f"no API resource is known for kind {kind!r} (known: {', '.join(sorted(RESOURCES))})"
            raise ValueError(msg)
        found.append(Permission(*RESOURCES[kind], frozenset({"patch"})))
    return tuple(found)


def permissions(action: str, kind: str) -> tuple[Permission, ...]:
    """What ``action`` calls on a target of ``kind``; ValueError when it does not act on that kind."""
    by_kind = TARGET_PERMISSIONS.get(action)
    if by_kind is None:
        msg = f"no RBAC entry for action {action!r} (known: {', '.join(sorted(TARGET_PERMISSIONS))})"
        raise ValueError(msg)
    if kind not in by_kind:
        msg = f"{action} does not act on a {kind} (it acts on: {', '.join(sorted(by_kind))})"
        raise ValueError(msg)
    return by_kind[kind]


def allowed(action: str, api_group: str, resource: str, verb: str, kind: str | None = None) -> bool:
    """Whether the table lets ``action`` (with the agent's own permissions) call ``verb`` on a
    resource, acting on a target of ``kind`` (None: of any kind)."""
    own = (
        ACTION_PERMISSIONS.get(action, ())
        if kind is None
        else TARGET_PERMISSIONS.get(action, {}).get(kind, ())
    )
    return any(p.allows(api_group, resource, verb) for p in (*own, *AGENT_PERMISSIONS))


Grant = tuple[str, str, str]
"""One right: (API group, resource, verb)."""


def grants(permissions: Iterable[Permission]) -> frozenset[Grant]:
    """The single rights ``permissions`` hold."""
    return frozenset((p.api_group, p.resource, verb) for p in permissions for verb in p.verbs)


def without(permissions: Iterable[Permission], covered: Iterable[Permission]) -> tuple[Permission, ...]:
    """``permissions`` less the rights ``covered`` already holds (a Role need not repeat its ClusterRole)."""
    left: dict[tuple[str, str], set[str]] = {}
    for group, resource, verb in grants(permissions) - grants(covered):
        left.setdefault((group, resource), set()).add(verb)
    return tuple(Permission(g, r, frozenset(v)) for (g, r), v in sorted(left.items()))


@dataclass(frozen=True, slots=True)
class Access:
    """The rights one deployment of the agent needs, and where.

    ``cluster``: in every namespace (a ClusterRole); ``namespaces``: in each named namespace only
    (a Role each); ``lease_namespace``: where the leader-election Lease lives (None: no election);
    ``approvals_namespace``: where the approval ConfigMaps live (None: not on the cluster).
    """

    cluster: tuple[Permission, ...] = ()
    namespaces: Mapping[str, tuple[Permission, ...]] = field(default_factory=lambda: MappingProxyType({}))
    lease_namespace: str | None = None
    approvals_namespace: str | None = None

    def __post_init__(self) -> None:
        own = [n for n in (self.lease_namespace, self.approvals_namespace) if n]
        for namespace in (*self.namespaces, *own):
            check_label("namespace", namespace)

    @property
    def empty(self) -> bool:
        """True when the agent calls no Kubernetes API at all."""
        return not (
            self.cluster or any(self.namespaces.values()) or self.lease_namespace or self.approvals_namespace
        )


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


def manifests(access: Access, namespace: str = "aiops", name: str = "aiops-agent") -> list[dict[str, Any]]:
    """The roles ``access`` needs and their bindings to the ServiceAccount ``namespace/name``.

    A ClusterRole and ClusterRoleBinding for the cluster-wide rights; a Role and RoleBinding
    ``name`` in each namespace with rights of its own; the Role and RoleBinding
    ``name-leader-election`` for the Lease; the Role and RoleBinding ``name-approvals`` for the
    approval ConfigMaps.
    """
    check_label("service account namespace", namespace)
    check_subdomain("service account name", name)
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "aiops"}
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
    api = "rbac.authorization.k8s.io/v1"

    def meta(object_name: str, where: str | None) -> dict[str, Any]:
        found: dict[str, Any] = {"name": object_name}
        if where is not None:
            found["namespace"] = where
        found["labels"] = dict(labels)
        return found

    def role(
        kind: str, role_name: str, where: str | None, perms: Iterable[Permission]
    ) -> list[dict[str, Any]]:
        return [
            {"apiVersion": api, "kind": kind, "metadata": meta(role_name, where), "rules": rules(perms)},
            {
                "apiVersion": api,
                "kind": f"{kind}Binding",
                "metadata": meta(role_name, where),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role_name},
                "subjects": subject,
            },
        ]

    found: list[dict[str, Any]] = []
    if access.cluster:
        found += role("ClusterRole", name, None, access.cluster)
    for where, perms in sorted(access.namespaces.items()):
        if perms:
            found += role("Role", name, where, perms)
    if access.lease_namespace:
        found += role("Role", f"{name}-leader-election", access.lease_namespace, LEADER_ELECTION_PERMISSIONS)
    if access.approvals_namespace:
        found += role("Role", f"{name}-approvals", access.approvals_namespace, APPROVALS_PERMISSIONS)
    return found
