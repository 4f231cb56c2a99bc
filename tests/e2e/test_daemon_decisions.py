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
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from tests.e2e.daemon import Daemon
from tests.integration.test_remediation_support import deployment_body
from tests.servers.common import eventually
from tests.servers.twin import TwinFactory

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PARTITIONS = 6
PLAYBOOK = """
apiVersion: aiops/v1
kind: Playbook
metadata:
  name: restart-on-errors
spec:
  trigger:
    signal: threshold
    metric: error_ratio
    match:
      deployment: ".+"
    minScore: 0.5
    maxGap: 10m
  target:
    kind: Deployment
    namespace: "{{ labels.namespace }}"
    name: "{{ labels.deployment }}"
  actions:
    - restart: {}
  guardrails:
    cooldown: 1h
"""


def _one_target_per_partition(namespace: str) -> list[str]:
    """Deployment names whose targets the producer's partitioner puts one on each signals partition."""
    from kafka.partitioner.default import murmur2

    names: dict[int, str] = {}
    n = 0
    while len(names) < PARTITIONS:
        name = f"svc-{n}"
        key = f"Deployment/{namespace}/{name}".encode()
        names.setdefault((murmur2(key) & 0x7FFFFFFF) % PARTITIONS, name)
        n += 1
    return [names[p] for p in range(PARTITIONS)]


def _executed(audit: Path) -> list[dict[str, Any]]:
    if not audit.exists():
        return []
    entries = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    return [e for e in entries if e.get("decision") == "executed"]


def _sample(d: Daemon, name: str) -> float:
    """The value of one sample (name with its labels) on the daemon's /metrics; 0 when absent."""
    for line in d.wait_http("/metrics", 200).splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("replicas", [2, 3])
def test_an_anomaly_on_every_partition_is_acted_on_exactly_once(
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: Callable[..., str],
    twin_factory: TwinFactory,
    replicas: int,
) -> None:
    from agent.clock import WallClock
    from simulations.twin import TwinConfig

    namespace = "shop"
    kube = twin_factory(
        clock=WallClock(),
        config=TwinConfig(pod_start_seconds=0.05, job_run_seconds=0.2, hpa_sync_seconds=0.5),
        namespace=namespace,
        background=True,
    )
    from kubernetes import client

    apps: Any = client.AppsV1Api(kube.api_client())
    names = _one_target_per_partition(namespace)
    for name in names:
        apps.create_namespaced_deployment(namespace, deployment_body(name, replicas=1))
    metrics_topic = kafka_topic(PARTITIONS)
    signals_topic = kafka_topic(PARTITIONS, prefix="signals")
    books = tmp_path / "playbooks"
    books.mkdir()
    (books / "restart.yaml").write_text(PLAYBOOK)
    group = f"e2e-{uuid.uuid4().hex[:8]}"
    daemons = []
    instances = "abc"[:replicas]
    for name in instances:
        (tmp_path / name).mkdir()
        cfg = {
            "kafka": {"bootstrap_servers": [kafka_bootstrap]},
            "sources": {
                "kafka": {
                    "topics": [metrics_topic],
                    "group_id": group,
                    "dead_letter_topic": kafka_topic(prefix="dlq"),
                    "session_timeout": "2s",
                    "heartbeat_interval": "500ms",
                    "decode_worker": False,
                    "state": {"enabled": False},
                }
            },
            "detectors": [
                {"type": "threshold", "params": {"rules": [{"metric": "error_ratio", "above": 0.5}]}}
            ],
            "signals": {"topic": signals_topic, "decisions": True, "decision_group": f"{group}-decisions"},
            "playbooks": {"directory": str(books), "status_file": str(tmp_path / name / "status.json")},
            "executor": {
                "enabled": True,
                "kubeconfig": str(kube.kubeconfig),
                "audit_file": str(tmp_path / name / "audit.jsonl"),
                "audit_topic": None,
                "events": False,
                "instance": name,
                "approvals_dir": str(tmp_path / name / "approvals"),
            },
            "log": {"format": "json"},
        }
        daemons.append(Daemon(tmp_path / name, cfg))
    with contextlib.ExitStack() as stack:
        for d in daemons:
            stack.enter_context(d)
        for d in daemons:
            d.wait_http("/readyz", 200, timeout=60)

        def owned(d: Daemon, topic: str) -> float:
            return _sample(d, f'aiops_kafka_partitions_owned{{topic="{topic}"}}')

        share = PARTITIONS // replicas
        eventually(
            lambda: all(owned(d, t) == share for d in daemons for t in (metrics_topic, signals_topic)),
            timeout=60,
            what=f"{share} metrics and {share} signals partitions each",
        )
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
        executed = [e for d in daemons for e in _executed(d.log_path.parent / "audit.jsonl")]
        per_target = Counter(e["target"]["name"] for e in executed)
        assert per_target == dict.fromkeys(names, 1), per_target
        # each replica detected its own share and executed for the targets of its signals partitions
        assert [_sample(d, "aiops_signals_forwarded_total") for d in daemons] == [share] * replicas
        assert Counter(e["instance"] for e in executed) == dict.fromkeys(instances, share)
