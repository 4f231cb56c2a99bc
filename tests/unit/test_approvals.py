"""The approval records on their own: encoding limits, the directory backend, the config."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.approvals import (
    PLAN_CUT,
    READ_MAX,
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


def poison(directory: Path) -> dict[str, str]:
    """Record files that are JSON but no record: nested past the parser's depth, a number past a float."""
    record = {"id": "", "key": "k", "state": "pending", "created": 0, "expires": 10**400, "request": {}}
    files = {"aaaaaaaaaaaa": "[" * 200_000, "bbbbbbbbbbbb": '{"a":' * 100_000 + "1" + "}" * 100_000}
    files["cccccccccccc"] = json.dumps({**record, "id": "cccccccccccc"})
    for name, text in files.items():
        (directory / f"{name}.json").write_text(text)
    return {
        "aaaaaaaaaaaa": "nested too deep",
        "bbbbbbbbbbbb": "nested too deep",
        "cccccccccccc": "int too large to convert to float",
    }


def test_a_record_nested_too_deep_or_with_a_huge_number_is_skipped_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = DirectoryStore(tmp_path, ApprovalLimits(retention=0.0))
    good = store.create("k", request("a"), 0.0, 60.0)
    for approval, why in poison(tmp_path).items():
        with pytest.raises(ApprovalError, match=f"approval '{approval}' is unreadable: .*{why}"):
            store.get(approval)
        assert store.find(approval) is None
    assert [r.id for r in store.records()] == [good.id]
    assert sum("skipping" in m for m in caplog.messages) == 3, "each is named in a warning"
    assert store.decide(good.id, True, "alice", 1.0).state is ApprovalState.APPROVED
    assert store.prune(100.0) == 0
    assert store.create("k2", request("b"), 0.0, 60.0).key == "k2"


def test_a_fifo_a_link_a_huge_or_a_non_utf8_file_is_not_read(tmp_path: Path) -> None:
    """A FIFO would block the reader for good, /dev/zero would fill its memory: neither is opened
    as a record, and the records beside them are read."""
    store = DirectoryStore(tmp_path)
    good = store.create("k", request("a"), 0.0, 60.0)
    os.mkfifo(tmp_path / "aaaaaaaaaaaa.json")
    (tmp_path / "bbbbbbbbbbbb.json").symlink_to("/dev/zero")
    (tmp_path / "cccccccccccc.json").write_bytes(b" " * (READ_MAX + 1))
    (tmp_path / "dddddddddddd.json").write_bytes(b'{"id": "\xff"}')
    found: list[list[str]] = []
    reader = threading.Thread(target=lambda: found.append([r.id for r in store.records()]), daemon=True)
    reader.start()
    reader.join(10.0)
    assert not reader.is_alive(), "records() hung on a file"
    assert found == [[good.id]]
    with pytest.raises(ApprovalError, match="'aaaaaaaaaaaa' is not a regular file"):
        store.get("aaaaaaaaaaaa")
    with pytest.raises(ApprovalError, match=r"'bbbbbbbbbbbb' is unreadable .*symbolic links"):
        store.get("bbbbbbbbbbbb")
    with pytest.raises(ApprovalError, match=f"'cccccccccccc' is over {READ_MAX} bytes"):
        store.get("cccccccccccc")
    with pytest.raises(ApprovalError, match=r"'dddddddddddd' is unreadable .*not UTF-8 at byte 8"):
        store.get("dddddddddddd")


def test_a_directory_every_user_can_write_is_refused(tmp_path: Path) -> None:
    """Whoever can write there can approve: such a directory (an /tmp/aiops-approvals another user
    made first) is neither read nor written."""
    shared = tmp_path / "shared"
    store = DirectoryStore(shared)
    approval = store.create("k", request("a"), 0.0, 60.0).id
    shared.chmod(0o777)
    why = r"directory .*/shared is writable by every user \(mode drwxrwxrwx\): whoever can write there"
    for call in (
        lambda: list(store.records()),
        lambda: store.get(approval),
        lambda: store.decide(approval, True, "alice", 1.0),
        lambda: store.create("k2", request("b"), 0.0, 60.0),
    ):
        with pytest.raises(ApprovalError, match=why):
            call()
    shared.chmod(0o775)  # its owner may share it with a group
    assert store.decide(approval, True, "alice", 1.0).state is ApprovalState.APPROVED


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another user")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    store = DirectoryStore(theirs)
    forged = store.create("k", request("a"), 0.0, 60.0)
    store.decide(forged.id, True, "mallory", 1.0)
    os.chown(theirs, 65534, -1)
    with pytest.raises(ApprovalError, match=r"is owned by uid 65534, not by this user \(uid 0\) or root"):
        list(store.records(finished=False))
    os.chown(theirs, 0, -1)
    assert [r.state for r in store.records()] == [ApprovalState.APPROVED]


def test_a_reason_or_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    """A byte that is not UTF-8 on the command line comes as a lone surrogate, which no JSON log
    line or UTF-8 writer can carry further."""
    store = DirectoryStore(tmp_path)
    record = store.create("k", request("a"), 0.0, 60.0)
    with pytest.raises(ApprovalError, match=r"the reason is not UTF-8 text \(character 4: '\\udcff'\)"):
        store.decide(record.id, False, "alice", 1.0, "bad\udcff")
    with pytest.raises(ApprovalError, match="the name is not UTF-8 text"):
        store.decide(record.id, True, "\udce9ve", 1.0)
    assert store.get(record.id).state is ApprovalState.PENDING
    decided = store.decide(record.id, False, "zoë", 1.0, "not now\nnot during the sale")
    assert (decided.decided_by, decided.reason) == ("zoë", "not now\nnot during the sale")


@pytest.mark.parametrize(("when", "read"), [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf")])
def test_a_record_that_never_expires_is_no_record(tmp_path: Path, when: str, read: str) -> None:
    """Python's JSON reads NaN and Infinity: an expiry of either would keep a forged record
    approvable for ever (no time is at or past NaN)."""
    store = DirectoryStore(tmp_path)
    record = store.create("k", request("a"), 0.0, 60.0)
    path = tmp_path / f"{record.id}.json"
    path.write_text(path.read_text().replace('"expires": 60.0', f'"expires": {when}'))
    assert when in path.read_text()
    with pytest.raises(ApprovalError, match=f"not an approval record: expires is {read}, not a time"):
        store.get(record.id)
    with pytest.raises(ValueError, match="created is nan, not a time"):
        ApprovalRecord.from_dict({**record.to_dict(), "created": float("nan")})
