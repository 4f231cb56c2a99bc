"""The RBAC table against what the actions really call: every action runs on the twin API server.

Each scenario plans and executes an action (remediations' own client, over HTTP) and reads the
twin's request log, where each request is classified the way the API server's authorizer sees
it: verb, API group, resource (with subresource). Two checks:

- every request an action makes is allowed by ``remediations.rbac`` for that action on a target
  of that kind (plus the agent's own permissions): an action that starts calling something new
  fails here until the table (and so ``k8s/rbac.yaml``) grants it;
- every permission the table grants is used by some scenario (least privilege: nothing granted
  "just in case"), except the DaemonSet verbs, which the twin does not serve (:data:`NOT_ON_TWIN`).

Besides, the rights ``aiops rbac`` generates for a playbook (agent/rbac.py) cover what the agent
itself calls around its actions: the executor's read of the target and its GitOps annotation,
and the rollout history a ``when: rolloutWithin`` condition reads.
"""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.audit import Audit as AuditTrail
from agent.audit import MemoryAuditSink
from agent.clock import ManualClock
from agent.config import ExecutorConfig
from agent.executor import GITOPS_DRIFT, KubeExecutor
from agent.facts import KubeFacts
from agent.leader import StaticLeader
from agent.playbook.loader import load_sources
from agent.playbook.requests import Proposal
from agent.rbac import playbook_permissions
from remediations import ActionContext, ActionResult, ActionStatus, Target, make_request, rbac
from remediations.events import record_event
from remediations.kube import KubeClients, connect
from remediations.rbac import Permission, grants
from remediations.registry import ACTIONS, get_action
from remediations.scale import ScaleAction
from remediations.state import ACTIONS as RECORDED
from tests.servers.twin import TWIN_START, TwinEnv

pytestmark = pytest.mark.e2e

IMAGE = "registry.k8s.io/pause:3.9"

Grant = tuple[str, str, str]
"""(API group, resource, verb)."""

#: Grants the twin cannot exercise: it serves no DaemonSets (restart and delete_pod act on them
#: through the same code paths as on Deployments and StatefulSets).
NOT_ON_TWIN: frozenset[tuple[str, Grant]] = frozenset(
    (action, ("apps", "daemonsets", verb))
    for action, verbs in (
        ("restart", ("get", "patch")),
        ("delete_pod", ("get", "patch")),
        ("notify", ("get",)),
    )
    for verb in verbs
)


def _template(app: str, version: str = "1") -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {
            "containers": [{"name": "app", "image": IMAGE, "env": [{"name": "VERSION", "value": version}]}],
            "terminationGracePeriodSeconds": 0,
        },
    }


