"""What the multi-replica e2e tests share: replicas on a twin, their config, and reading them.

:class:`Setup` makes a twin with one deployment per signals partition, a 6-partition metrics
topic and signals topic, a playbook directory and the config every replica of one consumer group
runs; :meth:`Setup.replica` starts one more replica of that group (as a rolling update does).
The other helpers read a replica's /metrics page, audit file and JSON log.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.e2e.daemon import Daemon
from tests.integration.test_remediation_support import deployment_body
from tests.servers.common import eventually
from tests.servers.twin import TwinFactory

PARTITIONS = 6
#: The detector of the playbook below: an error ratio above 0.5.
THRESHOLD: dict[str, Any] = {
    "type": "threshold",
    "params": {"rules": [{"metric": "error_ratio", "above": 0.5}]},
}
#: Restart a deployment whose error ratio is over its threshold (the playbook of the decision tests).
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


def metric(text: str, name: str) -> dict[str, float]:
    """Samples of metric ``name`` in a /metrics page, by their label text."""
    out = {}
    for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE):
        out[m.group(1) or ""] = float(m.group(2))
    return out


def total(d: Daemon, name: str) -> float:
    """The sum of metric ``name`` over its labels on the daemon's /metrics."""
    return sum(metric(d.wait_http("/metrics", 200), name).values())


def sample(d: Daemon, name: str) -> float:
    """The value of one sample (name with its labels) on the daemon's /metrics; 0 when absent."""
    for line in d.wait_http("/metrics", 200).splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def latency(partition: int, start: float, steps: range, spike: float) -> bytes:
    """A batched message of the latency series of ``partition``: a noisy baseline, plus ``spike``."""
    return orjson.dumps(
        [
            {
                "name": "latency_seconds",
                "labels": {"deployment": f"d{partition}"},
                "timestamp": start + 15 * i,
                "value": 10.0 + (i * 7919 % 13) / 13.0 + spike,
            }
            for i in steps
        ]
    )


def executed(audit: Path) -> list[dict[str, Any]]:
    """The executed decisions in an audit file (none when it does not exist)."""
    if not audit.exists():
        return []
    entries = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    return [e for e in entries if e.get("decision") == "executed"]


def audits(d: Daemon) -> list[dict[str, Any]]:
    """Every audit event in the daemon's JSON log, in order."""
    events = []
    for line in d.output().splitlines():
        with contextlib.suppress(ValueError):
            audit = json.loads(line).get("audit")
            if isinstance(audit, dict):
                events.append(audit)
    return events


def opened(d: Daemon) -> list[dict[str, Any]]:
    """The incidents the daemon opened: the audit events of state pending with no previous one."""
    return [a for a in audits(d) if a.get("previous") is None and a.get("state") == "pending"]


def one_target_per_partition(namespace: str) -> list[str]:
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


