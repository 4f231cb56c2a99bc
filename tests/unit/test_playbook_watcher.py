"""Hot reload (a ConfigMap mount's symlink swap, atomic swaps, rejected sets kept visible) and the runtime."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from agent.clock import ManualClock
from agent.metrics import AgentMetrics
from agent.playbook.events import AuditLog
from agent.playbook.loader import PlaybookLoadError, PlaybookSet
from agent.playbook.requests import DryRunExecutor, Proposal, RecordingExecutor
from agent.playbook.runtime import PlaybookRuntime
from agent.playbook.settings import PlaybooksConfig
from agent.playbook.watcher import PlaybookWatcher, read_status
from remediations.registry import make_request
from remediations.types import ActionStatus, Target

PB = """\
apiVersion: aiops/v1
kind: Playbook
metadata: {{name: {name}}}
spec:
  trigger: {{signal: anomaly, metric: errors}}
  target: {{kind: Deployment, namespace: shop, name: web}}
  actions: [{{restart: {{}}}}]
"""


class ConfigMapMount:
    """The layout the kubelet writes: x.yaml -> ..data/x.yaml, ..data -> ..<timestamp>/."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.version = 0

    def publish(self, files: dict[str, str]) -> None:
        self.version += 1
        target = self.root / f"..2024_01_01_00_00_0{self.version}"
        target.mkdir()
        for name, text in files.items():
            (target / name).write_text(text)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(target.name)
        tmp.replace(self.root / "..data")  # the atomic swap
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")
        for stale in self.root.iterdir():
            if stale.is_symlink() and stale.name != "..data" and not stale.exists():
                stale.unlink()


class Swaps:
    def __init__(self) -> None:
        self.sets: list[PlaybookSet] = []

    def __call__(self, s: PlaybookSet) -> None:
        self.sets.append(s)


def make(tmp_path: Path) -> tuple[ConfigMapMount, PlaybookWatcher, Swaps, AgentMetrics, ManualClock]:
    mount_dir = tmp_path / "playbooks"
    mount_dir.mkdir()
    clock = ManualClock(1_700_000_000.0)
    swaps = Swaps()
    metrics = AgentMetrics()
    watcher = PlaybookWatcher(mount_dir, clock, swaps, metrics=metrics, status_file=tmp_path / "status.json")
    return ConfigMapMount(mount_dir), watcher, swaps, metrics, clock


def test_loads_then_reloads_only_on_change(tmp_path: Path) -> None:
    mount, watcher, swaps, metrics, clock = make(tmp_path)
    mount.publish({"a.yaml": PB.format(name="one")})
    assert watcher.poll()
    assert swaps.sets[-1].names == ["one"]
    clock.advance(10)
    assert not watcher.poll()  # same content: nothing to do
    mount.publish({"a.yaml": PB.format(name="one"), "b.yaml": PB.format(name="two")})
    clock.advance(10)
    assert watcher.poll()
    assert swaps.sets[-1].names == ["one", "two"]
    assert len(swaps.sets) == 2
    reg = metrics.registry
    assert reg.get_sample_value("aiops_playbook_reloads_total", {"outcome": "loaded"}) == 2
    assert reg.get_sample_value("aiops_playbooks_loaded") == 2
    assert reg.get_sample_value("aiops_playbook_set_loaded_timestamp_seconds") == clock.now()


def test_an_invalid_set_is_rejected_and_the_last_good_one_keeps_running(tmp_path: Path) -> None:
    mount, watcher, swaps, metrics, clock = make(tmp_path)
    mount.publish({"a.yaml": PB.format(name="one")})
    watcher.poll()
    good = watcher.status.digest
    loaded_at = watcher.status.loaded_at
    clock.advance(10)
    mount.publish(
        {"a.yaml": PB.format(name="one").replace("restart", "restrat"), "b.yaml": PB.format(name="two")}
    )
    assert not watcher.poll()
    assert len(swaps.sets) == 1  # nothing swapped: "two" does not run either
    status = watcher.status
    assert (status.digest, status.loaded_at, status.playbooks) == (good, loaded_at, ["one"])
    assert not status.healthy
    assert status.rejected_at == clock.now()
    (err,) = status.errors
    assert err["file"] == str(mount.root / "a.yaml")  # named as mounted, not by the snapshot directory
    assert (err["line"], err["field"]) == (7, "spec.actions[0].restrat")
    reg = metrics.registry
    assert reg.get_sample_value("aiops_playbook_reloads_total", {"outcome": "rejected"}) == 1
    assert reg.get_sample_value("aiops_playbook_errors") == 1
    clock.advance(10)
    watcher.poll()  # the same bad set again: not counted twice
    assert reg.get_sample_value("aiops_playbook_reloads_total", {"outcome": "rejected"}) == 1
    on_disk = read_status(tmp_path / "status.json")
    assert on_disk.to_dict() == status.to_dict()
    mount.publish({"a.yaml": PB.format(name="one"), "b.yaml": PB.format(name="two")})
    assert watcher.poll()
    assert watcher.status.healthy
    assert read_status(tmp_path / "status.json").errors == []
    assert reg.get_sample_value("aiops_playbook_errors") == 0


