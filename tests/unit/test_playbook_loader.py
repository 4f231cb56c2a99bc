"""Loading playbooks: the format, located errors, and hostile input."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.playbook.loader import MAX_FILE_BYTES, PlaybookLoadError, PlaybookSet, load_paths, load_sources
from agent.playbook.models import Playbook
from agent.playbook.schema import schema_text
from agent.yamlloc import LocatedError
from detectors.series import SeriesKey
from detectors.signal import Signal, SignalKind

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
apiVersion: aiops/v1
kind: Playbook
metadata: {name: rollback-on-error-spike}
spec:
  priority: 100
  trigger:
    signal: anomaly
    metric: http_requests_error_ratio
    match: {namespace: shop, deployment: "checkout|cart"}
    minScore: 0.99
    for: 2m
  target: {kind: Deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
  when:
    - rolloutWithin: 30m
  actions:
    - rollback: {}
    - notify: {webhook: "https://hooks.example/ops", message: "rolled back {{ target.name }}"}
  verify: {clears: true, within: 10m}
  onFailure: [{notify: {webhookEnv: OPS_WEBHOOK, message: "rollback of {{ target.name }} did not help"}}]
  guardrails: {cooldown: 30m, maxPerHour: 2, dryRun: false, approval: none}
"""


def errors_of(text: str, file: str = "pb.yaml") -> list[LocatedError]:
    with pytest.raises(PlaybookLoadError) as info:
        load_sources([(file, text)])
    return info.value.errors


def only(text: str) -> tuple[int, int, str, str]:
    errs = errors_of(text)
    assert len(errs) == 1, [str(e) for e in errs]
    e = errs[0]
    return e.location.line, e.location.column, e.field, e.message


def test_the_issue_example_loads() -> None:
    (pb,) = load_sources([("pb.yaml", GOOD)])
    spec = pb.model.spec
    assert pb.name == "rollback-on-error-spike"
    assert (pb.file, pb.line) == ("pb.yaml", 1)
    assert spec.trigger.for_ == 120.0
    assert spec.trigger.signal == ["anomaly"]
    assert [s.action for s in spec.actions] == ["rollback", "notify"]
    assert spec.verify.within == 600.0
    assert spec.guardrails.cooldown == 1800.0


def test_many_documents_and_files_sorted_by_priority() -> None:
    second = GOOD.replace("rollback-on-error-spike", "restart-web").replace("priority: 100", "priority: 200")
    third = GOOD.replace("rollback-on-error-spike", "third").replace("priority: 100", "priority: 1")
    loaded = load_sources([("a.yaml", GOOD + "---\n" + second), ("b.yaml", "---\n" + third + "---\n")])
    assert loaded.names == ["restart-web", "rollback-on-error-spike", "third"]
    assert loaded.get("restart-web") is not None
    assert loaded.get("restart-web").line == 22  # type: ignore[union-attr]
    assert loaded.files == ("a.yaml", "b.yaml")


def test_the_digest_follows_the_content() -> None:
    a = load_sources([("a.yaml", GOOD)]).digest
    assert a == load_sources([("a.yaml", GOOD)]).digest
    assert a != load_sources([("a.yaml", GOOD.replace("2m", "3m"))]).digest


def test_wrong_type_names_line_column_field_and_expectation() -> None:
    line, col, field, message = only(GOOD.replace("minScore: 0.99", "minScore: high"))
    assert (line, col, field) == (10, 15, "spec.trigger.minScore")
    assert "valid number" in message
    assert "'high'" in message


def test_unknown_field_points_at_the_key() -> None:
    assert only(GOOD.replace("    for: 2m\n", "    for: 2m\n    fro: 2m\n")) == (
        12,
        5,
        "spec.trigger.fro",
        "unknown field",
    )


def test_unknown_field_inside_action_params() -> None:
    line, col, field, message = only(GOOD.replace("rollback: {}", "rollback: {revison: 3}"))
    assert (line, field, message) == (16, "spec.actions[0].rollback.revison", "unknown field")
    assert col == 18


def test_unknown_action_suggests_the_closest() -> None:
    line, col, field, message = only(GOOD.replace("- rollback: {}", "- rolback: {}"))
    assert (line, col, field) == (16, 7, "spec.actions[0].rolback")
    assert message.startswith(
        "unknown action 'rolback'; expected one of: scale, rollback, restart, delete_pod"
    )
    assert "did you mean 'rollback'" in message