@dataclass
class Setup:
    """A twin with one deployment per signals partition, topics, and replicas (not started)."""

    apps: Any
    names: list[str]
    daemons: list[Daemon]
    namespace: str
    metrics_topic: str
    signals_topic: str
    kubeconfig: Path
    group: str
    tmp_path: Path
    config: Callable[[Path], dict[str, Any]] = field(repr=False)

    @classmethod
    def start(
        cls,
        tmp_path: Path,
        bootstrap: str,
        kafka_topic: Callable[..., str],
        twin_factory: TwinFactory,
        replicas: int,
        playbook: str,
        executor: dict[str, Any] | None = None,
        source: dict[str, Any] | None = None,
        detectors: list[dict[str, Any]] | None = None,
    ) -> Setup:
        """The twin, the topics and ``replicas`` replicas named a, b, c ...; ``executor`` and
        ``source`` are merged into their executor and Kafka source config, ``detectors`` replaces
        theirs (a threshold on ``error_ratio`` above 0.5)."""
        from kubernetes import client

        from agent.clock import WallClock
        from simulations.twin import TwinConfig

        namespace = "shop"
        twin = TwinConfig(pod_start_seconds=0.05, job_run_seconds=0.2, hpa_sync_seconds=0.5)
        kube = twin_factory(clock=WallClock(), config=twin, namespace=namespace, background=True)
        apps: Any = client.AppsV1Api(kube.api_client())
        names = one_target_per_partition(namespace)
        for name in names:
            apps.create_namespaced_deployment(namespace, deployment_body(name, replicas=1))
        metrics_topic = kafka_topic(PARTITIONS)
        signals_topic = kafka_topic(PARTITIONS, prefix="signals")
        books = tmp_path / "playbooks"
        books.mkdir()
        (books / "restart.yaml").write_text(playbook)
        group = f"e2e-{uuid.uuid4().hex[:8]}"

        def config(home: Path) -> dict[str, Any]:
            cfg = replica_config(
                home, bootstrap, kafka_topic, metrics_topic, signals_topic, group, books, kube.kubeconfig
            )
            cfg["executor"].update(executor or {})
            cfg["sources"]["kafka"].update(source or {})
            if detectors is not None:
                cfg["detectors"] = detectors
            return cfg

        setup = cls(
            apps, names, [], namespace, metrics_topic, signals_topic, kube.kubeconfig, group, tmp_path, config
        )
        for name in "abcdef"[:replicas]:
            setup.replica(name)
        return setup

    def replica(self, name: str) -> Daemon:
        """Start one more replica of the group, with its home (audit file, log) in ``name``/."""
        home = self.tmp_path / name
        home.mkdir()
        daemon = Daemon(home, self.config(home))
        self.daemons.append(daemon)
        return daemon

    def wait_owning(self, daemons: list[Daemon], share: int) -> None:
        """Each of ``daemons`` ready, owning ``share`` metrics and ``share`` signals partitions."""
        for d in daemons:
            d.wait_http("/readyz", 200, timeout=60)
        eventually(
            lambda: all(
                sample(d, f'aiops_kafka_partitions_owned{{topic="{t}"}}') == share
                for d in daemons
                for t in (self.metrics_topic, self.signals_topic)
            ),
            timeout=60,
            what=f"{share} metrics and {share} signals partitions each",
        )

    def wait_ready(self) -> None:
        """Every replica ready, owning its share of the metrics and of the signals partitions."""
        self.wait_owning(self.daemons, PARTITIONS // len(self.daemons))


def replica_config(
    home: Path,
    bootstrap: str,
    kafka_topic: Callable[..., str],
    metrics_topic: str,
    signals_topic: str,
    group: str,
    books: Path,
    kubeconfig: Path,
) -> dict[str, Any]:
    """One replica's config: detection in ``group``, decisions through ``signals_topic``, the twin."""
    return {
        "kafka": {"bootstrap_servers": [bootstrap]},
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
        "detectors": [THRESHOLD],
        "signals": {"topic": signals_topic, "decisions": True, "decision_group": f"{group}-decisions"},
        "playbooks": {"directory": str(books), "status_file": str(home / "status.json")},
        "executor": executor_config(home, kubeconfig),
        "log": {"format": "json"},
    }


def executor_config(home: Path, kubeconfig: Path) -> dict[str, Any]:
    """A replica's executor on the twin: its audit file and approvals in ``home``, named by it."""
    return {
        "enabled": True,
        "kubeconfig": str(kubeconfig),
        "audit_file": str(home / "audit.jsonl"),
        "audit_topic": None,
        "events": False,
        "instance": home.name,
        "approvals_dir": str(home / "approvals"),
    }


def wait_owning_every_partition(survivor: Daemon, signals_topic: str) -> None:
    """Wait until ``survivor`` owns every partition of the signals topic."""
    eventually(
        lambda: sample(survivor, f'aiops_kafka_partitions_owned{{topic="{signals_topic}"}}') == PARTITIONS,
        timeout=60,
        what="the survivor owning every signals partition",
    )
