"""One scenario over several seeds: each policy's mean and spread, and the expectations per seed.

A single seed of a scenario is one draw of its noise; a policy that wins on it may lose on the
next. ``aiops replay --seeds N`` replays every scenario with seeds ``seed, seed + 1, ...`` and
reports, per policy, the mean of each score with its range, and how many seeds met the
scenario's expectations (a scenario passes only when every seed does).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from simulations.result import ScenarioResult
from simulations.scenario import Scenario

#: The scores summarised over seeds: (summary JSON key, column title, digits).
FIGURES = (
    ("slo_violation_minutes", "SLO viol (min)", 1),
    ("replica_hours", "replica-h", 1),
    ("actions", "actions", 1),
    ("unnecessary_actions", "unneeded", 1),
)


def with_seed(scenario: Scenario, seed: int) -> Scenario:
    """``scenario`` with another seed (everything else, traces included, the same)."""
    spec = scenario.doc.spec.model_copy(update={"seed": seed})
    doc = scenario.doc.model_copy(update={"spec": spec})
    return Scenario(doc, scenario.file, scenario.traces)


#: The most seeds one scenario is replayed with: each is a whole replay per policy.
MAX_SEEDS = 1000


def seeds_of(scenario: Scenario, count: int) -> list[int]:
    """The seeds a scenario is replayed with: its own, then the next ``count - 1``."""
    if not 1 <= count <= MAX_SEEDS:
        msg = f"seeds: expected 1 to {MAX_SEEDS}, got {count}"
        raise ValueError(msg)
    return [scenario.spec.seed + k for k in range(count)]


@dataclass(frozen=True, slots=True)
class SeedSummary:
    """Every seed's result of one scenario."""

    results: Sequence[ScenarioResult]

    @property
    def name(self) -> str:
        return self.results[0].name

    @property
    def passed(self) -> bool:
        """Whether every seed met every expectation."""
        return all(r.passed for r in self.results)

    def policies(self) -> list[str]:
        """The policies replayed, in the order of the first seed's runs."""
        return list(self.results[0].runs)

    def figures(self, policy: str) -> dict[str, dict[str, float]]:
        """Per score: mean, standard deviation (0 for one seed), min and max over the seeds."""
        out: dict[str, dict[str, float]] = {}
        for key, _, _ in FIGURES:
            values = [
                float(getattr(run.score, key))
                for r in self.results
                if (run := r.runs.get(policy)) is not None and run.score is not None
            ]
            if not values:
                continue
            out[key] = {
                "mean": statistics.fmean(values),
                "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                "min": min(values),
                "max": max(values),
            }
        return out

    def as_dict(self) -> dict[str, Any]:
        """The summary JSON: seeds, expectations met per seed, and each policy's figures."""
        return {
            "scenario": self.name,
            "seeds": [r.seed for r in self.results],
            "passed": self.passed,
            "expectations_met": [
                {"seed": r.seed, "met": sum(e.met for e in r.expectations), "of": len(r.expectations)}
                for r in self.results
            ],
            "policies": {p: self.figures(p) for p in self.policies()},
        }


def format_seeds(summaries: Sequence[SeedSummary]) -> str:
    """A table: per scenario and policy, each score's mean and range over the seeds."""
    header = ["scenario", "policy", "seeds", *[title for _, title, _ in FIGURES], "expectations"]
    rows: list[list[str]] = []
    for summary in summaries:
        met = sum(r.passed for r in summary.results)
        for i, policy in enumerate(summary.policies()):
            figures = summary.figures(policy)
            cells = [
                f"{f['mean']:.{digits}f} ({f['min']:.{digits}f}-{f['max']:.{digits}f})"
                if (f := figures.get(key)) is not None
                else "-"
                for key, _, digits in FIGURES
            ]
            verdict = f"{met}/{len(summary.results)} seeds met" if i == 0 else ""
            rows.append([summary.name if i == 0 else "", policy, str(len(summary.results)), *cells, verdict])
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join(
        ["mean (min-max) over seeds", line(header), line(["-" * w for w in widths]), *map(line, rows)]
    )
