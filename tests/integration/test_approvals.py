"""Pending approvals on ConfigMaps, shared by replicas, against the twin over HTTP.

Two executor objects with different instance names stand for two replicas: each has its own
Kubernetes clients and audit, both read and write one ConfigMap store. Decisions go through the
``aiops approve`` / ``aiops reject`` command line, as a person would make them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from agent.approvals import (
    APPROVAL_LABEL,
    ApprovalError,
    ApprovalLimits,
    ApprovalRecord,
    ApprovalState,
    Change,
    ConfigMapStore,
    approval_id,
)
from agent.audit import Audit, MemoryAuditSink
from agent.cli import EXIT_FAILURE, EXIT_OK, main
from agent.config import ExecutorConfig
from agent.executor import KubeExecutor
from agent.leader import StaticLeader
from agent.metrics import AgentMetrics
from agent.playbook.guardrails import GuardrailDefaults, effective, protecting
from agent.playbook.loader import load_sources
from agent.playbook.requests import Approval, Proposal
from agent.playbook.runtime import PlaybookRuntime
from agent.playbook.settings import PlaybooksConfig
from remediations.kube import KubeSettings, connect
from remediations.registry import make_request
from remediations.types import ActionResult, ActionStatus, SignalFacts, Target
from tests.integration.test_remediation_support import Cluster, deployment_body, open_cluster

pytestmark = pytest.mark.integration

TTL = 600.0
TAKEOVER = 60.0


@pytest.fixture
def cluster(twin_cluster: Any) -> Iterator[Cluster]:
    with open_cluster(twin_cluster) as c:
        yield c


class Replica:
    """One replica's executor: its own clients and audit, the shared ConfigMap store."""

    def __init__(self, cluster: Cluster, instance: str, **approvals: Any) -> None:
        self.cluster = cluster
        self.instance = instance
        self.kube = connect(
            cluster.env.kubeconfig, clock=cluster.clock, settings=KubeSettings(read_timeout=5.0)
        )
        self.memory = MemoryAuditSink()
        self.reported: list[ActionResult] = []
        settings = {"store": "configmap", "namespace": cluster.ns, "takeover": TAKEOVER, **approvals}
        self.config = ExecutorConfig(
            enabled=True, audit_file=None, audit_topic=None, approval_ttl=TTL, approvals=settings
        )
        self.executor = KubeExecutor(
            self.kube,
            self.config,
            cluster.clock,
            Audit([self.memory]),
            leader=StaticLeader(True),
            instance=instance,
        )
        # requests of no loaded playbook: the store and the claims are tested here, the policy check
        # of approved requests in test_approved_requests_the_engine_would_not_propose_are_refused
        self.executor.bind(self.reported.append, lambda _: None)

    def executed(self) -> int:
        return self.memory.decisions().count("executed")

    def close(self) -> None:
        self.kube.close()


@pytest.fixture
def replicas(cluster: Cluster) -> Iterator[tuple[Replica, Replica]]:
    a, b = Replica(cluster, "replica-a"), Replica(cluster, "replica-b")
    yield a, b
    a.close()
    b.close()


class RacingStore(ConfigMapStore):
    """The ConfigMap store whose first change runs ``meanwhile`` between its read and its write."""

    def __init__(self, kube: Any, namespace: str, meanwhile: Callable[[], object]) -> None:
        super().__init__(kube, namespace)
        self.meanwhile: Callable[[], object] | None = meanwhile
        self.seen: list[ApprovalState] = []

    def change(self, approval: str, change: Change) -> ApprovalRecord | None:
        def in_between(current: ApprovalRecord) -> ApprovalRecord | None:
            self.seen.append(current.state)
            if self.meanwhile is not None:
                meanwhile, self.meanwhile = self.meanwhile, None
                meanwhile()
            return change(current)

        return super().change(approval, in_between)