def _workload(kind: str, name: str, replicas: int = 2) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": _template(name),
    }
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def _cronjob(name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A suspended CronJob whose jobTemplate runs one container."""
    pod = {"restartPolicy": "Never", "containers": [{"name": "train", "image": IMAGE}]}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": {
            "schedule": "0 3 * * *",
            "suspend": True,
            "jobTemplate": {"spec": {"template": {"spec": pod}}},
        },
    }


class _Publisher:
    """A retrain publisher that accepts everything."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def publish(self, topic: str, key: str, message: Mapping[str, Any]) -> None:
        self.sent.append(topic)


class _Webhook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Audit:
    """Runs actions on the twin and records which grants each one used."""

    env: TwinEnv
    kube: KubeClients
    clock: ManualClock
    used: dict[str, set[Grant]] = field(default_factory=dict)
    denied: list[str] = field(default_factory=list)
    runs: list[ActionResult] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return self.env.namespace

    def create(self, body: dict[str, Any]) -> None:
        """Create a fixture object (before the audited calls) and let the controllers act."""
        self.kube.create(body["kind"], self.ns, body)
        self.env.advance(5)  # controllers: ReplicaSets, pods running and ready

    def rollout(self, name: str, version: str) -> None:
        """A new revision of a Deployment (not audited)."""
        self.kube.patch("Deployment", self.ns, name, {"spec": {"template": _template(name, version)}})
        self.env.advance(5)

    def pod_of(self, app: str) -> str:
        pods = self.kube.list_objects("Pod", self.ns, label_selector=f"app={app}")
        return str(sorted(p["metadata"]["name"] for p in pods)[0])

    def run(
        self,
        action: str,
        kind: str,
        name: str,
        params: Mapping[str, Any],
        *,
        step: str = "actions[0]",
        publisher: _Publisher | None = None,
        restore: bool = False,
    ) -> ActionResult:
        """Plan and execute an action (and the scale restore if asked), auditing every request."""
        request = make_request(
            action,
            Target(kind, self.ns, name),
            dict(params),
            playbook="audit",
            incident=f"inc-{len(self.runs)}",
            step=step,
            reason="rbac audit",
        )
        ctx = ActionContext(self.kube, request, self.clock, publisher=publisher, instance="audit")
        with self.audited(action, kind):
            impl = get_action(action)
            impl.plan(ctx)
            result = impl.execute(ctx)
            if restore:
                assert isinstance(impl, ScaleAction)
                restored = impl.restore(ctx)
                assert restored.status is ActionStatus.EXECUTED, restored.message
        assert result.status is ActionStatus.EXECUTED, f"{action} on {kind}/{name}: {result.message}"
        self.runs.append(result)
        return result

    @contextmanager
    def audited(self, action: str, kind: str | None = None) -> Iterator[None]:
        """Record the requests made inside the ``with`` block as ``action``'s on a ``kind`` target."""
        self.env.server.clear_requests()
        try:
            yield
        finally:
            self.collect(action, kind)

    def collect(self, action: str, kind: str | None) -> None:
        """Each request must be one the table grants ``action`` on a target of ``kind``."""
        for record in self.env.server.requests:
            info = record.info
            grant = (info.group, info.resource_path, info.verb)
            self.used.setdefault(action, set()).add(grant)
            if not rbac.allowed(action, *grant, kind=kind):
                who = action if kind is None else f"{action} on {kind}"
                self.denied.append(f"{who}: {info.verb} {info.group or 'core'}/{info.resource_path}")


@pytest.fixture
def audit(twin_cluster: TwinEnv) -> Iterator[Audit]:
    clock = ManualClock(TWIN_START)
    kube = connect(twin_cluster.kubeconfig, clock=clock)
    try:
        yield Audit(twin_cluster, kube, clock)
    finally:
        kube.close()


def _scenarios(audit: Audit) -> None:
    """Every action, on every kind of target and path through its code the twin can serve."""
    audit.create(_workload("Deployment", "web"))
    audit.create(_workload("StatefulSet", "db", replicas=1))
    audit.create(_workload("Deployment", "api"))
    audit.create(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "api"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
                "minReplicas": 1,
                "maxReplicas": 10,
            },
        }
    )
    rs = _workload("ReplicaSet", "solo", replicas=1)
    audit.create(rs)
    audit.create(_cronjob("train"))

    audit.run("scale", "Deployment", "web", {"by": 1})
    audit.run("scale", "StatefulSet", "db", {"replicas": 2})
    audit.run("scale", "Deployment", "api", {"replicas": 4}, restore=True)  # the HPA floor

    audit.rollout("web", "2")
    audit.rollout("web", "3")
    # revisions seconds apart: any earlier one qualifies (which one is chosen is tested elsewhere)
    audit.run("rollback", "Deployment", "web", {"healthyFor": 0})

    audit.run("restart", "Deployment", "web", {})
    audit.run("restart", "StatefulSet", "db", {})

    audit.env.advance(5)
    audit.run("delete_pod", "Deployment", "web", {})
    audit.run("delete_pod", "Pod", audit.pod_of("api"), {})
    audit.run("delete_pod", "ReplicaSet", "solo", {})
    audit.run("delete_pod", "StatefulSet", "db", {})

    retrained = audit.run("retrain", "CronJob", "train", {"topic": "aiops.retrain"}, publisher=_Publisher())
    template = {
        "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "t", "image": IMAGE}]}}
        }
    }
    audit.run("retrain", "Deployment", "web", {"jobTemplate": template})
    audit.run("retrain", "StatefulSet", "db", {"cronJob": "train"})

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        job = retrained.details["job"]
        for kind, name in (
            ("Deployment", "web"),
            ("StatefulSet", "db"),
            ("ReplicaSet", "solo"),
            ("Pod", audit.pod_of("web")),
            ("CronJob", "train"),
            ("Job", job),
        ):
            audit.run("notify", kind, name, {"webhook": url, "message": "audit"})
    finally:
        server.shutdown()
        server.server_close()

    # The agent's own: an Event whose create is retried finds itself there (create, then get).
    obj = audit.kube.get("Deployment", audit.ns, "web")
    with audit.audited("(agent)"):
        for _ in range(2):
            record_event(audit.kube, "Deployment", obj, reason="AiopsAudit", message="x", clock=audit.clock)


