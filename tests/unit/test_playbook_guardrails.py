"""Guardrails: the stricter of playbook and agent, and each check on given times."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.playbook.guardrails import (
    HOUR,
    ActionLedger,
    GuardrailDefaults,
    PlaybookGuardrails,
    check_action,
    check_scale,
    effective,
    guardrail_values,
)
from agent.playbook.requests import Approval
from remediations.state import (
    ACTIONS,
    AGENT_ACTIONS,
    MAX_ACTIONS,
    RecordedAction,
    dump_json,
    recorded_actions,
    with_action,
    without_action,
)
from remediations.types import ActionClass, Target, key_digest

WEB = Target("Deployment", "shop", "web")
API = Target("Deployment", "shop", "api")


def pb(**kw: object) -> PlaybookGuardrails:
    return PlaybookGuardrails.model_validate(kw)


def test_a_playbook_can_only_tighten_the_defaults() -> None:
    defaults = GuardrailDefaults(
        cooldown=600.0,
        max_per_hour=4,
        max_per_hour_total=10,
        min_replicas=2,
        max_replicas=50,
        max_step=10,
        namespaces=["shop", "ml"],
    )
    loose = effective(
        pb(
            cooldown="1m",
            maxPerHour=10,
            minReplicas=1,
            maxReplicas=100,
            maxStep=20,
            namespaces=["shop", "kube-system"],
        ),
        defaults,
    )
    assert loose.cooldown == 600.0
    assert loose.max_per_hour == 4
    assert (loose.min_replicas, loose.max_replicas, loose.max_step) == (2, 50, 10)
    assert loose.namespaces == frozenset({"shop"})
    tight = effective(
        pb(cooldown="1h", maxPerHour=1, minReplicas=3, maxReplicas=5, maxStep=1, dryRun=True), defaults
    )
    assert tight.cooldown == 3600.0
    assert tight.max_per_hour == 1
    assert (tight.min_replicas, tight.max_replicas, tight.max_step) == (3, 5, 1)
    assert tight.namespaces == frozenset({"shop", "ml"})
    assert tight.dry_run


def test_dry_run_and_approval_from_either_side_win() -> None:
    assert effective(pb(), GuardrailDefaults(dry_run=True)).dry_run
    assert effective(pb(approval="required"), GuardrailDefaults()).approval is Approval.REQUIRED
    assert effective(pb(), GuardrailDefaults(approval=Approval.REQUIRED)).approval is Approval.REQUIRED
    assert effective(pb(), GuardrailDefaults()).approval is Approval.NONE


def test_crossing_bounds_after_merging_leave_no_room() -> None:
    g = effective(pb(maxReplicas=3), GuardrailDefaults(min_replicas=5))
    assert (g.min_replicas, g.max_replicas) == (5, 5)


def test_invalid_bounds_are_refused() -> None:
    with pytest.raises(ValidationError, match="maxReplicas 2 is below minReplicas 3"):
        pb(minReplicas=3, maxReplicas=2)
    with pytest.raises(ValidationError, match="max_replicas 1 is below min_replicas 2"):
        GuardrailDefaults(min_replicas=2, max_replicas=1)


def test_cooldown_holds_until_it_ends() -> None:
    g = effective(pb(cooldown="30m"), GuardrailDefaults())
    ledger = ActionLedger()
    ledger.record_remediation("p", WEB, 1000.0)
    held = check_action(g, ledger, "p", WEB, 1, 1000.0 + 600)
    assert (held.allowed, held.guardrail, held.until) == (False, "cooldown", 1000.0 + 1800)
    assert "last remediation 10m ago, cooldown 30m" in held.reason
    assert check_action(g, ledger, "p", WEB, 1, 1000.0 + 1800).allowed
    assert check_action(g, ledger, "other", WEB, 1, 1000.0 + 600).allowed  # per playbook
    assert check_action(g, ledger, "p", API, 1, 1000.0 + 600).allowed  # and per target


def test_rate_per_target_counts_the_last_hour() -> None:
    g = effective(pb(maxPerHour=2), GuardrailDefaults(cooldown=0))
    ledger = ActionLedger()
    ledger.record_action("p", WEB, 100.0)
    ledger.record_action("q", WEB, 200.0)
    ledger.record_action("p", API, 300.0)
    held = check_action(g, ledger, "p", WEB, 1, 400.0)
    assert (held.guardrail, held.until) == ("maxPerHour", 100.0 + HOUR)
    assert check_action(g, ledger, "p", WEB, 1, 100.0 + HOUR).allowed
    assert check_action(g, ledger, "p", API, 1, 400.0).allowed


def test_planned_actions_count_against_the_rate() -> None:
    g = effective(pb(maxPerHour=2), GuardrailDefaults(cooldown=0))
    ledger = ActionLedger()
    ledger.record_action("p", WEB, 100.0)
    held = check_action(g, ledger, "p", WEB, 2, 200.0)
    assert (held.guardrail, held.until) == ("maxPerHour", 100.0 + HOUR)
    never = check_action(g, ActionLedger(), "p", WEB, 3, 200.0)
    assert (never.guardrail, never.until) == ("maxPerHour", None)
    assert "3 actions exceed the limit of 2" in never.reason


def test_rate_per_playbook_and_for_the_whole_agent() -> None:
    ledger = ActionLedger()
    for i, t in enumerate((WEB, API, WEB)):
        ledger.record_action("p", t, 10.0 * i)
    by_playbook = effective(pb(maxPerHourTotal=3), GuardrailDefaults(cooldown=0, max_per_hour=None))
    assert check_action(by_playbook, ledger, "p", API, 1, 100.0).guardrail == "maxPerHourTotal"
    assert check_action(by_playbook, ledger, "q", API, 1, 100.0).allowed
    agent = effective(pb(), GuardrailDefaults(cooldown=0, max_per_hour=None, max_per_hour_total=3))
    assert check_action(agent, ledger, "q", API, 1, 100.0).guardrail == "agent.max_per_hour_total"


def test_namespace_allow_list() -> None:
    g = effective(pb(namespaces=["shop"]), GuardrailDefaults())
    held = check_action(g, ActionLedger(), "p", Target("Deployment", "kube-system", "dns"), 1, 0.0)
    assert (held.allowed, held.guardrail, held.until) == (False, "namespaces", None)
    assert check_action(g, ActionLedger(), "p", WEB, 1, 0.0).allowed


def test_ledger_forgets_what_is_too_old_to_matter() -> None:
    ledger = ActionLedger()
    ledger.record_action("p", WEB, 0.0)
    ledger.record_remediation("p", WEB, 0.0)
    ledger.prune(HOUR + 1, keep=7200.0)
    assert ledger.actions_since(-1.0) == []
    assert ledger.last_remediation("p", WEB) == 0.0
    ledger.prune(7201.0, keep=7200.0)
    assert ledger.last_remediation("p", WEB) is None


@pytest.mark.parametrize(
    ("current", "desired", "allowed", "replicas", "limited"),
    [
        (3, 5, True, 5, ()),
        (3, 50, True, 7, ("maxReplicas", "maxStep")),  # to 10, then at most 4 at a time
        (8, 50, True, 10, ("maxReplicas",)),
        (3, 0, True, 2, ("minReplicas",)),
        (2, 0, False, 2, ("minReplicas",)),  # nothing left to change
        (10, 12, False, 10, ("maxReplicas",)),
        (5, 5, False, 5, ()),
    ],
)
def test_scale_is_clamped_to_bounds_and_step(
    current: int, desired: int, allowed: bool, replicas: int, limited: tuple[str, ...]
) -> None:
    g = effective(pb(minReplicas=2, maxReplicas=10, maxStep=4), GuardrailDefaults())
    v = check_scale(g, current, desired)
    assert (v.allowed, v.replicas, v.limited_by) == (allowed, replicas, limited)
    assert v.reason


WEB = Target("Deployment", "shop", "web")


def recorded(
    t: float, key: str, *, playbook: str = "pb", cls: str = "corrective", target: str = ""
) -> RecordedAction:
    return RecordedAction(t, playbook, "restart", cls, "signals", key, target)


def test_recalled_actions_hold_the_cooldown_and_the_budget_and_count_once() -> None:
    g = effective(PlaybookGuardrails(cooldown=1800.0, maxPerHour=1), GuardrailDefaults())
    ledger = ActionLedger()
    now = 10_000.0
    assert ledger.recall([recorded(now - 60, "k1")], now, WEB) == 1
    held = check_action(g, ledger, "pb", WEB, 1, now)
    assert (held.guardrail, held.until) == ("cooldown", now - 60 + 1800)
    other = check_action(g, ledger, "other", WEB, 1, now)  # another playbook: no cooldown, the budget
    assert (other.guardrail, other.until) == ("maxPerHour", now - 60 + HOUR)
    # the same action recalled again, or recorded by this process too, counts once
    assert ledger.recall([recorded(now - 60, "k1")], now, WEB) == 0
    ledger.record_action("pb", WEB, now, ActionClass.CORRECTIVE, "restart", key="never-digested")
    assert len(ledger.actions_since(now - HOUR, target=WEB)) == 2
    ledger.record_action("pb", WEB, now, ActionClass.CORRECTIVE, "restart", key="never-digested")
    assert len(ledger.actions_since(now - HOUR, target=WEB)) == 2
    assert ledger.last_fix(WEB, "restart") == now


def test_recall_ignores_what_it_cannot_believe() -> None:
    ledger = ActionLedger()
    now = 10_000.0
    entries = [
        recorded(now + 3600, "future"),  # another clock far ahead: not believed
        recorded(now - 10, "bad-class", cls="teleport"),
        recorded(now - 10, "bad-target", target="Deployment/../x"),
        recorded(now - 10, "agent-wide", target="Deployment/shop/api"),
    ]
    assert ledger.recall(entries, now) == 1
    assert ledger.actions_since(now - HOUR, target=Target("Deployment", "shop", "api")) == [now - 10]


def test_a_targets_own_record_spends_only_that_targets_budgets() -> None:
    # whoever may edit a target may write its aiops.dev/actions: entries there hold that target's
    # cooldown and maxPerHour, never the budgets of the playbook or the agent across targets
    g = effective(
        PlaybookGuardrails(cooldown=0.0, maxPerHour=2, maxPerHourTotal=5),
        GuardrailDefaults(cooldown=0.0, max_per_hour_total=5),
    )
    ledger = ActionLedger()
    now = 10_000.0
    other = Target("Deployment", "tenant-b", "api")
    forged = [recorded(now - i, f"forged-{i}") for i in range(MAX_ACTIONS)]
    assert ledger.recall(forged, now, WEB) == MAX_ACTIONS
    assert check_action(g, ledger, "pb", other, 1, now).allowed
    assert check_action(g, ledger, "pb", WEB, 1, now).guardrail == "maxPerHour"

    # the agent-wide record (the agent's namespace) says an action of WEB counts for all
    wide = [recorded(now - i, f"forged-{i}", target=str(WEB)) for i in range(5)]
    assert ledger.recall(wide, now) == 0, "counted once, by its key"
    assert len(ledger.actions_since(now - HOUR)) == 5
    assert len(ledger.actions_since(now - HOUR, target=WEB)) == MAX_ACTIONS
    assert check_action(g, ledger, "pb", other, 1, now).guardrail == "maxPerHourTotal"
    # and so does what this process ran itself, though recalled from the target first
    ledger = ActionLedger()
    ledger.recall([recorded(now - 1, key_digest("k-run"))], now, WEB)
    ledger.record_action("pb", WEB, now, ActionClass.CORRECTIVE, "restart", key="k-run")
    assert ledger.actions_since(now - HOUR) == [now]
    ledger.prune(now + HOUR, keep=60.0)
    assert ledger.actions_since(now) == []


def test_the_record_on_an_object_is_bounded_and_never_trusted_blindly() -> None:
    obj: dict[str, object] = {"metadata": {"annotations": {}}}
    for i in range(MAX_ACTIONS + 10):
        value = with_action(obj, recorded(float(i), f"k{i}"))
        obj = {"metadata": {"annotations": {ACTIONS: value}}}
    kept = recorded_actions(obj)
    assert [r.key for r in kept] == [f"k{i}" for i in range(10, MAX_ACTIONS + 10)]
    assert without_action(obj, "k10") is not None
    assert without_action(obj, "absent") is None
    for junk in ("{not json", '{"t": 1}', "[1, null, {}]", '[{"t": "NaN"}]', "[" * 100_000):
        assert recorded_actions({"metadata": {"annotations": {ACTIONS: junk}}}) == []
    long_name = [{"t": 1.0, "p": "p" * 300, "a": "x", "c": "corrective", "s": "signals", "k": "k"}]
    assert recorded_actions({"metadata": {"annotations": {ACTIONS: dump_json(long_name)}}}) == []
    # the agent-wide record drops what is older than an hour when it adds
    wide = {
        "metadata": {
            "annotations": {ACTIONS: with_action(obj, recorded(5000.0, "new"), AGENT_ACTIONS, 4000.0)}
        }
    }
    assert [r.key for r in recorded_actions(wide, AGENT_ACTIONS)] == ["new"]


def test_guardrail_values_say_what_each_check_saw() -> None:
    g = effective(pb(cooldown="30m", maxPerHour=2, namespaces=["shop"]), GuardrailDefaults())
    ledger = ActionLedger()
    ledger.record_remediation("p", WEB, 1000.0)
    ledger.record_action("p", WEB, 1000.0)
    values = {v["name"]: v for v in guardrail_values(g, ledger, "p", WEB, 1600.0)}
    assert values["namespaces"] == {"name": "namespaces", "value": ["shop"], "namespace": "shop", "ok": True}
    assert values["protected"]["ok"] is True
    assert values["cooldown"] == {
        "name": "cooldown",
        "limit": 1800.0,
        "remaining": 1200.0,
        "lastRemediation": 1000.0,
        "ok": False,
    }
    per_target = values["maxPerHour"]
    assert (per_target["used"], per_target["limit"], per_target["class"], per_target["source"]) == (
        1,
        2,
        "corrective",
        "signals",
    )
    assert per_target["ok"] is True
    assert (values["maxPerHourTotal"]["used"], values["maxPerHourTotal"]["limit"]) == (1, None)
    assert (values["agent.max_per_hour_total"]["used"], values["agent.max_per_hour_total"]["limit"]) == (
        1,
        30,
    )
    assert values["dryRun"]["value"] is False
    assert values["approval"]["value"] == "none"
    # the values agree with the verdict: the cooldown holds
    assert check_action(g, ledger, "p", WEB, 1, 1600.0).guardrail == "cooldown"
    later = {v["name"]: v for v in guardrail_values(g, ledger, "p", WEB, 1000.0 + 1800)}
    assert later["cooldown"]["remaining"] == 0.0
    assert later["cooldown"]["ok"] is True
    assert check_action(g, ledger, "p", WEB, 1, 1000.0 + 1800).allowed