def test_a_step_with_two_actions() -> None:
    _, _, field, message = only(GOOD.replace("- rollback: {}", "- {rollback: {}, restart: {}}"))
    assert field == "spec.actions[0]"
    assert "exactly one action" in message
    assert "rollback, restart" in message


def test_an_action_that_cannot_act_on_the_target_kind() -> None:
    text = GOOD.replace("kind: Deployment", "kind: StatefulSet")
    line, col, field, message = only(text)
    assert (line, col, field) == (16, 7, "spec.actions[0].rollback")
    assert message == "rollback cannot act on a StatefulSet; it works on: Deployment"


def test_bad_duration() -> None:
    line, _, field, message = only(GOOD.replace("for: 2m", "for: 2 minutes"))
    assert (line, field) == (11, "spec.trigger.for")
    assert "expected a duration like 30s, 5m" in message


def test_missing_required_field() -> None:
    errs = errors_of(GOOD.replace("  target: {kind: Deployment,", "  targt: {kind: Deployment,"))
    assert [(e.location.line, e.field, e.message) for e in errs] == [
        (5, "spec.target", "required field is missing"),  # at the first line of spec
        (12, "spec.targt", "unknown field"),
    ]


def test_every_error_of_a_document_is_reported_at_once() -> None:
    text = (
        GOOD.replace("minScore: 0.99", "minScore: 2")
        .replace('{{ target.name }}"}', '{{ target.nam }}"}')
        .replace("{{ labels.namespace }}", "{{ target.namespace }}")
        .replace("- rollback: {}", "- rollbak: {}")
    )
    fields = [e.field for e in errors_of(text)]
    assert fields == [
        "spec.trigger.minScore",
        "spec.target.namespace",
        "spec.actions[0].rollbak",
        "spec.actions[1].notify.message",
    ]


def test_unknown_template_variable_is_a_load_error() -> None:
    line, _, field, message = only(
        GOOD.replace("rolled back {{ target.name }}", "rolled back {{ target.nam }}")
    )
    assert (line, field) == (17, "spec.actions[1].notify.message")
    assert "unknown template variable 'target.nam'" in message
    assert "did you mean 'target.name'" in message


def test_a_literal_name_must_be_a_kubernetes_name() -> None:
    line, _, field, message = only(GOOD.replace('name: "{{ labels.deployment }}"', "name: Checkout_V2"))
    assert (line, field) == (12, "spec.target.name")
    assert "not a valid Kubernetes name" in message


def test_patterns_that_backtrack_for_ever_in_python_re_match_in_linear_time() -> None:
    # ((a)+)+ against 31 a's and a '-' backtracks for minutes in Python's re; the label value is a
    # valid Deployment name, so whoever names a Deployment could stall the engine with it
    hostile = "a" * 5000 + "-"
    for pattern in ("((a)+)+", "(a|a){28}", "(?:(?:a)+)+", ".*" * 40 + "x"):
        (pb,) = load_sources([("p.yaml", GOOD.replace('"checkout|cart"', f'"{pattern}"'))])
        labels = {"namespace": "shop", "deployment": hostile}
        signal = Signal(
            SignalKind.ANOMALY, SeriesKey.of("http_requests_error_ratio", labels), 0.0, 1.0, 1.0, "t", {}
        )
        assert not pb.matches(signal), pattern
        labels["deployment"] = "a" * 28
        signal = Signal(
            SignalKind.ANOMALY, SeriesKey.of("http_requests_error_ratio", labels), 0.0, 1.0, 1.0, "t", {}
        )
        assert pb.matches(signal) is (pattern != ".*" * 40 + "x"), pattern


def test_patterns_the_linear_time_engine_cannot_run_are_refused_by_name() -> None:
    _, _, field, message = only(GOOD.replace('"checkout|cart"', '"(a)\\\\1"'))
    assert field == "spec.trigger.match.deployment"
    assert "not a valid regular expression (RE2 syntax: no backreferences or lookaround)" in message
    assert "invalid escape sequence" in message
    _, _, _, message = only(GOOD.replace('"checkout|cart"', '"web(?!-canary)"'))
    assert "invalid perl operator: (?!" in message
    _, _, _, message = only(GOOD.replace('"checkout|cart"', '"(unclosed"'))
    assert "missing )" in message
    _, _, _, message = only(GOOD.replace('"checkout|cart"', '"x' + "a" * 600 + '"'))
    assert "a pattern is limited to 512 characters, got 601" in message
    for fine in ('"web-.+"', '"[a-z0-9]([-a-z0-9]*[a-z0-9])?"', '"a{1,5}b*[*+]*"', '"x\\\\*.*"'):
        assert len(load_sources([("p.yaml", GOOD.replace('"checkout|cart"', fine))])) == 1, fine