def test_every_api_call_of_every_action_is_granted_and_every_grant_is_used(audit: Audit) -> None:
    _scenarios(audit)
    assert not audit.denied, "API calls the RBAC table does not grant:\n" + "\n".join(
        sorted(set(audit.denied))
    )
    assert set(audit.used) >= set(ACTIONS)
    unused = []
    for action, perms in rbac.ACTION_PERMISSIONS.items():
        for perm in perms:
            for verb in sorted(perm.verbs):
                grant = (perm.api_group, perm.resource, verb)
                if grant not in audit.used.get(action, set()) and (action, grant) not in NOT_ON_TWIN:
                    unused.append(f"{action}: {grant}")
    agent_used = set().union(*audit.used.values())
    for perm in rbac.AGENT_PERMISSIONS:
        unused += [
            f"(agent): {verb} {perm.resource}"
            for verb in perm.verbs
            if (perm.api_group, perm.resource, verb) not in agent_used
        ]
    assert not unused, "granted but never used (least privilege):\n" + "\n".join(unused)


def test_an_ungranted_call_is_caught(audit: Audit) -> None:
    """The audit itself can fail: a call outside the table is reported."""
    audit.create(_workload("Deployment", "web"))
    with audit.audited("restart"):
        audit.kube.list_objects("Pod", audit.ns)
    assert audit.denied == ["restart: list core/pods"]
    # granted to restart on a StatefulSet, not on a Deployment
    audit.create(_workload("StatefulSet", "db", replicas=1))
    with audit.audited("restart", "Deployment"):
        audit.kube.get("StatefulSet", audit.ns, "db")
    assert audit.denied[1:] == ["restart on Deployment: get apps/statefulsets"]


def _calls(env: TwinEnv) -> set[Grant]:
    return {(r.info.group, r.info.resource_path, r.info.verb) for r in env.server.requests}


def _rights(kind: str, steps: str, *, when: str = "[]", gitops: str = "skip") -> tuple[Permission, ...]:
    """What agent/rbac.py grants a playbook with these steps on a target of this kind."""
    text = textwrap.dedent(
        f"""\
        apiVersion: aiops/v1
        kind: Playbook
        metadata: {{name: audited}}
        spec:
          trigger: {{signal: anomaly, metric: m}}
          target: {{kind: {kind}, namespace: "{{{{ labels.namespace }}}}", name: "{{{{ labels.name }}}}"}}
          when: {when}
          actions: {steps}
        """
    )
    (loaded,) = load_sources([("audited.yaml", text)]).playbooks
    return playbook_permissions(loaded, gitops)


def _ungranted(calls: Iterable[Grant], rights: Iterable[Permission]) -> set[Grant]:
    return set(calls) - grants(rights)


