"""The replay report: score table, timeline, plots, summary JSON and the self-contained HTML page."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from simulations.report import (
    INCIDENT_GAP,
    MAX_INCIDENT_PANELS,
    MIN_MARGIN,
    ReportFiles,
    dumps_json,
    fault_end,
    format_scores,
    format_timeline,
    incident_views,
    json_safe,
    plot_scenario,
    wall_time,
    write_report,
)
from simulations.result import (
    AGENT,
    ERROR_RATIO,
    HPA,
    NO_AGENT,
    P99,
    REQUESTS,
    ActionRecord,
    Event,
    Expectation,
    FaultWindow,
    PolicyRun,
    ScenarioResult,
    Score,
)

START = 1_700_000_000.0
STEP = 15.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert(1)</script>"


def make_run(policy: str, services: list[str], steps: int, score: Score | None, seed: int) -> PolicyRun:
    rng = np.random.default_rng(seed)
    times = START + STEP * np.arange(steps, dtype=np.float64)
    phase = np.linspace(0.0, 2 * np.pi, steps)
    metrics: dict[str, dict[str, np.ndarray]] = {}
    replicas: dict[str, np.ndarray] = {}
    breach: dict[str, np.ndarray] = {}
    for i, service in enumerate(services):
        requests = 100 + 50 * np.sin(phase + i) + rng.normal(0, 3, steps)
        errors = np.clip(rng.normal(0.002, 0.001, steps), 0, None)
        errors[steps // 3 : steps // 2] += 0.05
        p99 = 0.2 + rng.normal(0, 0.01, steps)
        requests[10:20] = np.nan  # a scrape gap
        metrics[service] = {REQUESTS: requests, ERROR_RATIO: errors, P99: p99}
        replicas[service] = np.where(np.arange(steps) > steps // 2, 4.0, 2.0)
        breach[service] = errors > 0.01
    run = PolicyRun(policy, times, metrics, replicas, breach, score=score)
    if policy == AGENT:
        first = services[0]
        run.anomaly_score = {first: np.clip(rng.random(steps), 0, 1)}
        upper = np.full(steps, np.nan)
        upper[steps // 2 :] = 180.0
        mean = np.full(steps, np.nan)
        mean[steps // 2 :] = 140.0
        run.forecast_upper = {first: upper}
        run.forecast_mean = {first: mean}
        run.forecast_upper[services[1]] = np.full(steps, np.nan)  # NaN only: no band
        run.events = [
            Event(START + 600, "action", first, "scale to 4"),
            Event(START + 120, "signal", first, "error ratio anomalous"),
            Event(START + 120, "incident", first, "incident opened"),
            Event(START + 900, "verification", first, "error ratio back within SLO"),
            Event(START + 30, "slo", services[1], f"breach: {EVIL}"),
        ]
        run.actions = [
            ActionRecord(START + 600, first, "scale", "executed", "2 -> 4"),
            ActionRecord(START + 1200, services[1], "restart", "dry_run", necessary=False),
        ]
    return run


def make_result(
    name: str = "error-burst", services: list[str] | None = None, steps: int = 240
) -> ScenarioResult:
    services = services or ["checkout", EVIL]
    scores = {
        AGENT: Score(90.0, 900.0, 12.5, 0.1234, 1, 2, 10.256),
        NO_AGENT: Score(None, None, 45.0, 0.8, 0, 0, 8.0),
        HPA: Score(None, 3600.0, 30.25, 0.5, 0, 0, 14.5),
    }
    runs = {
        policy: make_run(policy, services, steps, scores[policy], seed)
        for seed, policy in enumerate((NO_AGENT, HPA, AGENT))  # not in report order
    }
    return ScenarioResult(
        name=name,
        description=f"An error burst on checkout ({EVIL})",
        seed=7,
        start=START,
        duration=steps * STEP,
        step=STEP,
        services=services,
        faults=[FaultWindow(services[0], "error_burst", START + 60, START + 1500, "5% errors")],
        runs=runs,
        expectations=[
            Expectation("detects the burst within 5 minutes", True),
            Expectation("no unnecessary actions", False, "1 unnecessary restart"),
        ],
        slo={"p99_seconds": 0.5, "error_ratio": 0.01},
    )


def table_row(table: str, scenario: str, policy: str) -> list[str]:
    rows = [line.split() for line in table.splitlines() if line.split()[:2] == [scenario, policy]]
    assert len(rows) == 1, table
    return rows[0][2:]


def test_score_table_has_every_policy_with_its_numbers() -> None:
    table = format_scores([make_result()])
    assert table_row(table, "error-burst", AGENT) == ["1.5", "15.0", "12.5", "12.3", "2", "1", "10.26"]
    assert table_row(table, "error-burst", NO_AGENT) == ["-", "-", "45.0", "80.0", "0", "0", "8.00"]
    assert table_row(table, "error-burst", HPA) == ["-", "60.0", "30.2", "50.0", "0", "0", "14.50"]
    lines = table.splitlines()
    policies = [line.split()[1] for line in lines if line.startswith("error-burst")]
    assert policies == [AGENT, NO_AGENT, HPA]
    assert "expectations: 1/2 met" in table
    assert "no unnecessary actions" in table
    assert "detects the burst" not in table  # met expectations are not listed
    # columns aligned: the last column is right-aligned, so every row ends where the header does
    rows = [line for line in lines if line.startswith(("scenario", "error-burst"))]
    assert len(rows) == 4
    assert {len(row) for row in rows} == {len(lines[0])}, table
    assert len({row.index(row.split()[1]) for row in rows}) == 1  # the policy column starts once


def test_score_table_aligns_across_scenarios_and_tolerates_missing_scores() -> None:
    long = make_result(name="a-much-longer-scenario-name")
    long.runs[AGENT].score = None
    table = format_scores([make_result(), long])
    assert table_row(table, "a-much-longer-scenario-name", AGENT) == ["-"] * 7
    policy_columns = {
        line.index(AGENT) for line in table.splitlines() if line.split() and line.split()[1:2] == [AGENT]
    }
    assert len(policy_columns) == 1


def test_timeline_is_in_order_with_utc_wall_clock_and_relative_times() -> None:
    text = format_timeline(make_result())
    lines = text.splitlines()
    # START is 2023-11-14 22:13:20 UTC
    assert [line.split()[:3] for line in lines] == [
        ["2023-11-14", "22:13:50", "+00:00:30"],
        ["2023-11-14", "22:14:20", "+00:01:00"],
        ["2023-11-14", "22:15:20", "+00:02:00"],
        ["2023-11-14", "22:15:20", "+00:02:00"],
        ["2023-11-14", "22:23:20", "+00:10:00"],
        ["2023-11-14", "22:28:20", "+00:15:00"],
    ]
    assert lines[1].split()[3:5] == ["fault", "checkout"]
    assert "error_burst: 5% errors (until 22:38:20)" in lines[1]
    # stable: the signal came before the incident in the run's list
    assert "error ratio anomalous" in lines[2]
    assert "incident opened" in lines[3]
    # aligned kind and service columns
    assert len({line.index("checkout") for line in lines if "checkout" in line}) == 1


def test_timeline_keeps_the_order_things_happened_at_one_timestamp() -> None:
    result = make_result()
    at = START + 300
    happened = [
        Event(at, "signal", "checkout", "anomaly error ratio"),
        Event(at, "incident", "checkout", "rollback: pending", incident="inc-1", state="pending"),
        Event(at, "incident", "checkout", "rollback: firing", incident="inc-1", state="firing"),
        Event(at, "incident", "checkout", "rollback: acting", incident="inc-1", state="acting"),
        Event(at, "action", "checkout", "rollback executed", incident="inc-1"),
    ]
    result.runs[AGENT].events = happened
    kinds = [line.split()[3] for line in format_timeline(result).splitlines()[1:]]
    texts = [line.split(None, 5)[5] for line in format_timeline(result).splitlines()[1:]]
    assert kinds == ["signal", "incident", "incident", "incident", "action"]
    assert texts == [e.text for e in happened]  # not alphabetical: acting, executed, firing, pending


def test_timeline_truncates_with_a_count() -> None:
    result = make_result()
    lines = format_timeline(result, limit=4).splitlines()
    assert len(lines) == 5
    assert lines[-1] == "... 2 more"
    assert format_timeline(result, limit=None).count("\n") == 5
    assert "... " not in format_timeline(result, limit=6)
    assert format_timeline(result, policy=HPA).splitlines()[0].split()[2:4] == ["+00:01:00", "fault"]


@pytest.fixture(scope="module")
def reports(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[ScenarioResult], ReportFiles, ReportFiles]:
    results = [make_result(), make_result(name="second <one>", services=["a", "b", "c", "d", "e"])]
    first = write_report(results, tmp_path_factory.mktemp("one") / "report")
    second = write_report(results, tmp_path_factory.mktemp("two"))
    return results, first, second


def test_write_report_writes_pngs(reports: tuple[list[ScenarioResult], ReportFiles, ReportFiles]) -> None:
    _, files, _ = reports
    assert [p.name for p in files.plots] == ["error-burst.png", "second_one.png"]
    for plot in files.plots:
        data = plot.read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) > 10_000
        assert b"Software" not in data  # no matplotlib version in the metadata


def test_summary_json_is_stable_and_equals_the_summaries(
    reports: tuple[list[ScenarioResult], ReportFiles, ReportFiles],
) -> None:
    results, first, second = reports
    text = first.summary.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert json.loads(text) == {"scenarios": [r.summary() for r in results], "passed": False}
    assert first.summary.read_bytes() == second.summary.read_bytes()
    for one, two, result in zip(first.summaries, second.summaries, results, strict=True):
        assert json.loads(one.read_text(encoding="utf-8")) == result.summary()
        assert one.read_bytes() == two.read_bytes()
    # the same result rebuilt from scratch gives the same bytes
    assert dumps_json(make_result().summary()) == first.summaries[0].read_text(encoding="utf-8")


def test_index_html_is_self_contained_and_escaped(
    reports: tuple[list[ScenarioResult], ReportFiles, ReportFiles],
) -> None:
    _, files, _ = reports
    page = files.index.read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.IGNORECASE)
    assert "http://" not in page
    assert "https://" not in page
    assert page.count('src="data:image/png;base64,') == len(files.plots) + len(files.incidents) == 4
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "second &lt;one&gt;" in page
    assert "<details>" in page
    assert "\u2713" in page
    assert "\u2717" in page
    assert "<td>agent</td>" in page


def test_json_safe_turns_nan_and_inf_into_none() -> None:
    value = {"a": math.nan, "b": [math.inf, np.float64(1.5), np.int64(3)], "c": (np.bool_(True),)}
    assert json_safe(value) == {"a": None, "b": [None, 1.5, 3], "c": [True]}
    assert dumps_json({"b": 1, "a": -math.inf}) == '{\n  "a": null,\n  "b": 1\n}\n'


def test_plot_survives_empty_and_partial_results(tmp_path: Path) -> None:
    empty = ScenarioResult(
        name="empty",
        description="",
        seed=0,
        start=START,
        duration=0.0,
        step=STEP,
        services=[],
        faults=[],
        runs={},
    )
    assert plot_scenario(empty, tmp_path / "empty.png").read_bytes().startswith(PNG_SIGNATURE)

    steps = 50
    times = START + STEP * np.arange(steps, dtype=np.float64)
    nan = np.full(steps, np.nan)
    bare = PolicyRun(AGENT, times, {"web": {REQUESTS: nan}, "db": {}}, {}, {"web": np.zeros(steps, bool)})
    bare.anomaly_score = {"web": nan}
    bare.forecast_upper = {"web": nan}
    partial = ScenarioResult(
        name="partial",
        description="services without metrics",
        seed=1,
        start=START,
        duration=steps * STEP,
        step=STEP,
        services=["web", "db"],
        faults=[FaultWindow("web", "crash", START + 100, None, "crash loop")],
        runs={AGENT: bare, NO_AGENT: PolicyRun(NO_AGENT, times[:0], {}, {}, {})},
    )
    assert plot_scenario(partial, tmp_path / "partial.png").read_bytes().startswith(PNG_SIGNATURE)
    # texts with unbalanced "$" must not be taken for mathtext
    dollars = make_result(name="cost", services=["$web", "b$\\frac$d"])
    dollars.description = "costs $\\frac$ and $"
    dollars.runs[AGENT].actions.append(ActionRecord(START + 60, "$web", "scale $\\frac$ up", "executed"))
    assert plot_scenario(dollars, tmp_path / "cost.png").read_bytes().startswith(PNG_SIGNATURE)
    files = write_report([empty, partial], tmp_path / "report")
    assert json.loads(files.summary.read_text(encoding="utf-8"))["passed"] is True
    assert format_scores([empty, partial]).count("expectations: 0/0 met") == 2
    assert format_timeline(empty) == "(no events)"


# ------------------------------------------------------------------------------------- incidents


def with_events(events: list[Event], actions: list[ActionRecord] | None = None) -> ScenarioResult:
    """make_result() whose agent run has exactly these events and actions, and one rollout fault."""
    result = make_result()
    result.faults = [FaultWindow("checkout", "rollout", START + 600, None, "rollout v2")]
    run = result.runs[AGENT]
    run.events = events
    run.actions = actions or []
    run.mitigated = [START + 1500]
    return result


def ev(at: float, kind: str, incident: str, state: str = "", guardrail: str = "") -> Event:
    return Event(START + at, kind, "checkout", f"{kind} {state}", incident, "pb", guardrail, state)


def test_an_incident_groups_the_agents_incidents_with_the_fault_they_answer() -> None:
    result = with_events(
        [
            ev(630, "incident", "a", "pending"),
            ev(660, "held", "a", guardrail="cooldown"),
            ev(700, "incident", "a", "expired"),
            ev(800, "incident", "b", "pending"),
            ev(800, "incident", "b", "acting"),
            ev(800, "action", "b"),
            ev(1200, "incident", "b", "resolved"),
        ],
        [ActionRecord(START + 800, "checkout", "rollback", "executed", incident="b")],
    )
    (view,) = incident_views(result)
    assert view.service == "checkout"
    assert view.incidents == ("a", "b")
    assert view.faults == (0,)
    assert view.onset == START + 600  # the fault's start, before the first signal
    assert view.resolved == START + 1500  # the fault was removed after the incident resolved
    # margins: a quarter of the 900 s span, at least MIN_MARGIN, within the run
    assert view.window(result) == (START, START + 1500 + MIN_MARGIN)


def test_no_op_incidents_are_not_incidents_and_an_unanswered_fault_is_one() -> None:
    result = with_events(
        [
            ev(30, "incident", "noop", "pending"),
            ev(30, "action", "noop"),
            ev(30, "incident", "noop", "resolved"),
        ],
        [ActionRecord(START + 30, "checkout", "scale", "noop", incident="noop")],
    )
    result.runs[AGENT].mitigated = [None]
    (view,) = incident_views(result)
    assert (view.incidents, view.faults, view.onset, view.resolved) == ((), (0,), START + 600, None)
    assert view.window(result)[1] == result.start + result.duration  # open: to the end of the run


def test_incidents_far_apart_are_separate_and_only_the_first_takes_the_fault() -> None:
    gap = INCIDENT_GAP + 60
    result = with_events(
        [
            ev(700, "incident", "one", "escalated"),
            ev(700 + gap, "incident", "two", "failed"),
        ]
    )
    first, second = incident_views(result)
    assert (first.incidents, first.faults) == (("one",), (0,))
    assert (second.incidents, second.faults, second.onset) == (("two",), (), START + 700 + gap)


def test_zoomed_panels_are_bounded_and_the_rest_are_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from simulations import report

    assert MAX_INCIDENT_PANELS == 12
    monkeypatch.setattr(report, "MAX_INCIDENT_PANELS", 2)  # the same rule, fewer plots to draw
    many = [ev(i * (INCIDENT_GAP + 60), "incident", f"i{i}", "failed") for i in range(5)]
    result = with_events(many)
    result.duration = 6 * (INCIDENT_GAP + 60)
    assert len(incident_views(result)) == 5
    files = write_report([result], tmp_path)
    assert len(files.incidents) == 2
    page = files.index.read_text(encoding="utf-8")
    assert page.count('<article class="incident"') == 5
    assert "3 more incidents are listed without a zoomed panel" in page
    assert page.count('class="zoom"') == 2


def test_the_fault_band_ends_where_the_run_removed_the_fault() -> None:
    result = with_events([])
    assert fault_end(result, 0) == START + 1500
    assert fault_end(result, 0, NO_AGENT) is None  # that run never removed it
    assert "(until 22:38:20)" in format_timeline(result)
    assert "(not removed)" in format_timeline(result, NO_AGENT)
    assert wall_time(START) == "2023-11-14 22:13:20"


def test_the_incident_table_counts_from_the_onset_and_names_a_fault_still_there(tmp_path: Path) -> None:
    gap = INCIDENT_GAP + 60
    result = with_events(
        [
            Event(START + 300, "signal", "checkout", "forecast, before the fault"),  # in the margin
            Event(START + 300, "action", "checkout", "scale noop", "other", "pb"),  # not this incident's
            Event(START + 640, "signal", "checkout", "anomaly error ratio"),
            ev(700, "incident", "one", "acting"),
            ev(700, "action", "one"),
            ev(760, "incident", "one", "resolved"),
            ev(760 + gap, "incident", "two", "escalated"),
        ],
        [ActionRecord(START + 700, "checkout", "rollback", "executed", incident="one")],
    )
    result.runs[AGENT].mitigated = [None]  # the bad version stays
    page = write_report([result], tmp_path).index.read_text(encoding="utf-8")
    rows = re.findall(r'<tr><td><a href="#error-burst-incident-\d">\d</a></td>.*?</tr>', page)
    assert len(rows) == 2
    cells = re.findall(r"<td(?: class=\"time\")?>(.*?)</td>", rows[0])
    # onset at the fault (22:23:20), first signal and action after it, not the margin's
    assert cells[2:5] == ["2023-11-14 22:23:20", "22:24:00", "22:25:00"]
    assert "#2 checkout: rollout: rollout v2 (still there, since 22:23:20)" in page


def test_model_accuracy_and_memory_near_its_limit_get_a_panel() -> None:
    from simulations.report import _resource_panel
    from simulations.result import ACCURACY, MEMORY

    result = make_result()
    run = result.runs[AGENT]
    steps = run.times.size
    assert _resource_panel(result, "checkout") is None  # neither metric: no panel
    run.metrics["checkout"][ACCURACY] = np.full(steps, 0.9)
    run.metrics["checkout"][MEMORY] = np.full(steps, 0.3)  # far from its limit: not shown
    panel = _resource_panel(result, "checkout")
    assert panel is not None
    assert panel[0] == "model accuracy (agent solid, none dashed)"
    run.metrics["checkout"][MEMORY][-10:] = 0.7
    panel = _resource_panel(result, "checkout")
    assert panel is not None
    assert panel[0] == "model accuracy and memory against its limit (agent solid, none dashed)"


def test_a_forecast_that_blew_up_does_not_flatten_the_request_rate() -> None:
    from matplotlib.figure import Figure

    from simulations.report import _keep_in_view

    requests = np.array([100.0, 120.0, np.nan, 80.0])
    ax = Figure().subplots()
    ax.plot(range(4), requests)
    ax.plot(range(4), [1e33] * 4)
    _keep_in_view(ax, requests, [np.full(4, 1e33), None])
    assert ax.get_ylim() == (0.0, 180.0)
    assert any("forecast up to 1e+33 cut off" in t.get_text() for t in ax.texts)
    calm = Figure().subplots()
    calm.plot(range(4), [0, 500, 0, 0])
    _keep_in_view(calm, requests, [np.full(4, 200.0)])  # within 3x of the requests: left alone
    assert calm.get_ylim()[1] > 400
