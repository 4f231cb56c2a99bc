"""The approval records on their own: encoding limits, the directory backend, the config."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.approvals import (
    PLAN_CUT,
    ApprovalError,
    ApprovalLimits,
    ApprovalRecord,
    ApprovalsFullError,
    ApprovalState,
    DirectoryStore,
    approval_id,
    approvals_namespace,
    open_store,
    same_step,
)
from agent.config import ExecutorConfig

REQUEST = {"action": "scale", "playbook": "pb", "step": "actions[0]", "params": {"by": 2}}


def request(name: str, incident: str = "i") -> dict[str, object]:
    return {
        **REQUEST,
        "target": {"kind": "Deployment", "namespace": "shop", "name": name},
        "incident": incident,
    }


def test_an_open_record_holds_a_slot_until_it_is_done(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path, ApprovalLimits(max_pending=2))
    a = store.create("k-a", request("a"), 0.0, 60.0)
    store.create("k-b", request("b"), 0.0, 60.0)
    with pytest.raises(ApprovalsFullError, match=r"2 approvals are open in directory .*max_pending = 2"):
        store.create("k-c", request("c"), 0.0, 60.0)
    assert store.create("k-a", request("a"), 0.0, 60.0) == a, "the same key is its record, not a new one"
    store.decide(a.id, True, "alice", 1.0)
    with pytest.raises(ApprovalsFullError):  # approved but not run: still open
        store.create("k-c", request("c"), 0.0, 60.0)
    store.change(
        a.id, lambda r: replace(r, state=ApprovalState.DONE, outcome={"status": "executed"}, settled=2.0)
    )
    assert store.create("k-c", request("c"), 0.0, 60.0).key == "k-c"


def test_the_same_step_of_another_incident_is_the_open_record(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    first = store.create("k-1", request("a", "inc-1"), 0.0, 60.0)
    assert same_step(request("a", "inc-1"), request("a", "inc-2"))
    assert not same_step(request("a"), request("b"))
    assert not same_step(request("a"), {**request("a"), "params": {"by": 3}})
    assert store.create("k-2", request("a", "inc-2"), 0.0, 60.0) == first
    store.decide(first.id, False, "bob", 1.0)
    store.change(first.id, lambda r: replace(r, outcome={"status": "skipped"}, settled=1.0))
    # settled: a later incident gets a record of its own
    assert store.create("k-3", request("a", "inc-3"), 2.0, 60.0).id == approval_id("k-3")


def test_a_decision_is_checked_and_bounded(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    record = store.create("k", request("a"), 0.0, 60.0)
    with pytest.raises(ApprovalError, match="at most 1024 characters"):
        store.decide(record.id, True, "alice", 1.0, "x" * 1025)
    with pytest.raises(ApprovalError, match="has expired"):
        store.decide(record.id, True, "alice", 60.0)
    with pytest.raises(ApprovalError, match="'zz' is not an approval id"):
        store.decide("zz", True, "alice", 1.0)
    assert store.get(record.id).state is ApprovalState.PENDING


def test_records_are_cut_to_fit_and_refused_when_the_request_alone_does_not(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path, ApprovalLimits(max_record_bytes=2048))
    plan = "".join(f"step {i}\n" for i in range(2000))
    record = store.create("k", request("a"), 0.0, 60.0, plan)
    text = (tmp_path / f"{record.id}.json").read_text()
    assert len(text.encode()) <= 2048
    stored = store.get(record.id)
    assert stored.plan.startswith("step 0\nstep 1\n")
    assert stored.plan.endswith(PLAN_CUT)
    big = {"status": "executed", "message": "ok", "diff": "d" * 5000}
    done = store.change(record.id, lambda r: replace(r, state=ApprovalState.DONE, outcome=big))
    assert done is not None
    assert store.get(record.id).outcome == {"status": "executed", "message": "ok", "cut": True}
    with pytest.raises(ApprovalError, match=r"is \d+ bytes without its plan, over the limit of 2048"):
        store.create("k2", {**request("b"), "evidence": "e" * 3000}, 0.0, 60.0)


def test_changes_from_many_threads_are_not_lost(tmp_path: Path) -> None:
    """The directory's lock makes each change see the one before it."""
    store = DirectoryStore(tmp_path)
    record = store.create("k", request("a"), 0.0, 60.0)

    def bump() -> None:
        for _ in range(20):
            store.change(record.id, lambda r: replace(r, reason=str(int(r.reason or "0") + 1)))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get(record.id).reason == "80"


