"""The replay report as a person sees it: loaded in headless Chromium, incidents, panels and records render.

The page is written by :func:`simulations.report.write_report` from a result whose agent run has
two incidents on ``checkout`` (an answered rollout fault, held once by the cooldown, then rolled
back) and a decision record for one of them; the browser must decode every embedded plot, show
one zoomed panel per incident above the whole-run view, resolve every incident link, and open
each incident's details with one click.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from simulations.report import write_report
from simulations.result import AGENT, ActionRecord, Event, FaultWindow, ScenarioResult
from tests.servers.browser import Browser
from tests.unit.test_replay_report import START, make_result

pytestmark = pytest.mark.integration

RECORD = {"incident": "inc-rollback", "playbook": "rollback-on-error-spike", "guardrails": {"cooldown": "0s"}}


def incident_result() -> ScenarioResult:
    result = make_result(name="bad-rollout")
    result.faults = [FaultWindow("checkout", "rollout", START + 600, None, "rollout v2, +12% errors")]
    run = result.runs[AGENT]
    run.mitigated = [START + 1500]
    pending = Event(START + 630, "incident", "checkout", "rollback-on-error-spike: pending (first signal)")
    run.events = [
        Event(START + 630, "signal", "checkout", "anomaly http_requests_error_ratio value 0.12 score 1.000"),
        replace(pending, incident="inc-held", playbook="scale", state="pending"),
        Event(
            START + 700,
            "held",
            "checkout",
            "scale: held by cooldown: 4m left",
            "inc-held",
            "scale",
            "cooldown",
        ),
        Event(START + 750, "incident", "checkout", "scale: expired", "inc-held", "scale", state="expired"),
        replace(pending, incident="inc-rollback", playbook="rollback", state="pending"),
        Event(
            START + 750,
            "incident",
            "checkout",
            "rollback: firing",
            "inc-rollback",
            "rollback",
            state="firing",
        ),
        Event(
            START + 750,
            "incident",
            "checkout",
            "rollback: acting",
            "inc-rollback",
            "rollback",
            state="acting",
        ),
        Event(
            START + 750, "action", "checkout", "rollback executed: to revision 1", "inc-rollback", "rollback"
        ),
        Event(
            START + 1800,
            "incident",
            "checkout",
            "rollback: resolved",
            "inc-rollback",
            "rollback",
            state="resolved",
        ),
    ]
    run.actions = [
        ActionRecord(
            START + 750, "checkout", "rollback", "executed", "to revision 1", incident="inc-rollback"
        )
    ]
    run.incidents = [RECORD]
    return result


PAGE_FACTS = """
(() => {
  const images = [...document.images].map(i => ({
    cls: i.className, decoded: i.complete && i.naturalWidth > 0, width: i.getBoundingClientRect().width,
    top: i.getBoundingClientRect().top + window.scrollY }));
  const links = [...document.querySelectorAll('table.incidents a')].map(a => a.getAttribute('href'));
  const details = [...document.querySelectorAll('article.incident details.record')];
  const before = details.map(d => d.open);
  details.forEach(d => d.querySelector('summary').click());
  const opened = details.map(d => {
    const body = d.querySelector('pre, table');
    return { open: d.open, height: body.getBoundingClientRect().height, text: body.innerText,
             incident: d.dataset.incident, article: d.closest('article').id };
  });
  return JSON.stringify({
    images, links, before, opened,
    targets: links.map(h => document.getElementById(h.slice(1)) !== null),
    articles: [...document.querySelectorAll('article.incident')].map(a => a.id),
  });
})()
"""


@pytest.fixture(scope="module")
def page(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    files = write_report([incident_result()], tmp_path_factory.mktemp("report"))
    browser.open(files.index.resolve().as_uri())
    facts: dict[str, object] = json.loads(browser.evaluate(PAGE_FACTS))
    return facts


def test_every_plot_is_decoded_and_incident_panels_come_before_the_whole_run(page: dict[str, object]) -> None:
    images = page["images"]
    assert isinstance(images, list)
    assert [i["cls"] for i in images] == ["zoom", "overview"]
    assert all(i["decoded"] and i["width"] > 300 for i in images), images
    assert images[0]["top"] < images[1]["top"]


def test_each_incident_is_one_click_from_the_table(page: dict[str, object]) -> None:
    assert page["articles"] == ["bad-rollout-incident-1"]
    assert page["links"] == ["#bad-rollout-incident-1"]
    assert page["targets"] == [True]


def test_the_decision_record_opens_on_click(page: dict[str, object]) -> None:
    opened = page["opened"]
    assert page["before"] == [False]  # closed until clicked
    assert isinstance(opened, list)
    assert len(opened) == 1
    record = opened[0]
    assert record["open"] is True
    assert record["height"] > 20
    assert record["incident"] == "inc-rollback"
    assert json.loads(record["text"]) == RECORD


def test_without_a_record_the_incident_shows_its_events_in_order(browser: Browser, tmp_path: Path) -> None:
    result = incident_result()
    result.runs[AGENT].incidents = []
    files = write_report([result], tmp_path)
    browser.open(files.index.resolve().as_uri())
    facts = json.loads(browser.evaluate(PAGE_FACTS))
    (shown,) = facts["opened"]
    assert shown["open"] is True
    rows = [line.split("\t") for line in shown["text"].splitlines()[1:]]
    kinds = [row[1] for row in rows]
    # as they happened: at one time the signal, then the incidents it opened; the held one
    # before its expiry, the rollback's firing, acting and action in that order
    assert kinds == [
        "fault",
        "signal",
        "incident",
        "incident",
        "held",
        "incident",
        "incident",
        "incident",
        "action",
        "incident",
    ], rows
    assert "held by cooldown" in rows[4][2]
