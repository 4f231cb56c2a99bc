"""What the ConfigMap approval store costs on the API server: a tick at the cap of open approvals,
the creation of one more, and the bytes of a record, against the twin over HTTP.

``max_pending`` (100) pending records of a scale request with its plan; then, timed in wall time
(the cost is the HTTP round trips), the best of five: one executor tick with nothing to do (one
LIST by label of the unfinished records), a ``create`` near the cap (one GET, one LIST, one POST),
and a decision through the store (GET, PUT). Results: ``bench-results/approvals_store.json``.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.approvals import APPROVAL_LABEL
from agent.audit import Audit, MemoryAuditSink
from agent.config import ExecutorConfig
from agent.executor import KubeExecutor
from agent.leader import StaticLeader
from agent.playbook.requests import Approval, Proposal
from remediations.registry import make_request
from remediations.types import Target
from tests.integration.test_remediation_support import Cluster, open_cluster

pytestmark = [pytest.mark.bench, pytest.mark.integration, pytest.mark.timeout(600)]

RESULTS = Path("bench-results") / "approvals_store.json"
OPEN = 100
ROUNDS = 5


@pytest.fixture
def cluster(twin_cluster: Any) -> Iterator[Cluster]:
    with open_cluster(twin_cluster) as c:
        yield c


def _best(run: Callable[[], object]) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def test_approval_store_costs(cluster: Cluster) -> None:
    config = ExecutorConfig(
        enabled=True,
        audit_file=None,
        audit_topic=None,
        events=False,
        approvals={"store": "configmap", "namespace": cluster.ns, "max_pending": OPEN + ROUNDS + 1},
    )
    executor = KubeExecutor(
        cluster.kube,
        config,
        cluster.clock,
        Audit([MemoryAuditSink()]),
        leader=StaticLeader(True),
        instance="b",
    )
    for i in range(OPEN):
        cluster.deployment(f"web-{i}", replicas=2)
        request = make_request(
            "scale",
            Target("Deployment", cluster.ns, f"web-{i}"),
            {"by": 2},
            playbook="pb",
            incident="i",
            step="s",
        )
        executor.submit(Proposal(request, cluster.clock.now(), Approval.REQUIRED))
    raw = cluster.core.list_namespaced_config_map(
        cluster.ns, label_selector=f"{APPROVAL_LABEL}=true", _preload_content=False
    )
    items = json.loads(raw.data)["items"]
    assert len(items) == OPEN
    record_bytes = sorted(len(cm["data"]["record"].encode()) for cm in items)
    executor.tick()  # the first tick also prunes: not the steady state
    tick = _best(executor.tick)
    store = executor.approvals
    made: list[str] = []

    def create() -> None:
        made.append(
            store.create(
                f"extra-{len(made)}",
                {"action": "scale", "target": {"name": f"extra-{len(made)}"}},
                cluster.clock.now(),
                3600.0,
            ).id
        )

    create_seconds = _best(create)
    assert len(set(made)) == ROUNDS, "each a new record"
    decided = iter(list(made))
    decide_seconds = _best(lambda: store.decide(next(decided), True, "bench", cluster.clock.now()))
    result = {
        "open_records": OPEN,
        "record_bytes_median": record_bytes[len(record_bytes) // 2],
        "record_bytes_max": record_bytes[-1],
        "tick_seconds_at_open_records": round(tick, 4),
        "create_seconds_near_cap": round(create_seconds, 4),
        "decide_seconds": round(decide_seconds, 4),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    assert record_bytes[-1] <= config.approvals.max_record_bytes
