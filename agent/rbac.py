"""The Kubernetes RBAC one deployment of the agent needs: its config and its playbooks decide.

Only what the loaded playbooks can make the agent call is granted: for each playbook, the API
access of the actions its steps name (``actions`` and ``onFailure``) on its target's kind (from
:data:`remediations.rbac.TARGET_PERMISSIONS`), the Events those actions write, the rollout
history a ``when: rolloutWithin`` condition reads, and the annotations the executor puts on a
target of a workload-changing action (its record of the action, ``aiops.dev/actions``, and
``executor.gitops: annotate``'s mark); besides, the Leases of leader election and of the agent-wide
actions record, and the ConfigMaps of pending approvals (``executor.approvals.store:
configmap``). With the executor off the agent calls no Kubernetes API, and needs nothing.

Each playbook's rights go where it may act: the namespaces its guardrails allow (the agent's
``namespaces``, narrowed by the playbook's own and by a literal target namespace), less the
protected ones, each a Role. Only a playbook that may act in every namespace (no allow-list and a
templated target namespace) makes a ClusterRole; RBAC cannot leave the protected namespaces out
of one, so there the engine's ``protected`` guardrail alone keeps the agent out of them.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.approvals import approvals_namespace
from agent.config import AgentConfig
from agent.playbook.actions import changes_workload
from agent.playbook.guardrails import GuardrailDefaults, effective, protecting
from agent.playbook.loader import LoadedPlaybook
from remediations import rbac
from remediations.rbac import Access, Permission


def playbook_permissions(playbook: LoadedPlaybook, gitops: str) -> tuple[Permission, ...]:
    """Every right one playbook can make the agent use (where it acts)."""
    spec = playbook.model.spec
    steps = [*spec.actions, *spec.on_failure]
    found = [p for step in steps for p in rbac.permissions(step.action, spec.target.kind)]
    found += rbac.AGENT_PERMISSIONS
    if any(condition.rollout_within is not None for condition in spec.when):
        found += rbac.ROLLOUT_HISTORY_PERMISSIONS
    if any(changes_workload(step.params) for step in steps):
        # the executor records each workload-changing action on its target before it writes
        # (aiops.dev/actions), and with gitops: annotate marks what it changed there
        found += rbac.annotate_permissions([spec.target.kind])
    return tuple(found)


def playbook_namespaces(playbook: LoadedPlaybook, defaults: GuardrailDefaults) -> frozenset[str] | None:
    """The namespaces ``playbook`` may act in (None: any but the protected ones)."""
    guardrails = effective(playbook.model.spec.guardrails, defaults)
    where = guardrails.namespaces
    if playbook.target_namespace.is_literal:
        literal = frozenset({playbook.target_namespace.render({})})
        where = literal if where is None else where & literal
    return None if where is None else where - guardrails.protected


def required_access(config: AgentConfig, playbooks: Iterable[LoadedPlaybook], namespace: str) -> Access:
    """What the agent in ``namespace`` (its own, protected like the cluster's) needs to run
    ``playbooks`` under ``config``."""
    executor = config.executor
    if not executor.enabled:
        return Access()
    defaults = protecting(config.playbooks.guardrails, namespace)
    cluster: list[Permission] = []
    by_namespace: dict[str, list[Permission]] = {}
    for playbook in playbooks:
        perms = playbook_permissions(playbook, executor.gitops)
        where = playbook_namespaces(playbook, defaults)
        if where is None:
            cluster += perms
        for name in where or ():
            by_namespace.setdefault(name, []).extend(perms)
    return Access(
        cluster=rbac.without(cluster, ()),
        namespaces={name: rbac.without(perms, cluster) for name, perms in sorted(by_namespace.items())},
        # the leader-election Lease and the agent-wide actions record (a Lease beside it)
        lease_namespace=(executor.lease_namespace or namespace)
        if executor.leader_election or executor.actions_record is not None
        else None,
        approvals_namespace=approvals_namespace(executor, {"POD_NAMESPACE": namespace})
        if executor.approvals.store == "configmap"
        else None,
    )