def proposal(cluster: Cluster, incident: str = "inc-1", name: str = "web") -> Proposal:
    request = make_request(
        "scale",
        Target("Deployment", cluster.ns, name),
        {"by": 2},
        playbook="pb",
        incident=incident,
        step="actions[0]",
        signal=SignalFacts(1.0),
    )
    return Proposal(request, cluster.clock.now(), Approval.REQUIRED)


def replicas_of(cluster: Cluster, name: str = "web") -> int:
    return int(cluster.read("Deployment", name)["spec"]["replicas"])


def configmaps(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """The approval ConfigMaps by name, read with the official client."""
    raw = cluster.core.list_namespaced_config_map(
        cluster.ns, label_selector=f"{APPROVAL_LABEL}=true", _preload_content=False
    )
    return {cm["metadata"]["name"]: cm for cm in json.loads(raw.data)["items"]}


def record_in(cm: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(cm["data"]["record"]))


def cli(cluster: Cluster, *args: str) -> int:
    return main([*args, "--namespace", cluster.ns, "--kubeconfig", str(cluster.env.kubeconfig)])


def test_a_pending_approval_is_a_configmap_decided_by_the_cli_and_run_by_another_replica(
    cluster: Cluster, replicas: tuple[Replica, Replica], capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.deployment("web", replicas=2)
    a, b = replicas
    req = proposal(cluster)
    pending = a.executor.submit(req)
    assert pending.status is ActionStatus.PENDING_APPROVAL, pending
    approval = str(pending.details["approval"])
    assert approval == approval_id(req.key)
    [(name, cm)] = configmaps(cluster).items()
    assert name == f"aiops-approval-{approval}"
    assert cm["metadata"]["labels"]["aiops.dev/approval-state"] == "pending"
    assert cm["metadata"]["labels"]["aiops.dev/approval-finished"] == "false"
    stored = record_in(cm)
    assert (stored["state"], stored["owner"], stored["key"]) == ("pending", "replica-a", req.key)

    assert cli(cluster, "approvals") == EXIT_OK
    listed = capsys.readouterr()
    assert approval in listed.out
    assert f"scale Deployment/{cluster.ns}/web" in listed.out
    assert listed.err == "", "told where to look, it says nothing about it"
    assert cli(cluster, "approve", approval, "--by", "alice", "--reason", "go") == EXIT_OK
    assert capsys.readouterr().out.startswith(f"approved: scale on Deployment/{cluster.ns}/web")
    assert configmaps(cluster)[name]["metadata"]["labels"]["aiops.dev/approval-state"] == "approved"

    # replica-a is gone; replica-b owns the target now and its engine proposes the same step again
    again = b.executor.submit(req)
    assert again.status is ActionStatus.PENDING_APPROVAL
    assert record_in(configmaps(cluster)[name])["owner"] == "replica-b", "b adopted the record"
    b.executor.tick()
    assert [r.status for r in b.reported] == [ActionStatus.EXECUTED]
    assert replicas_of(cluster) == 4
    assert b.memory.decisions() == ["approved", "started", "executed"]
    assert configmaps(cluster)[name]["metadata"]["labels"]["aiops.dev/approval-finished"] == "true"
    done = record_in(configmaps(cluster)[name])
    assert done["state"] == "done"
    assert done["outcome"]["status"] == "executed"
    assert done["settled"] is not None
    # a decided record cannot be decided again, from any replica
    assert cli(cluster, "reject", approval) == EXIT_FAILURE
    assert "is done, not pending" in capsys.readouterr().err
    twin = cluster.twin
    assert twin is not None
    twin.server.clear_requests()
    a.executor.tick()
    b.executor.tick()
    assert replicas_of(cluster) == 4
    assert a.executed() + b.executed() == 1
    # a tick reads the unfinished records only, by one LIST; every PRUNE_EVERY it lists them all
    # for the retention (replica-a's first prune comes now, replica-b's came with its first tick)
    unfinished = f"/api/v1/namespaces/{cluster.ns}/configmaps?labelSelector=aiops.dev/approval%3Dtrue"
    on_configmaps = [(r.method, r.path) for r in twin.server.requests if "configmaps" in r.path]
    assert on_configmaps == [
        ("GET", unfinished + "%2Caiops.dev/approval-finished%3Dfalse"),
        ("GET", unfinished),
        ("GET", unfinished + "%2Caiops.dev/approval-finished%3Dfalse"),
    ]


def test_the_same_step_of_an_incident_opened_again_after_a_failover_shares_the_decision(
    cluster: Cluster, replicas: tuple[Replica, Replica]
) -> None:
    """The survivor opens the incident anew (another incident id, so another idempotency key):
    its proposal of the same step finds the open record, takes it over with its own key, and the
    decision already made applies; one ConfigMap, one execution, reported under the new key."""
    cluster.deployment("web", replicas=2)
    a, b = replicas
    first = a.executor.submit(proposal(cluster, incident="inc-on-a"))
    approval = str(first.details["approval"])
    assert cli(cluster, "approve", approval, "--by", "alice") == EXIT_OK
    reopened = proposal(cluster, incident="inc-on-b")
    answer = b.executor.submit(reopened)
    assert answer.status is ActionStatus.PENDING_APPROVAL
    assert answer.details["approval"] == approval
    [cm] = configmaps(cluster).values()
    stored = record_in(cm)
    assert (stored["key"], stored["owner"], stored["state"]) == (reopened.key, "replica-b", "approved")
    a.executor.tick()  # replica-a (were it alive) no longer owns it
    b.executor.tick()
    assert (a.executed(), b.executed()) == (0, 1)
    assert [(r.key, r.status) for r in b.reported] == [(reopened.key, ActionStatus.EXECUTED)]
    assert replicas_of(cluster) == 4
    # proposed once more (a restarted engine): the key is known, no other run
    again = b.executor.submit(reopened)
    assert again.status is ActionStatus.SKIPPED
    assert "already executed" in again.message
    assert replicas_of(cluster) == 4
    assert b.executed() == 1


def test_an_approval_whose_replica_died_is_taken_over_after_the_takeover_delay(
    cluster: Cluster, replicas: tuple[Replica, Replica]
) -> None:
    cluster.deployment("web", replicas=2)
    a, b = replicas
    approval = str(a.executor.submit(proposal(cluster)).details["approval"])
    assert cli(cluster, "approve", approval, "--by", "alice") == EXIT_OK
    decided = ConfigMapStore(b.kube, cluster.ns).get(approval).decided_at
    assert decided is not None
    b.executor.tick()  # replica-a's, decided just now: replica-a may still act on it
    assert replicas_of(cluster) == 2
    cluster.clock.set(decided + TAKEOVER)
    b.executor.tick()
    assert replicas_of(cluster) == 4
    assert b.executed() == 1
    assert [r.status for r in b.reported] == [ActionStatus.EXECUTED]


def test_two_replicas_ticking_at_once_execute_an_approved_record_exactly_once(
    cluster: Cluster, replicas: tuple[Replica, Replica]
) -> None:
    a, b = replicas
    names = [f"web-{i}" for i in range(4)]
    approvals = []
    for name in names:
        cluster.deployment(name, replicas=2)
        approval = str(a.executor.submit(proposal(cluster, name=name)).details["approval"])
        assert cli(cluster, "approve", approval) == EXIT_OK
        approvals.append(approval)
    cluster.clock.advance(TAKEOVER + 1)  # both may act on every record now: only one must
    start = threading.Barrier(2)

    def tick(replica: Replica) -> None:
        start.wait()
        replica.executor.tick()

    threads = [threading.Thread(target=tick, args=(r,)) for r in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [replicas_of(cluster, name) for name in names] == [4, 4, 4, 4]
    assert a.executed() + b.executed() == len(names)
    assert a.memory.decisions().count("approved") + b.memory.decisions().count("approved") == len(names)
    records = configmaps(cluster)
    assert {record_in(records[f"aiops-approval-{x}"])["outcome"]["status"] for x in approvals} == {"executed"}
    for replica in (a, b):  # and again: nothing left to do
        replica.executor.tick()
    assert a.executed() + b.executed() == len(names)


def test_the_replica_that_loses_the_claim_by_a_conflict_skips(
    cluster: Cluster, replicas: tuple[Replica, Replica]
) -> None:
    """Replica a reads the approved record and, before its claim is written, replica b claims and
    runs it: a's conditional write gets a 409, a reads again, finds it done, and does nothing."""
    cluster.deployment("web", replicas=2)
    a, b = replicas
    approval = str(a.executor.submit(proposal(cluster)).details["approval"])
    assert cli(cluster, "approve", approval) == EXIT_OK
    cluster.clock.advance(TAKEOVER + 1)
    racing = RacingStore(a.kube, cluster.ns, meanwhile=b.executor.tick)
    a.executor.approvals = racing  # b claims and executes between a's read and a's write
    twin = cluster.twin
    assert twin is not None
    twin.server.clear_requests()
    a.executor.tick()
    assert racing.seen[:2] == [ApprovalState.APPROVED, ApprovalState.DONE], "a read again after its 409"
    conflicts = [r for r in twin.server.requests if r.code == 409 and "configmaps" in r.path]
    assert len(conflicts) == 1
    assert (a.executed(), b.executed()) == (0, 1)
    assert a.reported == []
    assert replicas_of(cluster) == 4


def test_an_unanswered_approval_expires_once_and_cannot_be_approved_after(
    cluster: Cluster, replicas: tuple[Replica, Replica], capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.deployment("web", replicas=2)
    a, b = replicas
    approval = str(a.executor.submit(proposal(cluster)).details["approval"])
    expires = ConfigMapStore(a.kube, cluster.ns).get(approval).expires
    cluster.clock.set(expires)
    b.executor.tick()  # replica-a's to expire first
    assert b.reported == []
    a.executor.tick()
    assert [(r.status, r.message) for r in a.reported] == [
        (ActionStatus.FAILED, f"approval {approval} expired unanswered")
    ]
    assert record_in(configmaps(cluster)[f"aiops-approval-{approval}"])["state"] == "expired"
    cluster.clock.advance(TAKEOVER)
    b.executor.tick()
    a.executor.tick()
    assert len(a.reported) + len(b.reported) == 1, "expired once"
    assert cli(cluster, "approve", approval) == EXIT_FAILURE
    assert "is expired, not pending" in capsys.readouterr().err
    assert replicas_of(cluster) == 2


def pending_record(store: ConfigMapStore, now: float, name: str = "web") -> ApprovalRecord:
    request = {"action": "scale", "target": {"name": name}}
    return store.create(f"pb/Deployment/ns/{name}/inc/0", request, now, TTL, f"scale {name} by 2")


def test_an_approval_racing_the_expiry_keeps_the_decision_that_landed_first(cluster: Cluster) -> None:
    """The expiry reads the record, a person approves it meanwhile, the expiry's write conflicts
    (409), reads again, sees the approval and leaves it: neither decision is lost."""
    now = cluster.clock.now()
    executor_side = ConfigMapStore(cluster.kube, cluster.ns)
    person_side = ConfigMapStore(connect(cluster.env.kubeconfig), cluster.ns)
    record = pending_record(executor_side, now)
    seen: list[ApprovalState] = []

    def expire(current: ApprovalRecord) -> ApprovalRecord | None:
        seen.append(current.state)
        if len(seen) == 1:  # between the expiry's read and its write
            person_side.decide(record.id, True, "alice", now)
        return _expired(current) if current.state is ApprovalState.PENDING else None

    assert executor_side.change(record.id, expire) is None
    assert seen == [ApprovalState.PENDING, ApprovalState.APPROVED], "re-read after the 409"
    assert executor_side.get(record.id).state is ApprovalState.APPROVED
    assert executor_side.get(record.id).decided_by == "alice"

    # the other way round: the expiry lands first, the approval re-reads and is refused
    second = pending_record(executor_side, now, name="api")

    def expire_first(current: ApprovalRecord) -> ApprovalRecord | None:
        return _expired(current) if current.state is ApprovalState.PENDING else None

    racing = RacingStore(
        person_side.kube, cluster.ns, meanwhile=lambda: executor_side.change(second.id, expire_first)
    )
    with pytest.raises(ApprovalError, match="is expired, not pending"):
        racing.decide(second.id, True, "bob", now)
    assert racing.seen == [ApprovalState.PENDING, ApprovalState.EXPIRED], "re-read after the 409"
    assert executor_side.get(second.id).state is ApprovalState.EXPIRED
    person_side.kube.close()


def _expired(record: ApprovalRecord) -> ApprovalRecord:
    return replace(record, state=ApprovalState.EXPIRED)


def test_open_approvals_are_capped_and_the_action_fails_naming_the_cap(
    cluster: Cluster, replicas: tuple[Replica, Replica]
) -> None:
    for name in ("web-1", "web-2", "web-3"):
        cluster.deployment(name, replicas=2)
    capped = Replica(cluster, "replica-c", max_pending=2)
    try:
        first = capped.executor.submit(proposal(cluster, name="web-1"))
        second = capped.executor.submit(proposal(cluster, name="web-2"))
        assert {first.status, second.status} == {ActionStatus.PENDING_APPROVAL}
        third = capped.executor.submit(proposal(cluster, name="web-3"))
        assert third.status is ActionStatus.FAILED
        assert "2 approvals are open" in third.message
        assert "executor.approvals.max_pending = 2" in third.message
        assert capped.memory.records[-1].guardrail == "approval"
        assert len(configmaps(cluster)) == 2
        # the same step proposed again is the record it has, not a new one
        assert capped.executor.submit(proposal(cluster, name="web-1")).status is ActionStatus.PENDING_APPROVAL
        assert len(configmaps(cluster)) == 2
        # a decision frees a slot once it has run
        assert cli(cluster, "approve", str(first.details["approval"])) == EXIT_OK
        capped.executor.tick()
        assert replicas_of(cluster, "web-1") == 4
        assert capped.executor.submit(proposal(cluster, name="web-3")).status is ActionStatus.PENDING_APPROVAL
        assert len(configmaps(cluster)) == 3
    finally:
        capped.close()


def test_record_size_is_capped_plans_are_cut_and_oversized_requests_refused(cluster: Cluster) -> None:
    store = ConfigMapStore(cluster.kube, cluster.ns, ApprovalLimits(max_record_bytes=4096))
    now = cluster.clock.now()
    long_plan = "\n".join(f"line {i}: " + "x" * 60 for i in range(400))
    cut = store.create("pb/a", {"action": "scale"}, now, TTL, long_plan)
    stored = store.get(cut.id)
    assert stored.plan.startswith("line 0: ")
    assert stored.plan.endswith("... (plan cut)")
    assert len(configmaps(cluster)[f"aiops-approval-{cut.id}"]["data"]["record"].encode()) <= 4096
    with pytest.raises(
        ApprovalError,
        match=r"without its plan, over the limit of 4096 \(executor.approvals.max_record_bytes\)",
    ):
        store.create("pb/b", {"action": "scale", "params": {"blob": "y" * 5000}}, now, TTL)
    assert f"aiops-approval-{approval_id('pb/b')}" not in configmaps(cluster)


def test_settled_approvals_are_deleted_after_the_retention(
    cluster: Cluster, replicas: tuple[Replica, Replica]
) -> None:
    cluster.deployment("web", replicas=2)
    cluster.deployment("api", replicas=2)
    a = Replica(cluster, "replica-r", retention=3600)
    try:
        done = str(a.executor.submit(proposal(cluster, name="web")).details["approval"])
        waiting = str(a.executor.submit(proposal(cluster, name="api")).details["approval"])
        assert cli(cluster, "approve", done) == EXIT_OK
        a.executor.tick()
        assert replicas_of(cluster) == 4
        assert len(configmaps(cluster)) == 2
        cluster.clock.advance(3600 + 61)  # past the retention of the done one, and a prune interval
        # still in the TTL: the waiting one stays (TTL 600 s has passed: it expires now, settles now)
        a.executor.tick()
        left = configmaps(cluster)
        assert f"aiops-approval-{done}" not in left
        assert record_in(left[f"aiops-approval-{waiting}"])["state"] == "expired"
        cluster.clock.advance(3600 + 61)
        a.executor.tick()
        assert configmaps(cluster) == {}
    finally:
        a.close()


def test_a_store_that_does_not_answer_fails_the_step_retryably_and_a_later_try_queues_it(
    cluster: Cluster, replicas: tuple[Replica, Replica]
) -> None:
    cluster.deployment("web", replicas=2)
    a, _ = replicas
    twin = cluster.twin
    assert twin is not None
    twin.server.faults.error(503, verb="list", resource="configmaps")  # every try, every retry
    failed = a.executor.submit(proposal(cluster))
    assert failed.status is ActionStatus.FAILED
    assert failed.retryable, "the engine tries again within the playbook's deadline"
    assert f"cannot list approvals (ConfigMaps in namespace {cluster.ns})" in failed.message
    assert failed.error == "ApprovalsUnavailableError"
    twin.server.faults.clear()
    assert configmaps(cluster) == {}
    assert a.executor.submit(proposal(cluster)).status is ActionStatus.PENDING_APPROVAL
    assert len(configmaps(cluster)) == 1


@pytest.mark.parametrize("it_wrote", [False, True])
def test_a_claim_whose_replica_died_is_claimed_again_once_stale(
    cluster: Cluster, replicas: tuple[Replica, Replica], it_wrote: bool
) -> None:
    """Replica a claimed the approved record and died before it reported (before or after its
    action wrote): after ``takeover`` plus the action deadline replica b claims it again; the
    action runs if it had not (once in all), and is skipped by its key on the target if it had."""
    cluster.deployment("web", replicas=2)
    a, b = replicas
    req = proposal(cluster)
    approval = str(a.executor.submit(req).details["approval"])
    assert cli(cluster, "approve", approval) == EXIT_OK
    store = ConfigMapStore(b.kube, cluster.ns)
    claimed_at = cluster.clock.now()
    running = {"status": "running", "by": "replica-a", "since": claimed_at}
    store.change(approval, lambda r: replace(r, state=ApprovalState.DONE, outcome=running))
    if it_wrote:  # the action ran on replica-a, which died before writing the outcome
        assert a.executor.submit(replace(req, approval=Approval.NONE)).status is ActionStatus.EXECUTED
    assert replicas_of(cluster) == (4 if it_wrote else 2)
    stale = TAKEOVER + b.config.action_deadline
    cluster.clock.set(claimed_at + stale - 1)
    b.executor.tick()
    assert b.reported == []
    cluster.clock.set(claimed_at + stale)
    b.executor.tick()
    assert replicas_of(cluster) == 4, "run once in all"
    [result] = b.reported
    assert result.status is (ActionStatus.SKIPPED if it_wrote else ActionStatus.EXECUTED), result.message
    done = store.get(approval)
    assert done.settled is not None
    assert done.outcome["status"] == result.status.value
    b.executor.tick()
    assert len(b.reported) == 1


def test_a_rejection_is_reported_once_and_answers_a_later_proposal_of_the_step(
    cluster: Cluster, replicas: tuple[Replica, Replica], capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.deployment("web", replicas=2)
    a, b = replicas
    req = proposal(cluster)
    approval = str(a.executor.submit(req).details["approval"])
    assert cli(cluster, "reject", approval, "--by", "bob", "--reason", "not now") == EXIT_OK
    assert capsys.readouterr().out.startswith("rejected: scale")
    b.executor.tick()  # replica-a's to report
    a.executor.tick()
    assert [(r.status, r.message) for r in a.reported] == [
        (ActionStatus.SKIPPED, f"approval {approval} rejected by bob: not now")
    ]
    a.executor.tick()
    assert len(a.reported) == 1
    # the engine proposes the step again (a restart): the rejection answers it, nothing waits
    again = b.executor.submit(req)
    assert again.status is ActionStatus.SKIPPED
    assert again.message == f"approval {approval} is rejected: skipped"
    assert replicas_of(cluster) == 2
    assert len(configmaps(cluster)) == 1


def test_a_configmap_that_is_no_record_stops_neither_the_executor_nor_the_cli(
    cluster: Cluster, replicas: tuple[Replica, Replica], capsys: pytest.CaptureFixture[str]
) -> None:
    """Anyone who may write ConfigMaps there can label one as an approval: one nested past the JSON
    parser's depth, or with a number past a float, is skipped with a warning; the others are run."""
    cluster.deployment("web", replicas=2)
    a, _ = replicas
    pending = a.executor.submit(proposal(cluster))
    approval = str(pending.details["approval"])
    bad = {
        "aaaaaaaaaaaa": "[" * 200_000,
        "bbbbbbbbbbbb": json.dumps(
            {"id": "bbbbbbbbbbbb", "key": "k", "state": "approved", "created": 0, "expires": 10**400}
            | {"request": {}}
        ),
    }
    for approval_of, text in bad.items():
        cluster.core.create_namespaced_config_map(
            cluster.ns,
            {
                "metadata": {
                    "name": f"aiops-approval-{approval_of}",
                    "labels": {APPROVAL_LABEL: "true", "aiops.dev/approval-finished": "false"},
                },
                "data": {"record": text},
            },
        )
    assert cli(cluster, "approvals") == EXIT_OK
    assert approval in capsys.readouterr().out
    assert cli(cluster, "approve", approval, "--by", "alice") == EXIT_OK
    a.executor.tick()
    assert [r.status for r in a.reported] == [ActionStatus.EXECUTED]
    assert replicas_of(cluster) == 4
    assert cli(cluster, "approve", "aaaaaaaaaaaa") == EXIT_FAILURE
    assert "approval 'aaaaaaaaaaaa' is unreadable: nested too deep" in capsys.readouterr().err


PLAYBOOK = """
apiVersion: aiops/v1
kind: Playbook
metadata: {name: pb}
spec:
  trigger: {signal: anomaly, match: {namespace: ".+", deployment: ".+"}}
  target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
  actions:
    - scale: {by: 2}
  guardrails: {maxReplicas: 6, approval: required}
"""


def plant(cluster: Cluster, request: dict[str, Any], key: str | None = None) -> str:
    """An approved record written straight into the approvals namespace, as anyone who may write
    ConfigMaps there can: the agent never proposed it."""
    key = key if key is not None else str(request["key"])
    now = cluster.clock.now()
    record = ApprovalRecord(
        id=approval_id(key),
        key=key,
        state=ApprovalState.APPROVED,
        created=now,
        expires=now + TTL,
        request=request,
        decided_by="mallory",
        decided_at=now,
    )
    body = {
        "metadata": {
            "name": f"aiops-approval-{record.id}",
            "labels": {
                APPROVAL_LABEL: "true",
                "aiops.dev/approval-state": "approved",
                "aiops.dev/approval-finished": "false",
            },
        },
        "data": {"record": json.dumps(record.to_dict())},
    }
    cluster.core.create_namespaced_config_map(cluster.ns, body)
    return record.id


def test_approved_requests_the_engine_would_not_propose_are_refused(
    cluster: Cluster, replicas: tuple[Replica, Replica], capsys: pytest.CaptureFixture[str]
) -> None:
    twin = cluster.twin
    assert twin is not None
    a, _ = replicas
    # the daemon's composition (agent/app.py): the engine's runtime binds its policy to the executor
    defaults = protecting(GuardrailDefaults(), "aiops")
    runtime = PlaybookRuntime(
        PlaybooksConfig(guardrails=defaults), cluster.clock, AgentMetrics(), executor=a.executor
    )
    playbooks = load_sources([("pb.yaml", PLAYBOOK)])
    runtime.engine.replace_playbooks(playbooks)
    loaded = playbooks.get("pb")
    assert loaded is not None
    limits = effective(loaded.model.spec.guardrails, defaults).limits()
    for name in ("web", "api", "other", "wide"):
        cluster.deployment(name, replicas=5)
    cluster.apps.create_namespaced_deployment("kube-system", deployment_body("coredns", replicas=2))

    def request(target: Target, incident: str, **changes: Any) -> Proposal:
        made = make_request(
            "scale",
            target,
            {"by": 2},
            playbook="pb",
            incident=incident,
            step="actions[0]",
            signal=SignalFacts(1.0),
            limits=changes.pop("limits", limits),
        )
        return Proposal(made, cluster.clock.now(), Approval.REQUIRED)

    # the legitimate one: proposed, pending, approved by a person
    legit = request(Target("Deployment", cluster.ns, "web"), "inc-1")
    assert a.executor.submit(legit).status is ActionStatus.PENDING_APPROVAL
    assert cli(cluster, "approve", approval_id(legit.key), "--by", "alice") == EXIT_OK
    # a pending record edited before it is approved: its request now names another target
    edited = request(Target("Deployment", cluster.ns, "api"), "inc-2")
    assert a.executor.submit(edited).status is ActionStatus.PENDING_APPROVAL
    moved = edited.to_dict()
    moved["target"] = {"kind": "Deployment", "namespace": cluster.ns, "name": "other"}
    a.executor.approvals.change(approval_id(edited.key), lambda r: replace(r, request=moved))
    assert cli(cluster, "approve", approval_id(edited.key), "--by", "alice") == EXIT_OK
    # made up: a scale in a protected namespace; one with limits wider than the playbook's
    protected = plant(cluster, request(Target("Deployment", "kube-system", "coredns"), "inc-3").to_dict())
    wide = request(
        Target("Deployment", cluster.ns, "wide"), "inc-4", limits=replace(limits, max_replicas=1000)
    )
    widened = plant(cluster, wide.to_dict())
    capsys.readouterr()

    twin.server.clear_requests()
    a.executor.tick()

    writes = cluster.writes()
    assert not {name for _, _, name in writes} & {"coredns", "api", "other", "wide"}, writes
    assert replicas_of(cluster, "api") == 5
    assert replicas_of(cluster, "other") == 5
    assert replicas_of(cluster, "wide") == 5
    assert int(cluster.apps.read_namespaced_deployment("coredns", "kube-system").spec.replicas) == 2
    assert replicas_of(cluster, "web") == 6, "the approved one ran, within the playbook's maxReplicas"
    done = {r.id: r for r in a.executor.approvals.records()}
    assert done[approval_id(legit.key)].outcome["status"] == "executed"
    reasons = {
        protected: f"approval {protected} asks to act on Deployment/kube-system/coredns: "
        "namespace 'kube-system' is protected: the agent does not act there "
        "(playbooks.guardrails.unprotect lifts it): refused",
        widened: f"approval {widened} asks for limits wider than playbook pb allows (maxReplicas 1000 > 6)",
        approval_id(edited.key): f"approval {approval_id(edited.key)} carries key",
    }
    for approval, reason in reasons.items():
        record = done[approval]
        assert (record.state, record.outcome["status"]) == (ApprovalState.DONE, "failed"), record
        assert str(record.outcome["message"]).startswith(reason), record.outcome
        assert record.settled is not None
    refused = [r for r in a.memory.records if r.guardrail == "approval" and r.decision.value == "failed"]
    assert sorted(r.message.split(" ")[1] for r in refused) == sorted(reasons)
    assert a.memory.decisions().count("executed") == 1
    # settled: the next tick leaves them alone
    twin.server.clear_requests()
    a.executor.tick()
    assert cluster.writes() == []