def test_fixed_scale_outside_the_playbooks_bounds() -> None:
    text = GOOD.replace("- rollback: {}", "- scale: {replicas: 50}").replace(
        "approval: none", "maxReplicas: 10"
    )
    _, _, field, message = only(text)
    assert field == "spec.actions[0].scale.replicas"
    assert message == "50 is above guardrails.maxReplicas 10"


def test_verify_quiet_must_fit_in_within() -> None:
    _, _, field, message = only(
        GOOD.replace("verify: {clears: true, within: 10m}", "verify: {within: 1m, quiet: 2m}")
    )
    assert field == "spec.verify"
    assert "quiet (120 s) must be shorter than within (60 s)" in message


def test_two_playbooks_with_one_name_across_files() -> None:
    with pytest.raises(PlaybookLoadError) as info:
        load_sources([("a.yaml", GOOD), ("b.yaml", "# another\n" + GOOD)])
    (e,) = info.value.errors
    assert (e.location.file, e.location.line, e.field) == ("b.yaml", 4, "metadata.name")
    assert e.message == "duplicate playbook name 'rollback-on-error-spike' (first defined at a.yaml:3:18)"


def test_invalid_yaml_is_located() -> None:
    line, _, _, message = only(GOOD.replace("minScore: 0.99", "minScore: [0.99"))
    assert line == 11
    assert message.startswith("invalid YAML")


def test_a_document_that_is_not_a_mapping() -> None:
    assert only("- a\n- b\n")[3].startswith("expected a Playbook: a mapping")


