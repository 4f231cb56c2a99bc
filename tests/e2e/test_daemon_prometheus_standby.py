"""Two ``aiops run`` replicas on one Prometheus: only the Lease holder queries it; its successor backfills.

The replicas run as deployed (decisions through the signals topic, the executor on the twin API
server, leader election on a Lease). One holds the Lease and polls Prometheus; the other sends
no query after validating its queries at start. The holder is SIGKILLed and a breach is planted
in Prometheus's data (the exporter it scrapes), and over again, while no replica holds the
Lease: the survivor takes the Lease over, backfills, finds the breach in the backfilled history
alone, publishes its signals to the signals topic like any other, and the deployment is
restarted exactly once. And a breach the holder had already acted on, found again in its
successor's backfill, is not acted on twice.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import support
from tests.e2e.daemon import Daemon
from tests.e2e.support import PLAYBOOK, THRESHOLD
from tests.integration.test_remediation_support import deployment_body
from tests.servers.common import eventually
from tests.servers.prometheus import Exporter, PrometheusServer
from tests.servers.twin import TwinFactory

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

NAMESPACE = "shop"
DEPLOYMENT = "web"
LEASE = {"lease_duration": 8.0, "renew_deadline": 5.0, "retry_period": 1.0}


def _wait_polling(d: Daemon, what: str) -> None:
    """Until ``d`` polls Prometheus (it took the Lease and backfilled)."""
    eventually(
        lambda: support.total(d, "aiops_prometheus_source_active") == 1, timeout=30, interval=0.2, what=what
    )


def _config(
    home: Path, prom: str, kubeconfig: Path, lease: str, kafka: dict[str, Any] | None
) -> dict[str, Any]:
    """One replica's config; ``kafka``: the bootstrap and signals topic of decisions through Kafka,
    None: no Kafka, the Lease holder decides and executes what it detects."""
    books = home / "playbooks"
    books.mkdir(parents=True)
    (books / "restart.yaml").write_text(PLAYBOOK)
    signals: dict[str, Any] = {"kafka": False}
    if kafka is not None:
        signals = {"kafka": True, "topic": kafka["topic"], "decisions": True, "decision_group": lease}
    return {
        "kafka": {"bootstrap_servers": [kafka["bootstrap"] if kafka else "127.0.0.1:1"]},
        "sources": {
            "prometheus": {
                "url": prom,
                "interval": "1s",
                "timeout": "2s",
                "backfill": "300s",
                "queries": [{"name": "error_ratio", "query": 'app_error_ratio{job="exporter"}'}],
            }
        },
        "detectors": [THRESHOLD],
        "signals": signals,
        "playbooks": {"directory": str(books), "status_file": str(home / "status.json")},
        "executor": {**support.executor_config(home, kubeconfig), "lease_name": lease, **LEASE},
        "log": {"format": "json"},
    }


@dataclass
class _Replicas:
    """Two replicas on one Prometheus scraping the test's exporter, and the twin's deployment."""

    daemons: list[Daemon]
    errors: Any  # the exporter's gauge of the deployment's error ratio
    apps: Any

    @classmethod
    def start(
        cls,
        tmp_path: Path,
        twin_factory: TwinFactory,
        prometheus_factory: Callable[..., PrometheusServer],
        exporter: Exporter,
        kafka: dict[str, Any] | None,
    ) -> _Replicas:
        from kubernetes import client

        from agent.clock import WallClock
        from simulations.twin import TwinConfig

        errors = exporter.gauge("app_error_ratio", "5xx share", ["namespace", "deployment"])
        errors.labels(NAMESPACE, DEPLOYMENT).set(0.1)
        prom = prometheus_factory(targets=[exporter.target])
        config = TwinConfig(pod_start_seconds=0.05, job_run_seconds=0.2, hpa_sync_seconds=0.5)
        kube = twin_factory(clock=WallClock(), config=config, namespace=NAMESPACE, background=True)
        apps: Any = client.AppsV1Api(kube.api_client())
        apps.create_namespaced_deployment(NAMESPACE, deployment_body(DEPLOYMENT, replicas=1))
        lease = f"e2e-{uuid.uuid4().hex[:8]}"
        daemons = []
        for name in "ab":
            home = tmp_path / name
            daemons.append(Daemon(home, _config(home, prom.url, kube.kubeconfig, lease, kafka)))
        return cls(daemons, errors.labels(NAMESPACE, DEPLOYMENT), apps)

    def restarted(self) -> bool:
        dep = self.apps.read_namespaced_deployment(DEPLOYMENT, NAMESPACE)
        return "kubectl.kubernetes.io/restartedAt" in (dep.spec.template.metadata.annotations or {})

    def active_and_standby(self) -> tuple[Daemon, Daemon]:
        """Once both are ready and one polls (and has scraped samples through its detectors)."""
        for d in self.daemons:
            d.wait_http("/readyz", 200, timeout=60)  # the standby is ready too
        eventually(  # target sync: the first scraped sample is queryable after about 5.5 s
            lambda: (
                sorted(support.total(d, "aiops_prometheus_source_active") for d in self.daemons) == [0.0, 1.0]
                and max(support.total(d, "aiops_samples_in_total") for d in self.daemons) > 0
            ),
            timeout=60,
            what="one replica polling Prometheus",
        )
        active = next(d for d in self.daemons if support.total(d, "aiops_prometheus_source_active") == 1)
        assert support.total(active, "aiops_leader") == 1
        return active, next(d for d in self.daemons if d is not active)

    def kill_and_wait_for_takeover(self, active: Daemon, standby: Daemon) -> float:
        """SIGKILL ``active``; the seconds until ``standby`` polls."""
        active.proc.kill()
        active.proc.wait(10)
        killed = time.monotonic()
        _wait_polling(standby, "the survivor taking the Lease over")
        return time.monotonic() - killed


def test_only_the_lease_holder_queries_and_its_successor_backfills_a_breach_acted_on_once(
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: Callable[..., str],
    twin_factory: TwinFactory,
    prometheus_factory: Callable[..., PrometheusServer],
    exporter: Exporter,
) -> None:
    kafka = {"bootstrap": kafka_bootstrap, "topic": kafka_topic(2, prefix="signals")}
    replicas = _Replicas.start(tmp_path, twin_factory, prometheus_factory, exporter, kafka)
    daemons, errors = replicas.daemons, replicas.errors
    with contextlib.ExitStack() as stack:
        for d in daemons:
            stack.enter_context(d)
        active, standby = replicas.active_and_standby()
        eventually(
            lambda: sum(support.total(d, "aiops_kafka_partitions_owned") for d in daemons) == 2,
            timeout=60,
            what="the signals partitions owned by the decision group",
        )
        queried = support.total(standby, "aiops_prometheus_queries_total")
        polled = support.total(active, "aiops_prometheus_queries_total")
        time.sleep(3.0)
        assert support.total(standby, "aiops_prometheus_queries_total") == queried == 1  # its validation only
        assert support.total(active, "aiops_prometheus_queries_total") >= polled + 2
        assert support.total(standby, "aiops_samples_in_total") == 0
        assert support.total(standby, "aiops_source_ready") == 0  # not connected, though /readyz is green
        assert not replicas.restarted()

        killed = time.monotonic()  # the breach starts at once after the kill, below
        active.proc.kill()
        active.proc.wait(10)
        errors.set(0.9)  # a breach no replica polls: 3 s of it
        time.sleep(3.0)
        errors.set(0.1)
        time.sleep(1.5)  # scraped back to normal; the Lease (8 s) has not expired yet
        assert support.total(standby, "aiops_prometheus_source_active") == 0, (
            "took over before the breach ended"
        )
        assert support.total(standby, "aiops_prometheus_backfill_seconds_count") == 0

        _wait_polling(standby, "the survivor taking the Lease over")
        took_over = time.monotonic() - killed
        eventually(
            replicas.restarted, timeout=60, interval=0.5, what="the survivor restarting the deployment"
        )
        acted = time.monotonic() - killed
        time.sleep(3.0)  # room for a second execution, which must not come
        executed = [e for d in daemons for e in support.executed(d.log_path.parent / "audit.jsonl")]
        assert [(e["target"]["name"], e["instance"]) for e in executed] == [
            (DEPLOYMENT, standby.log_path.parent.name)
        ]
        assert support.total(standby, "aiops_prometheus_backfill_seconds_count") == 1
        assert support.total(standby, "aiops_signals_forwarded_total") >= 1  # through the signals topic
        backfill = support.total(standby, "aiops_prometheus_backfill_seconds_sum")
    print(
        f"\nPrometheus failover: Lease taken over {took_over:.1f} s after the SIGKILL (lease 8 s), "
        f"backfill {backfill * 1000:.0f} ms, deployment restarted {acted:.1f} s after the SIGKILL"
    )


def test_a_breach_the_holder_acted_on_is_not_acted_on_again_by_its_successor(
    tmp_path: Path,
    twin_factory: TwinFactory,
    prometheus_factory: Callable[..., PrometheusServer],
    exporter: Exporter,
) -> None:
    """The holder detects a breach and restarts the deployment; the breach ends; the holder is
    SIGKILLed. Its successor's backfill covers the breach and flags it again, on the same grid
    timestamps, so it reopens the same incident id; the deployment is not restarted a second
    time (the Lease holder decides and executes here: no Kafka)."""
    replicas = _Replicas.start(tmp_path, twin_factory, prometheus_factory, exporter, kafka=None)
    a, b = replicas.daemons
    with a, b:
        active, standby = replicas.active_and_standby()
        replicas.errors.set(0.9)
        eventually(replicas.restarted, timeout=30, interval=0.5, what="the holder restarting the deployment")
        replicas.errors.set(0.1)
        eventually(
            lambda: bool(support.executed(active.log_path.parent / "audit.jsonl")),
            timeout=10,
            what="the holder's audit record",
        )
        (first,) = support.executed(active.log_path.parent / "audit.jsonl")
        assert first["instance"] == active.log_path.parent.name
        # back to normal in Prometheus; the breach stays within the 300 s backfill (wide: on a loaded
        # machine the detection, the restart and the takeover can take a minute between them)
        time.sleep(2.0)
        assert support.total(standby, "aiops_signals_total") == 0
        replicas.kill_and_wait_for_takeover(active, standby)
        eventually(
            lambda: support.total(standby, "aiops_signals_total") >= 1,
            timeout=30,
            what="the successor's backfill flagging the breach again",
        )
        assert support.total(standby, "aiops_prometheus_backfill_seconds_count") == 1
        time.sleep(5.0)  # room for a second execution, which must not come
        assert support.executed(standby.log_path.parent / "audit.jsonl") == []
        assert [e["key"] for e in support.executed(active.log_path.parent / "audit.jsonl")] == [first["key"]]
        # the same grid timestamps: the successor reopened the holder's incident, under its id
        # (its engine logs it after the detection is counted: on a loaded machine, seconds later)
        eventually(
            lambda: f'"incident":"{first["incident"]}"' in standby.output(),
            timeout=30,
            what=f"the successor reopening incident {first['incident']}",
        )


def test_a_holder_stopped_by_sigterm_hands_the_lease_over_at_once(
    tmp_path: Path,
    twin_factory: TwinFactory,
    prometheus_factory: Callable[..., PrometheusServer],
    exporter: Exporter,
) -> None:
    """A rolling update: the holder exits cleanly and releases the Lease; the standby polls (after
    its backfill) within a retry period or two, not after the 8 s lease duration."""
    replicas = _Replicas.start(tmp_path, twin_factory, prometheus_factory, exporter, kafka=None)
    a, b = replicas.daemons
    with a, b:
        active, standby = replicas.active_and_standby()
        stopped = time.monotonic()
        code, _ = active.terminate()
        assert code == 0
        _wait_polling(standby, "the standby taking the released Lease")
        handover = time.monotonic() - stopped
        assert handover < LEASE["lease_duration"], f"took {handover:.1f} s: the Lease was left to expire"
        assert "released lease" in active.output()
        assert support.total(standby, "aiops_prometheus_backfill_seconds_count") == 1
    print(f"\nPrometheus hand-over on SIGTERM: the standby polls {handover:.1f} s after the signal")
