"""``aiops run`` with the shipped playbooks: Alertmanager webhook in, incidents on the audit log."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from agent.cli import main
from tests.e2e.daemon import Daemon
from tests.servers.common import eventually

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


TOKEN = "s3cret-webhook-token"


def post(port: int, path: str, body: bytes, token: str | None = TOKEN) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST")
    req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def alert(status: str) -> bytes:
    return json.dumps(
        {
            "version": "4",
            "groupKey": '{}:{alertname="HighErrorRate"}',
            "truncatedAlerts": 0,
            "status": status,
            "receiver": "aiops",
            "groupLabels": {"alertname": "HighErrorRate"},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://am:9093",
            "alerts": [
                {
                    "status": status,
                    "labels": {"alertname": "HighErrorRate", "namespace": "shop", "deployment": "checkout"},
                    "annotations": {"summary": "5xx above 5%"},
                    "startsAt": "2026-01-01T00:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prom/graph",
                    "fingerprint": "abc123",
                }
            ],
        }
    ).encode()


def test_alertmanager_webhook_and_playbooks_in_the_daemon(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")  # as a Secret mounted from `kubectl create secret --from-file`
    cfg = {
        "playbooks": {"directory": str(REPO / "playbooks"), "status_file": str(tmp_path / "status.json")},
        "sources": {"alertmanager": {"bearer_token_file": str(token_file)}},
    }
    with Daemon(tmp_path, cfg) as d:
        d.wait_http("/readyz", 200)
        status, body = post(d.port, "/alertmanager", alert("firing"), token=None)
        assert (status, body) == (401, "unauthorized: expected an Authorization header of scheme Bearer\n")
        assert post(d.port, "/alertmanager", alert("firing"), token="guess")[0] == 401
        assert post(d.port, "/alertmanager", alert("firing"))[0] == 200
        status, body = post(d.port, "/alertmanager", b'{"version": "4", "alerts": "nope"}')
        assert status == 400
        assert "alerts" in body
        metrics = d.wait_http("/metrics", 200)
        assert 'aiops_alertmanager_requests_total{outcome="ok"} 1.0' in metrics
        assert 'aiops_alertmanager_requests_total{outcome="malformed"} 1.0' in metrics
        assert 'aiops_alertmanager_requests_total{outcome="unauthorized"} 2.0' in metrics
        status_file = tmp_path / "status.json"
        eventually(status_file.exists, timeout=10, what="the playbook status file")
        assert json.loads(status_file.read_text())
        code, _ = d.terminate()
        assert code == 0


def test_an_invalid_playbook_set_at_start_exits_2_with_the_location(tmp_path: Path) -> None:
    books = tmp_path / "books"
    books.mkdir()
    (books / "bad.yaml").write_text(
        "apiVersion: aiops/v1\nkind: Playbook\nmetadata: {name: x}\nspec:\n  priority: high\n"
    )
    with Daemon(
        tmp_path, {"playbooks": {"directory": str(books), "status_file": str(tmp_path / "s.json")}}
    ) as d:
        assert d.proc.wait(timeout=60) == 2
        assert f"{books / 'bad.yaml'}:" in d.output()


RESTART_ON_ALERT = """\
apiVersion: aiops/v1
kind: Playbook
metadata: {name: restart-on-alert}
spec:
  trigger:
    signal: alert
    match: {alertname: HighErrorRate}
  target:
    kind: Deployment
    namespace: "{{ labels.namespace }}"
    name: "{{ labels.deployment }}"
  actions:
    - restart: {}
"""


def test_the_daemon_serves_the_decision_record_of_an_incident(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    books = tmp_path / "books"
    books.mkdir()
    (books / "restart.yaml").write_text(RESTART_ON_ALERT)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    cfg = {
        "playbooks": {"directory": str(books), "status_file": str(tmp_path / "status.json")},
        "sources": {"alertmanager": {"bearer_token_file": str(token_file)}},
    }
    with Daemon(tmp_path, cfg) as d:
        d.wait_http("/readyz", 200)
        assert post(d.port, "/alertmanager", alert("firing"))[0] == 200

        def acted() -> bool:
            listing = json.loads(d.get("/incidents")[1])["incidents"]
            return bool(listing) and listing[0]["actions"] == ["restart dry_run"]

        eventually(acted, timeout=10, what="the incident's record with its planned restart")
        (row,) = json.loads(d.get("/incidents")[1])["incidents"]
        assert row["playbook"] == "restart-on-alert"
        assert row["target"] == {"kind": "Deployment", "namespace": "shop", "name": "checkout"}
        record = json.loads(d.wait_http(f"/incidents/{row['incident']}", 200))
        assert record["rule"]["match"] == {"alertname": "HighErrorRate"}
        assert record["signals"][0]["kind"] == "alert"
        assert {g["name"] for g in record["guardrails"]} >= {
            "cooldown",
            "maxPerHour",
            "approval",
            "protected",
        }
        assert d.get("/incidents/no-such-incident")[0] == 404
        assert main(["incident", "show", row["incident"], "--url", f"http://127.0.0.1:{d.port}"]) == 0
        assert "restart-on-alert on Deployment/shop/checkout" in capsys.readouterr().out
        code, _ = d.terminate()
        assert code == 0