def test_a_50_mb_file_is_refused_unread_and_fast(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("w") as fh:
        fh.write("# " + "x" * (50 * 1024 * 1024) + "\n")
    started = time.monotonic()
    with pytest.raises(PlaybookLoadError) as info:
        load_paths([tmp_path])
    assert time.monotonic() - started < 2.0
    (e,) = info.value.errors
    assert e.location.file == str(big)
    assert (
        e.message == f"file is 50.0 MiB, larger than the {MAX_FILE_BYTES >> 20}.0 MiB limit; refused unread"
    )


def test_an_alias_bomb_is_refused_without_expanding() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    started = time.monotonic()
    errs = errors_of("\n".join(lines) + "\n")
    assert time.monotonic() - started < 2.0
    assert len(errs) == 1
    assert "alias bomb" in errs[0].message
    assert errs[0].location.line > 1


def test_a_recursive_alias_and_deep_nesting_are_refused() -> None:
    assert "recursive alias" in only("a: &x [*x]\n")[3]
    assert "nested deeper" in only("a: " + "[" * 100 + "]" * 100 + "\n")[3]


def test_no_code_runs_from_yaml(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f"a: !!python/object/apply:os.system ['touch {marker}']\n"
    _, _, _, message = only(text)
    assert "could not determine a constructor" in message
    assert not marker.exists()


def test_missing_path_is_a_located_error(tmp_path: Path) -> None:
    with pytest.raises(PlaybookLoadError) as info:
        load_paths([tmp_path / "absent.yaml"])
    assert info.value.errors[0].message == "file not found"


def test_a_directory_skips_hidden_entries_and_other_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / ".hidden.yaml").write_text("not: [valid")
    (tmp_path / "schema.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("hello")
    assert load_paths([tmp_path]).names == ["rollback-on-error-spike"]


# ------------------------------------------------------------------ the schema and shipped files


def test_committed_schema_is_current() -> None:
    committed = (REPO / "playbooks" / "schema.json").read_text()
    assert committed == schema_text(), (
        "playbooks/schema.json is stale: run `aiops playbook schema > playbooks/schema.json`"
    )


def test_schema_describes_the_format() -> None:
    schema = json.loads(schema_text())
    assert schema["required"] == ["apiVersion", "kind", "metadata", "spec"]
    spec = schema["$defs"]["Spec"]
    assert spec["additionalProperties"] is False
    step_refs = {ref["$ref"].rsplit("/", 1)[1] for ref in spec["properties"]["actions"]["items"]["oneOf"]}
    assert step_refs == {
        "ScaleStep",
        "RollbackStep",
        "RestartStep",
        "DeletePodStep",
        "RetrainStep",
        "NotifyStep",
    }
    trigger = schema["$defs"]["Trigger"]["properties"]
    assert {"type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(ms|s|m|h|d|w))+$"} in trigger["for"]["anyOf"]


def test_shipped_playbooks_load_and_point_editors_at_the_schema() -> None:
    files = sorted((REPO / "playbooks").glob("*.yaml"))
    assert len(files) == 7
    for f in files:
        assert f.read_text().startswith("# yaml-language-server: $schema=./schema.json\n"), f
    assert len(load_paths([REPO / "playbooks"])) == 7


# ------------------------------------------------------------------ random documents


def check_outcome(sources: list[tuple[str, str]]) -> None:
    try:
        outcome: PlaybookSet | PlaybookLoadError = load_sources(sources)
    except PlaybookLoadError as exc:  # anything else propagates and fails the test
        outcome = exc
    if isinstance(outcome, PlaybookSet):
        assert all(isinstance(pb.model, Playbook) for pb in outcome)
        return
    assert outcome.errors
    names = {name for name, _ in sources}
    for err in outcome.errors:
        assert isinstance(err, LocatedError)
        assert err.location.file in names
        assert err.location.line >= 1
        assert err.location.column >= 1
        assert err.message


KEYS = [
    "apiVersion", "kind", "metadata", "name", "spec", "trigger", "signal", "metric", "match", "minScore",
    "for", "maxGap", "target", "namespace", "actions", "verify", "within", "quiet", "clears", "onFailure",
    "guardrails", "cooldown", "maxPerHour", "rollback", "scale", "by", "replicas", "notify", "message",
    "webhook", "restart", "retrain", "delete_pod", "pod", "when", "rolloutWithin", "priority", "approval",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        ["aiops/v1", "Playbook", "anomaly", "2m", "{{ labels.x }}", "{{ x | y }}", "../x", "web"]
    ),
    st.text(max_size=20),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=5),
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_documents_load_or_give_located_errors(doc: Any) -> None:
    check_outcome([("r.yaml", yaml.safe_dump(doc, allow_unicode=True))])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_random_text_loads_or_gives_located_errors(text: str) -> None:
    check_outcome([("t.yaml", text)])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_playbooks_load_or_give_located_errors(data: st.DataObject) -> None:
    doc = yaml.safe_load(GOOD)
    for _ in range(data.draw(st.integers(1, 3))):
        node = doc
        while isinstance(node, dict | list) and node:
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            key = data.draw(st.sampled_from(keys))
            child = node[key]
            if not isinstance(child, dict | list) or data.draw(st.booleans()):
                node[key] = data.draw(documents)
                break
            node = child
    check_outcome([("m.yaml", yaml.safe_dump(doc))])


def test_a_without_signal_condition_compiles_and_names_its_errors() -> None:
    absent = (
        "    - rolloutWithin: 30m\n    - withoutSignal: {signal: threshold, metric: cpu_.*, within: 5m}\n"
    )
    (pb,) = load_sources([("pb.yaml", GOOD.replace("    - rolloutWithin: 30m\n", absent))])
    (a,) = pb.absences
    assert (a.index, a.kind, a.within) == (1, SignalKind.THRESHOLD, 300.0)
    cpu = SeriesKey.of("cpu_ratio", {"deployment": "web"})
    assert a.matches(Signal(SignalKind.THRESHOLD, cpu, 0.0, 0.95, 1.0, "threshold", {}))
    assert not a.matches(Signal(SignalKind.ANOMALY, cpu, 0.0, 0.95, 1.0, "ensemble", {}))
    both = "    - {rolloutWithin: 30m, withoutSignal: {signal: threshold, metric: cpu, within: 5m}}\n"
    line, _, field, message = only(GOOD.replace("    - rolloutWithin: 30m\n", both))
    assert (line, field) == (14, "spec.when[0]")
    assert "a condition names one check: rolloutWithin, restartedWithin or withoutSignal" in message
    bad = "    - withoutSignal: {signal: rumour, metric: cpu, within: 0s}\n"
    fields = sorted(e.field for e in errors_of(GOOD.replace("    - rolloutWithin: 30m\n", bad)))
    assert fields == ["spec.when[0].withoutSignal.signal", "spec.when[0].withoutSignal.within"]
