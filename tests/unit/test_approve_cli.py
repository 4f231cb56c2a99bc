"""``aiops approvals`` / ``approve`` / ``reject`` over the approvals directory the executor reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.approvals import ApprovalState, DirectoryStore
from agent.cli import EXIT_FAILURE, EXIT_OK, main

REQUEST = {"action": "rollback", "target": {"kind": "Deployment", "namespace": "shop", "name": "checkout"}}


def pending(directory: Path, key: str = "pb/Deployment/shop/checkout/inc-1/0") -> str:
    store = DirectoryStore(directory)
    return store.create(key, REQUEST, now=1000.0, ttl=1e12, plan="roll back to revision 1").id


def test_list_approve_and_the_record_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    approval = pending(tmp_path)
    assert main(["approvals", "--dir", str(tmp_path)]) == EXIT_OK
    listed = capsys.readouterr().out
    assert approval in listed
    assert "rollback Deployment/shop/checkout" in listed

    assert (
        main(["approve", approval, "--dir", str(tmp_path), "--by", "alice", "--reason", "looks right"])
        == EXIT_OK
    )
    assert capsys.readouterr().out.startswith("approved: rollback on Deployment/shop/checkout")
    record = DirectoryStore(tmp_path).get(approval)
    assert record.state is ApprovalState.APPROVED

    assert main(["approvals", "--dir", str(tmp_path), "--all", "--json"]) == EXIT_OK
    [shown] = json.loads(capsys.readouterr().out)
    assert shown["state"] == "approved"

    # a decided record cannot be decided again
    assert main(["reject", approval, "--dir", str(tmp_path)]) == EXIT_FAILURE
    assert "aiops reject:" in capsys.readouterr().err


def test_reject_and_unknown_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    approval = pending(tmp_path)
    assert main(["reject", approval, "--dir", str(tmp_path), "--by", "bob"]) == EXIT_OK
    assert DirectoryStore(tmp_path).get(approval).state is ApprovalState.REJECTED
    capsys.readouterr()
    assert main(["approve", "no-such-id", "--dir", str(tmp_path)]) == EXIT_FAILURE
    assert "no-such-id" in capsys.readouterr().err


def test_approvals_without_config_says_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.commands import approve

    monkeypatch.setattr(approve, "DEFAULT_APPROVALS_DIR", tmp_path / "default")
    assert main(["approvals"]) == EXIT_OK
    out = capsys.readouterr()
    assert out.err == (
        f"aiops approvals: looking in {tmp_path / 'default'}, the default; --config FILE reads the "
        "daemon's executor.approvals, --dir DIR or --namespace NS names one\n"
    )
    assert out.out == f"no pending approvals in {tmp_path / 'default'}\n"
    # told where to look, it says nothing about it
    approval = pending(tmp_path / "mine")
    assert main(["approvals", "--dir", str(tmp_path / "mine")]) == EXIT_OK
    out = capsys.readouterr()
    assert out.err == ""
    assert approval in out.out


def test_a_namespace_that_is_not_one_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\nusers: [{name: u, user: {}}]\n"
    )
    assert (
        main(["approvals", "--namespace", "Not_A_Namespace", "--kubeconfig", str(kubeconfig)]) == EXIT_FAILURE
    )
    assert (
        "the approvals namespace 'Not_A_Namespace' is not a valid Kubernetes name" in capsys.readouterr().err
    )
    assert (
        main(["approve", "abc", "--namespace", "shop", "--kubeconfig", str(tmp_path / "none")])
        == EXIT_FAILURE
    )
    assert "cannot load a Kubernetes configuration" in capsys.readouterr().err
