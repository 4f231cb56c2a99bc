"""Two and three ``aiops run`` replicas, decisions through the signals topic: every incident acted on once.

Each replica detects on its own share of the 6 metrics partitions and publishes its signals keyed by
target; the playbook engines consume the signals topic in their own consumer group, so each
target's incident is decided, and executed against the twin API server, by one replica,
whichever replica detected it. Without that, a replica that is not the leader would only plan.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from tests.e2e import support
from tests.e2e.daemon import Daemon
from tests.e2e.support import PARTITIONS, PLAYBOOK, Setup
from tests.servers.common import eventually
from tests.servers.twin import TwinFactory

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.mark.parametrize("replicas", [2, 3])
def test_an_anomaly_on_every_partition_is_acted_on_exactly_once(
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: Callable[..., str],
    twin_factory: TwinFactory,
    replicas: int,
) -> None:
    setup = Setup.start(tmp_path, kafka_bootstrap, kafka_topic, twin_factory, replicas, PLAYBOOK)
    apps, names, daemons, namespace = setup.apps, setup.names, setup.daemons, setup.namespace
    metrics_topic, instances, share = setup.metrics_topic, "abc"[:replicas], PARTITIONS // replicas
    with contextlib.ExitStack() as stack:
        for d in daemons:
            stack.enter_context(d)
        setup.wait_ready()
        producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap])
        now = time.time()
        for p in range(PARTITIONS):
            samples = [
                {
                    "name": "error_ratio",
                    "labels": {"namespace": namespace, "deployment": names[p]},
                    "timestamp": now - 30 + 15 * i,
                    "value": 0.9,
                }
                for i in range(3)
            ]
            producer.send(metrics_topic, orjson.dumps(samples), key=names[p].encode(), partition=p)
        producer.flush(10)
        producer.close()

        def restarted() -> set[str]:
            done: set[str] = set()
            for dep in apps.list_namespaced_deployment(namespace).items:
                annotations = dep.spec.template.metadata.annotations or {}
                if "kubectl.kubernetes.io/restartedAt" in annotations:
                    done.add(dep.metadata.name)
            return done

        eventually(
            lambda: restarted() == set(names),
            timeout=60,
            what="every deployment restarted",
        )
        time.sleep(3)  # room for a second execution, which must not come
        executed = [e for d in daemons for e in support.executed(d.log_path.parent / "audit.jsonl")]
        per_target = Counter(e["target"]["name"] for e in executed)
        assert per_target == dict.fromkeys(names, 1), per_target
        # each replica detected its own share and executed for the targets of its signals partitions
        assert [support.sample(d, "aiops_signals_forwarded_total") for d in daemons] == [share] * replicas
        assert Counter(e["instance"] for e in executed) == dict.fromkeys(instances, share)


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
def test_an_incident_open_on_a_replica_that_dies_is_acted_on_by_the_survivor(
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: Callable[..., str],
    twin_factory: TwinFactory,
    stop: str,
) -> None:
    """The incident waits in its 30 s ``for:`` window on the replica that owns its target; 10 s
    into it that replica is SIGKILLed (a crash: its last hand-over record stands) or SIGTERMed (a
    rolling update: it writes its record on the way out); the anomaly goes on, and the survivor,
    now owning every partition, takes the incident over (its id and its window) and restarts the
    deployment once, 30 s after the incident opened: not 30 s after the take-over."""
    playbook = PLAYBOOK.replace("    maxGap: 10m", "    maxGap: 10m\n    for: 30s")
    setup = Setup.start(tmp_path, kafka_bootstrap, kafka_topic, twin_factory, 2, playbook)
    apps, names, daemons, namespace = setup.apps, setup.names, setup.daemons, setup.namespace
    metrics_topic, signals_topic = setup.metrics_topic, setup.signals_topic
    a, b = daemons
    with a, b:
        setup.wait_ready()
        producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap])

        def breach(p: int) -> None:
            sample = {
                "name": "error_ratio",
                "labels": {"namespace": namespace, "deployment": names[p]},
                "timestamp": time.time(),
                "value": 0.9,
            }
            producer.send(metrics_topic, orjson.dumps([sample]), key=names[p].encode(), partition=p)
            producer.flush(10)

        # the target of signals partition 0 belongs to one replica: find it by its open incident
        deadline = time.monotonic() + 30
        owner = None
        while owner is None and time.monotonic() < deadline:
            breach(0)
            time.sleep(1)
            owner = next((d for d in daemons if support.sample(d, "aiops_incidents_open") == 1), None)
        assert owner is not None, "no replica opened the incident"
        survivor = b if owner is a else a
        eventually(lambda: bool(support.opened(owner)), timeout=10, what="the opening in the owner's log")
        (opened,) = support.opened(owner)
        while time.time() < opened["time"] + 10:
            breach(0)
            time.sleep(1)
        if stop == "SIGKILL":
            owner.proc.kill()
            owner.proc.wait(10)
        else:
            assert owner.terminate()[0] == 0
        killed = time.time()
        support.wait_owning_every_partition(survivor, signals_topic)

        def restarted() -> bool:
            breach(0)  # the anomaly goes on
            dep = apps.read_namespaced_deployment(names[0], namespace)
            return "kubectl.kubernetes.io/restartedAt" in (dep.spec.template.metadata.annotations or {})

        eventually(restarted, timeout=60, interval=1.0, what="the survivor restarting the deployment")
        producer.close()
        time.sleep(2)
        executed = [e for d in daemons for e in support.executed(d.log_path.parent / "audit.jsonl")]
        assert [(e["target"]["name"], e["instance"], e["incident"]) for e in executed] == [
            (names[0], survivor.log_path.parent.name, opened["incident"])
        ]
        assert support.sample(survivor, "aiops_incidents_restored_total") >= 1
        # by the window that began on the dead replica (a new one would end 30 s after the kill)
        assert executed[0]["time"] < killed + 25, (
            executed[0]["time"] - opened["time"],
            killed - opened["time"],
        )


def test_a_pending_approval_survives_the_replica_that_made_it(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str], twin_factory: TwinFactory
) -> None:
    """Approval required, approvals on ConfigMaps: the replica that owns the target makes the
    pending record and is SIGKILLed; a person approves with ``aiops approve`` from outside; the
    survivor, whose engine opens the incident anew and proposes the same step, takes the record
    over and restarts the deployment, once."""
    import subprocess
    import sys

    from kubernetes import client

    playbook = PLAYBOOK.replace("    cooldown: 1h", "    cooldown: 1h\n    approval: required")
    approvals = {"store": "configmap", "namespace": "shop", "takeover": "10m"}
    setup = Setup.start(
        tmp_path, kafka_bootstrap, kafka_topic, twin_factory, 2, playbook, executor={"approvals": approvals}
    )
    apps, names, daemons, namespace = setup.apps, setup.names, setup.daemons, setup.namespace
    metrics_topic, signals_topic = setup.metrics_topic, setup.signals_topic
    core: Any = client.CoreV1Api(client.ApiClient(_twin_configuration(setup.kubeconfig)))
    a, b = daemons
    with a, b:
        setup.wait_ready()
        producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap])

        def breach() -> None:
            sample = {
                "name": "error_ratio",
                "labels": {"namespace": namespace, "deployment": names[0]},
                "timestamp": time.time(),
                "value": 0.9,
            }
            producer.send(metrics_topic, orjson.dumps([sample]), key=names[0].encode(), partition=0)
            producer.flush(10)

        def records() -> list[dict[str, Any]]:
            found = core.list_namespaced_config_map(namespace, label_selector="aiops.dev/approval=true")
            return [json.loads(cm.data["record"]) for cm in found.items]

        deadline = time.monotonic() + 30
        while not records() and time.monotonic() < deadline:
            breach()
            time.sleep(1)
        [pending] = records()
        assert pending["state"] == "pending"
        owner = next(d for d in daemons if d.log_path.parent.name == pending["owner"])
        survivor = b if owner is a else a
        owner.proc.kill()
        owner.proc.wait(10)

        def aiops(*args: str) -> subprocess.CompletedProcess[str]:
            command = [sys.executable, "-m", "agent.cli", *args, "--namespace", namespace]
            command += ["--kubeconfig", str(setup.kubeconfig)]
            return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

        listed = aiops("approvals")
        assert pending["id"] in listed.stdout, listed
        approved = aiops("approve", pending["id"], "--by", "alice", "--reason", "e2e")
        assert approved.returncode == 0, approved
        assert approved.stdout.startswith(f"approved: restart on Deployment/{namespace}/{names[0]}")
        support.wait_owning_every_partition(survivor, signals_topic)

        def restarted() -> bool:
            breach()  # the anomaly goes on: the survivor opens the incident anew
            dep = apps.read_namespaced_deployment(names[0], namespace)
            return "kubectl.kubernetes.io/restartedAt" in (dep.spec.template.metadata.annotations or {})

        eventually(restarted, timeout=60, interval=1.0, what="the survivor restarting the deployment")
        for _ in range(3):  # room for a second execution, which must not come
            breach()
            time.sleep(1)
        producer.close()
        executed = [e for d in daemons for e in support.executed(d.log_path.parent / "audit.jsonl")]
        assert [(e["target"]["name"], e["instance"]) for e in executed] == [
            (names[0], survivor.log_path.parent.name)
        ]
        [done] = records()
        assert (done["id"], done["state"], done["owner"]) == (
            pending["id"],
            "done",
            survivor.log_path.parent.name,
        )
        assert done["outcome"]["status"] == "executed"
        assert done["decidedBy"] == "alice"


def _twin_configuration(kubeconfig: Path) -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return configuration


def _transitions(d: Daemon, target: str) -> list[dict[str, Any]]:
    """The state changes of the incidents on ``target`` in the daemon's JSON log."""
    return [
        a
        for a in support.audits(d)
        if a.get("type") == "incident"
        and a.get("previous") != a.get("state")
        and a["target"]["name"] == target
    ]