def test_the_generated_rights_cover_what_the_agent_calls_around_its_actions(
    audit: Audit, tmp_path: Path
) -> None:
    audit.create(_workload("Deployment", "web"))
    audit.rollout("web", "2")
    audit.create(_cronjob("train", {"argocd.argoproj.io/instance": "ml"}))

    # the rollout history behind `when: rolloutWithin`, read as the engine reads it
    audit.env.server.clear_requests()
    assert KubeFacts(audit.kube, audit.clock).last_rollout(Target("Deployment", audit.ns, "web")) is not None
    history = _calls(audit.env)
    with_condition = _rights("Deployment", "[{restart: {}}]", when="[{rolloutWithin: 30m}]")
    assert _ungranted(history, with_condition) == set()
    assert history == grants(rbac.ROLLOUT_HISTORY_PERMISSIONS)
    assert ("apps", "replicasets", "list") in _ungranted(history, _rights("Deployment", "[{restart: {}}]"))

    # the executor on a target Argo CD manages, with gitops: annotate: read, act, annotate
    config = ExecutorConfig(
        enabled=True, gitops="annotate", approvals_dir=tmp_path / "approvals", audit_topic=None
    )
    executor = KubeExecutor(
        audit.kube,
        config,
        audit.clock,
        AuditTrail([MemoryAuditSink()]),
        leader=StaticLeader(True),
        instance="audit",
        publisher=_Publisher(),
    )
    request = make_request(
        "retrain",
        Target("CronJob", audit.ns, "train"),
        {"topic": "aiops.retrain"},
        playbook="audited",
        incident="inc-gitops",
        step="actions[0]",
    )
    audit.env.server.clear_requests()
    result = executor.submit(Proposal(request, audit.clock.now()))
    assert result.status is ActionStatus.EXECUTED, result.message
    assert GITOPS_DRIFT in audit.kube.get("CronJob", audit.ns, "train")["metadata"]["annotations"]
    calls = _calls(audit.env)
    annotating = _rights("CronJob", "[{retrain: {}}]", gitops="annotate")
    assert _ungranted(calls, annotating) == set()
    # the patch on the target is granted whatever gitops says: the executor records every
    # workload-changing action there before it writes (aiops.dev/actions), and it is used
    assert _ungranted(calls, _rights("CronJob", "[{retrain: {}}]")) == set()
    assert ("batch", "cronjobs", "patch") in calls
    assert RECORDED in audit.kube.get("CronJob", audit.ns, "train")["metadata"]["annotations"]


def test_the_approval_records_call_exactly_what_the_approvals_role_grants(audit: Audit) -> None:
    """Pending, decided, run, and deleted after the retention: the ConfigMap store's calls are
    the approvals Role's rights, every one of them used."""
    from agent.approvals import ConfigMapStore
    from agent.playbook.requests import Approval

    audit.create(_workload("Deployment", "web"))
    config = ExecutorConfig(
        enabled=True,
        audit_topic=None,
        events=False,
        approvals={"store": "configmap", "namespace": audit.ns, "retention": 60},
    )
    executor = KubeExecutor(
        audit.kube,
        config,
        audit.clock,
        AuditTrail([MemoryAuditSink()]),
        leader=StaticLeader(True),
        instance="a",
    )
    request = make_request(
        "restart",
        Target("Deployment", audit.ns, "web"),
        {},
        playbook="audited",
        incident="i",
        step="actions[0]",
    )
    audit.env.server.clear_requests()
    pending = executor.submit(Proposal(request, audit.clock.now(), Approval.REQUIRED))
    assert pending.status is ActionStatus.PENDING_APPROVAL, pending.message
    ConfigMapStore(audit.kube, audit.ns).decide(
        str(pending.details["approval"]), True, "alice", audit.clock.now()
    )
    executor.tick()
    audit.clock.advance(120)
    executor.tick()
    assert list(ConfigMapStore(audit.kube, audit.ns).records()) == []
    on_configmaps = {call for call in _calls(audit.env) if call[1] == "configmaps"}
    assert on_configmaps == grants(rbac.APPROVALS_PERMISSIONS)
