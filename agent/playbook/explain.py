"""A playbook in plain words: when it fires, what it does, what holds it back."""

from __future__ import annotations

from agent.playbook.guardrails import (
    GuardrailDefaults,
    describe,
    effective,
    format_seconds,
    namespaces_outside,
)
from agent.playbook.loader import LoadedPlaybook


def _quote_or_pattern(pattern: str) -> str:
    if pattern == ".+":
        return "is set (any value)"
    if pattern == ".*":
        return "is anything, even missing"
    plain = all(c.isalnum() or c in "-_:" for c in pattern)
    return f'is "{pattern}"' if plain else f"matches /{pattern}/ (whole value)"


def explain(loaded: LoadedPlaybook, defaults: GuardrailDefaults | None = None) -> str:
    """Several short paragraphs describing ``loaded``."""
    defaults = defaults if defaults is not None else GuardrailDefaults()
    pb = loaded.model
    spec = pb.spec
    trig = spec.trigger
    lines = [f"Playbook {pb.name} ({loaded.file}:{loaded.line}, priority {spec.priority})"]
    if pb.metadata.description:
        lines.append(f"  {pb.metadata.description.strip()}")
    lines.append("")

    kinds = " or ".join(k.value for k in trig.signal)
    what = f"{kinds} signals"
    metric = "any metric" if trig.metric is None else f"metric that {_quote_or_pattern(trig.metric)}"
    lines.append("When it fires:")
    lines.append(
        f"  on {what} for {metric}" + (f", score at least {trig.min_score:g}" if trig.min_score else "")
    )
    for label, pattern in sorted(trig.match.items()):
        lines.append(f"  where label {label} {_quote_or_pattern(pattern)}")
    gap = format_seconds(trig.max_gap)
    if trig.for_ > 0:
        lines.append(
            f"  once such signals have lasted {format_seconds(trig.for_)} (a silence of {gap} starts over)"
        )
    else:
        lines.append(f"  at the first such signal (the incident stays open until {gap} without one)")
    t = spec.target
    lines.append(
        f"  on the {t.kind} {t.name!r} in namespace {t.namespace!r} (resolved from the signal's labels)"
    )
    for cond in spec.when:
        lines.append(f"  only if {cond.describe()}")
    lines.append("")

    lines.append("What it does, in order:")
    for i, step in enumerate(spec.actions, start=1):
        lines.append(f"  {i}. {step.params.describe()}")
    lines.append("")

    v = spec.verify
    lines.append("Then:")
    if v.clears:
        lines.append(
            f"  it is resolved once no matching signal has come for {format_seconds(v.quiet)}, "
            f"if that happens within {format_seconds(v.within)} of the last action;"
        )
        lines.append(
            "  otherwise it escalates" + (" and runs:" if spec.on_failure else " (no onFailure steps).")
        )
    else:
        lines.append("  it is resolved when the actions are done (verify.clears is false).")
        if spec.on_failure:
            lines.append("  if an action fails it runs:")
    for i, step in enumerate(spec.on_failure, start=1):
        lines.append(f"  {i}. {step.params.describe()}")
    if spec.on_failure and v.clears:
        lines.append("  (onFailure also runs when an action fails.)")
    lines.append("")

    lines.append("What can hold it back:")
    g = effective(spec.guardrails, defaults)
    scales = any(s.action == "scale" for s in [*spec.actions, *spec.on_failure])
    for text in describe(g, spec.guardrails, scales=scales):
        lines.append(f"  - {text}")
    outside = namespaces_outside(spec.guardrails.namespaces, defaults)
    if outside:
        lines.append(
            f"  - note: {', '.join(outside)} are outside the agent's allow-list: it never acts there"
        )
    lines.append("  - another remediation in flight on the same target (one at a time)")
    lines.append("  - a higher-priority playbook matching the same target at the same time")
    if spec.when:
        lines.append("  - the conditions under 'only if' above")
    return "\n".join(lines) + "\n"