def test_reads_one_consistent_version_through_data(tmp_path: Path) -> None:
    mount, watcher, swaps, _, _ = make(tmp_path)
    mount.publish({"a.yaml": PB.format(name="one")})
    # a top-level entry that does not go through ..data is not part of the published version
    link = mount.root / "a.yaml"
    link.unlink()
    link.write_text(PB.format(name="stray"))
    watcher.poll()
    assert swaps.sets[-1].names == ["one"]


def test_a_plain_directory_works_too(tmp_path: Path) -> None:
    directory = tmp_path / "pb"
    directory.mkdir()
    (directory / "a.yaml").write_text(PB.format(name="one"))
    swaps = Swaps()
    watcher = PlaybookWatcher(directory, ManualClock(0.0), swaps)
    assert watcher.poll()
    (directory / "a.yaml").write_text(PB.format(name="one")[:40])  # caught half-written
    assert not watcher.poll()
    assert swaps.sets[-1].names == ["one"]
    (directory / "a.yaml").write_text(PB.format(name="uno"))
    assert watcher.poll()
    assert swaps.sets[-1].names == ["uno"]


def test_a_missing_directory_is_a_rejected_set_not_a_crash(tmp_path: Path) -> None:
    swaps = Swaps()
    watcher = PlaybookWatcher(tmp_path / "absent", ManualClock(0.0), swaps)
    assert not watcher.poll()
    assert watcher.status.errors[0]["message"].startswith("cannot list")
    assert swaps.sets == []


def test_a_mount_missing_data_is_rejected_not_an_empty_healthy_set(tmp_path: Path) -> None:
    mount, watcher, swaps, metrics, _ = make(tmp_path)
    mount.publish({"a.yaml": PB.format(name="one")})
    assert watcher.poll()
    (mount.root / "..data").unlink()  # a.yaml -> ..data/a.yaml now dangles
    assert not watcher.poll()
    assert [len(s) for s in swaps.sets] == [1], "the last good set keeps running"
    assert not watcher.status.healthy
    assert {e["message"] for e in watcher.status.errors} == {
        "a ConfigMap mount without ..data: cannot tell which version is current"
    }
    assert metrics.playbook_errors._value.get() == 1


def test_dangling_playbook_links_are_errors(tmp_path: Path) -> None:
    directory = tmp_path / "pb"
    directory.mkdir()
    (directory / "a.yaml").symlink_to("gone/a.yaml")
    watcher = PlaybookWatcher(directory, ManualClock(0.0), Swaps())
    with pytest.raises(PlaybookLoadError) as info:
        watcher.load_initial()
    assert [str(e.location.file) for e in info.value.errors] == [str(directory / "a.yaml")]
    assert "not a readable file" in str(info.value.errors[0])


def test_run_polls_on_the_clock_until_stopped(tmp_path: Path) -> None:
    directory = tmp_path / "pb"
    directory.mkdir()
    (directory / "a.yaml").write_text(PB.format(name="one"))
    clock = ManualClock(0.0)
    stop = threading.Event()
    polls: list[float] = []

    class Counting(PlaybookWatcher):
        def poll(self) -> bool:
            polls.append(clock.now())
            if len(polls) == 3:
                stop.set()
            return super().poll()

    swaps = Swaps()
    Counting(directory, clock, swaps).run(stop, interval=10.0)
    assert polls == [0.0, 10.0, 20.0]
    assert len(swaps.sets) == 1