def test_an_incident_verifies_and_resolves_on_the_replica_that_did_not_detect_it(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str], twin_factory: TwinFactory
) -> None:
    """Two replicas. The series of two deployments, whose targets are on signals partitions 0
    and 3 (owned by different replicas), both go to metrics partition 0: one replica detects
    both, and one of the two incidents is decided on the other replica. Both breach once and then
    report under the bar every second: each deployment is restarted once, and each incident
    resolves on the replica that restarted it, after ``verify.quiet`` and on fresh samples; for
    the one decided away from its detector, the samples came as freshness records."""
    playbook = PLAYBOOK + "  verify:\n    quiet: 10s\n    within: 90s\n    samples: 3\n"
    setup = Setup.start(tmp_path, kafka_bootstrap, kafka_topic, twin_factory, 2, playbook)
    names, daemons, namespace = setup.names, setup.daemons, setup.namespace
    targets = [names[0], names[3]]
    with contextlib.ExitStack() as stack:
        for d in daemons:
            stack.enter_context(d)
        setup.wait_ready()
        producer = KafkaProducer(bootstrap_servers=[kafka_bootstrap])

        def scrape(value: float) -> None:
            samples = [
                {
                    "name": "error_ratio",
                    "labels": {"namespace": namespace, "deployment": name},
                    "timestamp": time.time(),
                    "value": value,
                }
                for name in targets
            ]
            producer.send(setup.metrics_topic, orjson.dumps(samples), partition=0)
            producer.flush(10)

        for _ in range(3):
            scrape(0.1)
            time.sleep(1)
        scrape(0.9)

        def resolved() -> bool:
            scrape(0.1)
            return all(
                any(e["state"] in {"resolved", "escalated"} for d in daemons for e in _transitions(d, t))
                for t in targets
            )

        eventually(resolved, timeout=120, interval=1.0, what="both incidents verified")
        producer.close()
        executed = {
            e["target"]["name"]: e["instance"]
            for d in daemons
            for e in support.executed(d.log_path.parent / "audit.jsonl")
        }
        assert sorted(executed) == sorted(targets)
        published = {
            d.log_path.parent.name: support.sample(d, "aiops_freshness_records_published_total")
            for d in daemons
        }
        (detector,) = [name for name, n in published.items() if n > 0]
        away = [t for t in targets if executed[t] != detector]
        assert len(away) == 1, (executed, detector)  # signals partitions 0 and 3 have different owners
        for target in targets:
            decider = next(d for d in daemons if d.log_path.parent.name == executed[target])
            states = [e["state"] for e in _transitions(decider, target)]
            assert states[-1] == "resolved", (target, states)
            assert "stale" not in states, (target, states)
            (done,) = [e for e in _transitions(decider, target) if e["state"] == "resolved"]
            assert "fresh samples" in done["reason"]
            assert all(e["freshSamples"] >= 3 for e in done["details"]["evidence"])
        receiver = next(d for d in daemons if d.log_path.parent.name == executed[away[0]])
        assert support.sample(receiver, "aiops_freshness_records_received_total") > 0