def test_settled_records_go_after_the_retention(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path, ApprovalLimits(retention=100.0))
    done = store.create("k-done", request("a"), 0.0, 60.0)
    store.change(
        done.id, lambda r: replace(r, state=ApprovalState.DONE, outcome={"status": "executed"}, settled=10.0)
    )
    expired = store.create("k-exp", request("b"), 0.0, 60.0)
    store.change(expired.id, lambda r: replace(r, state=ApprovalState.EXPIRED))  # settled at its expiry, 60
    waiting = store.create("k-wait", request("c"), 0.0, 1e9)
    assert store.prune(109.0) == 0
    assert store.prune(110.0) == 1
    assert store.find(done.id) is None
    assert store.prune(160.0) == 1
    assert [r.id for r in store.records()] == [waiting.id]


def test_an_unreadable_or_foreign_file_is_skipped(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    record = store.create("k", request("a"), 0.0, 60.0)
    (tmp_path / "abc.json").write_text("{not json")
    (tmp_path / "def0.json").write_text(json.dumps(record.to_dict()))  # another id's record
    assert [r.id for r in store.records()] == [record.id]
    with pytest.raises(ApprovalError, match="holds the record of"):
        store.get("def0")


def test_the_config_chooses_the_store_and_its_namespace(tmp_path: Path) -> None:
    directory = ExecutorConfig(approvals_dir=tmp_path)
    assert isinstance(open_store(directory, None, {}), DirectoryStore)
    shared = ExecutorConfig(approvals={"store": "configmap"})
    with pytest.raises(ApprovalError, match="configmap needs a Kubernetes connection"):
        open_store(shared, None, {})
    assert approvals_namespace(shared, {"POD_NAMESPACE": "aiops"}) == "aiops"
    assert approvals_namespace(shared, {}) == "default"
    assert (
        approvals_namespace(ExecutorConfig(lease_namespace="ops", approvals={"store": "configmap"}), {})
        == "ops"
    )
    named = ExecutorConfig(lease_namespace="ops", approvals={"store": "configmap", "namespace": "approvals"})
    assert approvals_namespace(named, {"POD_NAMESPACE": "aiops"}) == "approvals"
    with pytest.raises(ValidationError, match=r"executor\.approvals\.namespace 'Not_A_Name' is not a valid"):
        ExecutorConfig(approvals={"namespace": "Not_A_Name"})
    with pytest.raises(ValidationError, match="max_pending"):
        ExecutorConfig(approvals={"max_pending": 0})


def test_a_record_round_trips_and_old_records_read(tmp_path: Path) -> None:
    record = ApprovalRecord(
        "abc", "k", ApprovalState.PENDING, 1.0, 2.0, request("a"), owner="r", settled=None
    )
    assert ApprovalRecord.from_dict(record.to_dict()) == record
    old = {k: v for k, v in record.to_dict().items() if k not in {"owner", "settled"}}
    assert ApprovalRecord.from_dict(old) == replace(record, owner="")


def test_finished_records_are_kept_at_most_max_finished_the_newest(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path, ApprovalLimits(retention=1e9, max_finished=2))
    ids = []
    for i in range(4):
        record = store.create(f"k-{i}", request(f"t{i}"), 0.0, 60.0)
        settled = float(10 + i)

        def expire(r: ApprovalRecord, settled: float = settled) -> ApprovalRecord:
            return replace(r, state=ApprovalState.EXPIRED, settled=settled)

        store.change(record.id, expire)
        ids.append(record.id)
    waiting = store.create("k-open", request("open"), 0.0, 1e9)
    assert [r.id for r in store.records(finished=False)] == [waiting.id]
    assert sorted(r.id for r in store.records(finished=True)) == sorted(ids)
    assert store.prune(20.0) == 2
    assert sorted(r.id for r in store.records()) == sorted([*ids[2:], waiting.id]), "the two newest stay"