# ------------------------------------------------------------------ the daemon's runtime

ALERT_PB = """\
apiVersion: aiops/v1
kind: Playbook
metadata: {name: restart-crashlooping}
spec:
  trigger: {signal: alert, metric: KubePodCrashLooping}
  target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
  actions: [{restart: {}}]
"""

WEBHOOK = {
    "version": "4",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "KubePodCrashLooping", "namespace": "shop", "deployment": "web"},
            "startsAt": "2023-11-14T22:13:20Z",
            "fingerprint": "f1",
        }
    ],
}


class StopAt(ManualClock):
    """A virtual clock that sets ``stop`` once it reaches ``until``."""

    def __init__(self, start: float, until: float, stop: threading.Event) -> None:
        super().__init__(start)
        self.until = until
        self.stop = stop

    def wait(self, seconds: float, stop: threading.Event | None = None) -> bool:
        self.advance(seconds)
        if self.now() >= self.until:
            self.stop.set()
        return self.stop.is_set()


def test_runtime_loads_routes_alerts_and_reloads(tmp_path: Path) -> None:
    directory = tmp_path / "pb"
    directory.mkdir()
    (directory / "a.yaml").write_text(ALERT_PB)
    stop = threading.Event()
    clock = StopAt(1_700_000_000.0, 1_700_000_000.0 + 15, stop)
    executor = RecordingExecutor()
    config = PlaybooksConfig(directory=directory, status_file=tmp_path / "status.json", reload_interval=10.0)
    runtime = PlaybookRuntime(config, clock, AgentMetrics(), executor=executor, audit=AuditLog())
    runtime.load()
    assert runtime.engine.playbooks.names == ["restart-crashlooping"]
    response = runtime.alertmanager_route()(json.dumps(WEBHOOK).encode())
    assert response.status == 200
    assert [(r.action, str(r.target)) for r in executor.requests] == [("restart", "Deployment/shop/web")]
    (directory / "b.yaml").write_text(PB.format(name="two"))
    runtime.run(stop)  # 15 virtual seconds: one poll at +10
    assert runtime.engine.playbooks.names == ["restart-crashlooping", "two"]
    assert read_status(tmp_path / "status.json").playbooks == ["restart-crashlooping", "two"]


def test_runtime_refuses_an_invalid_set_at_start(tmp_path: Path) -> None:
    directory = tmp_path / "pb"
    directory.mkdir()
    (directory / "a.yaml").write_text(ALERT_PB.replace("restart", "restrat"))
    config = PlaybooksConfig(directory=directory, status_file=tmp_path / "status.json")
    runtime = PlaybookRuntime(config, ManualClock(0.0), AgentMetrics())
    with pytest.raises(PlaybookLoadError) as info:
        runtime.load()
    assert info.value.errors[0].field == "spec.actions[0].restrat"
    assert read_status(tmp_path / "status.json").errors[0]["field"] == "spec.actions[0].restrat"


def test_without_a_directory_the_runtime_runs_no_playbooks(tmp_path: Path) -> None:
    runtime = PlaybookRuntime(PlaybooksConfig(), ManualClock(0.0), AgentMetrics())
    runtime.load()
    assert len(runtime.engine.playbooks) == 0
    assert runtime.watcher is None


def test_the_dry_run_executor_plans_once_per_key() -> None:
    executor = DryRunExecutor(memory=2)

    def proposal(incident: str) -> Proposal:
        web = Target("Deployment", "shop", "web")
        request = make_request("restart", web, {}, playbook="p", incident=incident, step="actions[0]")
        return Proposal(request, 0.0)

    req = proposal("inc-1")
    assert executor.submit(req).status is ActionStatus.DRY_RUN
    assert executor.submit(req).status is ActionStatus.SKIPPED
    for incident in ("inc-2", "inc-3"):
        executor.submit(proposal(incident))
    assert executor.submit(req).status is ActionStatus.DRY_RUN  # memory is bounded: inc-1 was forgotten


def test_a_status_file_nested_too_deep_is_unreadable_not_a_crash(tmp_path: Path) -> None:
    """``aiops playbook status`` reports an unreadable file (ValueError), as for any other bad one."""
    path = tmp_path / "status.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="does not hold a playbook status: nested too deep"):
        read_status(path)
