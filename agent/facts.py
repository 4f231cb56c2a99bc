"""Facts about targets, read from the cluster: what playbook ``when`` conditions ask for, and what
the agent's own records on the objects say it did (they outlive its memory)."""

from __future__ import annotations

import logging
from datetime import datetime

from agent.clock import Clock
from remediations.errors import KubeError, NotFoundError
from remediations.kube import KubeClients, deadline
from remediations.rollback import history, rollbacks_of, version_changes
from remediations.state import AGENT_ACTIONS, MAX_ACTIONS, RecordedAction, recorded_actions
from remediations.types import Target

log = logging.getLogger("aiops.facts")


class KubeFacts:
    """``last_rollout``: when a Deployment last changed version (cached briefly).

    A rollout creates a ReplicaSet for the new pod template; a rollback by the agent re-uses an old
    one and is recorded on the Deployment (``aiops.dev/rollbacks``). Both count: an error spike
    soon after a rollback is as much the change's doing as one after a rollout. Two do not: the
    ReplicaSet of revision 1, the Deployment's creation, with no earlier version to go back to; and
    a restart (``kubectl rollout restart``, the ``restart`` action), whose ReplicaSet differs from
    the one before only by ``kubectl.kubernetes.io/restartedAt``: new pods of the same version.
    None when there was no rollout, for other kinds and on API errors.

    ``actions_on`` / ``actions_by_agent``: what the executor recorded before each action
    (``aiops.dev/actions``), for cooldowns and budgets that survive restarts. Every read ends within
    ``read_deadline``.
    """

    def __init__(
        self,
        kube: KubeClients,
        clock: Clock,
        ttl: float = 30.0,
        agent_record: Target | None = None,
        read_deadline: float = 5.0,
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.ttl = ttl
        self.agent_record = agent_record
        """Where the executor records every action of the agent (its ``agent_record``); None: nowhere."""
        self.read_deadline = read_deadline
        """Each fact is read within this long (retries included): the engine loop asks for facts,
        and a slow API server must not stall it for a request's full timeouts."""
        self._cache: dict[Target, tuple[float, float | None]] = {}
        self._records: dict[Target, tuple[float, list[RecordedAction] | None]] = {}

    def last_rollout(self, target: Target) -> float | None:
        """When the target's last rollout started, or None when unknown or never."""
        if target.kind != "Deployment":
            return None
        now = self.clock.now()
        cached = self._cache.get(target)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        try:
            with deadline(self.read_deadline):
                deployment = self.kube.get("Deployment", target.namespace, target.name)
                created = [
                    (rs.get("metadata") or {}).get("creationTimestamp")
                    for rs in version_changes(history(self.kube, deployment))
                ]
        except KubeError as exc:
            log.warning("cannot read the rollout history of %s: %s", target, exc)
            return None
        stamps = [_epoch(c) for c in created if isinstance(c, str)]
        stamps += [r.time for r in rollbacks_of(deployment)]
        result = max(stamps) if stamps else None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[target] = (now, result)
        return result

    def last_rollback(self, target: Target) -> float | None:
        """When the agent last rolled the Deployment back (``aiops.dev/rollbacks``); None when
        never, for other kinds and on API errors (read fresh: a repeated fix is rare)."""
        if target.kind != "Deployment":
            return None
        try:
            with deadline(self.read_deadline):
                deployment = self.kube.get("Deployment", target.namespace, target.name)
        except KubeError as exc:
            log.warning("cannot read the rollbacks of %s: %s", target, exc)
            return None
        done = rollbacks_of(deployment)
        return done[-1].time if done else None

    def actions_on(self, target: Target) -> list[RecordedAction] | None:
        """The actions recorded on the target (``aiops.dev/actions``); empty when none or when the
        target is missing; None when it cannot be read (cached for ``ttl``, failures too)."""
        return self._recorded(target, MAX_ACTIONS)

    def actions_by_agent(self) -> list[RecordedAction] | None:
        """The agent's actions of the last hour, from the agent-wide record; None when it cannot be
        read (cached for ``ttl``, failures too)."""
        if self.agent_record is None:
            return []
        return self._recorded(self.agent_record, AGENT_ACTIONS)

    def _recorded(self, where: Target, limit: int) -> list[RecordedAction] | None:
        now = self.clock.now()
        cached = self._records.get(where)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        found: list[RecordedAction] | None
        try:
            with deadline(self.read_deadline):
                found = recorded_actions(self.kube.get(where.kind, where.namespace, where.name), limit)
        except NotFoundError:
            found = []
        except (KubeError, ValueError) as exc:
            log.warning("cannot read the actions recorded on %s: %s", where, exc)
            found = None
        if len(self._records) > 10_000:
            self._records.clear()
        self._records[where] = (now, found)
        return found


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
