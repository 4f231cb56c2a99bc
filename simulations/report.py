"""The replay report: a score table, timelines, one PNG per scenario and a self-contained HTML page.

Everything here is made from :class:`~simulations.result.ScenarioResult` values alone. The summary
JSON files are deterministic (sorted keys, rounded values, no timestamps or paths), so two replays
of the same scenario and seed write byte-identical summaries. The plots use matplotlib's Agg canvas
directly (no pyplot, no global backend switch), so reporting works headless and from any thread.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from simulations.result import (
    AGENT,
    ERROR_RATIO,
    HPA,
    NO_AGENT,
    P99,
    POLICIES,
    REQUESTS,
    FloatArray,
    PolicyRun,
    ScenarioResult,
    Score,
)

__all__ = [
    "ReportFiles",
    "dumps_json",
    "format_scores",
    "format_timeline",
    "json_safe",
    "plot_scenario",
    "write_report",
]

#: Column headers of the score table (text and HTML), after the scenario and policy columns.
SCORE_COLUMNS = (
    "detect (min)",
    "mitigate (min)",
    "SLO viol (min)",
    "budget (%)",
    "actions",
    "unneeded",
    "replica-h",
)
MISSING = "-"

_MAX_SERVICES = 4
_PANEL_HEIGHT_IN = 3.0
_TITLE_HEIGHT_IN = 0.9
_WIDTH_IN = 14.0
_DPI = 100
_FAULT_COLOR = "#f0a030"
_BREACH_COLOR = "#d62728"
_ACTION_COLOR = "#7b3294"
_UNNEEDED_COLOR = "#888888"
_FORECAST_COLOR = "#17becf"
#: PNG metadata: no "Software" entry, so files do not depend on the matplotlib version.
_PNG_METADATA: dict[str, str | None] = {"Software": None}

#: A panel: its title and what draws it into an axes (returning the twin axes it added, if any).
_Panel = tuple[str, Callable[[Axes], Axes | None]]


# ---------------------------------------------------------------------------------------- tables


def _ordered_policies(result: ScenarioResult) -> list[str]:
    """The result's policies: the agent first, then the known baselines, then any others by name."""
    known = [p for p in POLICIES if p in result.runs]
    return known + sorted(p for p in result.runs if p not in POLICIES)


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    number = _finite(value)
    return MISSING if number is None else f"{number * scale:.{digits}f}"


def _score_cells(score: Score | None) -> list[str]:
    """The score's cells in :data:`SCORE_COLUMNS` order, ``-`` where a figure does not apply."""
    if score is None:
        return [MISSING] * len(SCORE_COLUMNS)
    return [
        _fmt(score.time_to_detect, 1 / 60),
        _fmt(score.time_to_mitigate, 1 / 60),
        _fmt(score.slo_violation_minutes),
        _fmt(score.error_budget_burned, 100),
        str(score.actions),
        str(score.unnecessary_actions),
        _fmt(score.replica_hours, digits=2),
    ]


def _expectation_counts(result: ScenarioResult) -> tuple[int, int]:
    return sum(e.met for e in result.expectations), len(result.expectations)


def format_scores(results: Sequence[ScenarioResult]) -> str:
    """A plain-text score table: one row per scenario and policy (the agent's first), aligned.

    Times are in minutes, the error budget burned in percent, ``-`` where a figure does not apply.
    Below each scenario's rows: ``expectations: n/m met`` and the text of every unmet expectation.
    """
    header = ["scenario", "policy", *SCORE_COLUMNS]
    blocks: list[tuple[list[list[str]], list[str]]] = []
    for result in results:
        rows = [
            [result.name, policy, *_score_cells(result.runs[policy].score)]
            for policy in _ordered_policies(result)
        ]
        if not rows:
            rows = [[result.name, MISSING, *[MISSING] * len(SCORE_COLUMNS)]]
        met, total = _expectation_counts(result)
        notes = [f"  expectations: {met}/{total} met"]
        for expectation in result.expectations:
            if not expectation.met:
                detail = f" ({_one_line(expectation.detail)})" if expectation.detail else ""
                notes.append(f"    not met: {_one_line(expectation.text)}{detail}")
        blocks.append((rows, notes))

    all_rows = [header] + [row for rows, _ in blocks for row in rows]
    widths = [max(len(row[i]) for row in all_rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        text = [cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(cells)]
        return "  ".join(text).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    for rows, notes in blocks:
        out.extend(line(row) for row in rows)
        out.extend(notes)
    return "\n".join(out)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -------------------------------------------------------------------------------------- timeline


def _clock(seconds: float) -> str:
    sign = "-" if seconds < 0 else "+"
    total = round(abs(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours:02d}:{minutes:02d}:{secs:02d}"


def _timeline_entries(result: ScenarioResult, policy: str) -> list[tuple[float, str, str, str]]:
    """Fault windows (at their start) and the run's events, sorted by time, stable."""
    entries: list[tuple[float, str, str, str]] = []
    for fault in result.faults:
        until = "until fixed" if fault.end is None else f"until {_clock(fault.end - result.start)}"
        entries.append((fault.start, "fault", fault.service, f"{fault.kind}: {fault.text} ({until})"))
    run = result.runs.get(policy)
    if run is not None:
        entries.extend((e.time, e.kind, e.service, e.text) for e in run.events)
    entries.sort(key=lambda entry: entry[0])  # list.sort is stable: faults first on equal times
    return entries


def format_timeline(result: ScenarioResult, policy: str = AGENT, limit: int | None = 60) -> str:
    """The policy run's events and the fault windows as ``+HH:MM:SS  kind  service  text`` lines.

    Times are relative to the scenario's start. With more than ``limit`` lines, the first ``limit``
    are shown and then ``... N more``.
    """
    entries = _timeline_entries(result, policy)
    if not entries:
        return "(no events)"
    shown = entries if limit is None else entries[: max(limit, 0)]
    kind_width = max(len(kind) for _, kind, _, _ in shown) if shown else 0
    service_width = max(len(service) for _, _, service, _ in shown) if shown else 0
    lines = [
        f"{_clock(time - result.start)}  {kind.ljust(kind_width)}  "
        f"{service.ljust(service_width)}  {_one_line(text)}".rstrip()
        for time, kind, service, text in shown
    ]
    if len(entries) > len(shown):
        lines.append(f"... {len(entries) - len(shown)} more")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- plots


def _plot_services(result: ScenarioResult) -> list[str]:
    """The services plotted: faulted ones first, then the others (all only if <= 3), by name."""
    everything = list(dict.fromkeys([*result.services, *(f.service for f in result.faults)]))
    faulted = sorted({f.service for f in result.faults})
    others = sorted(s for s in everything if s not in faulted)
    chosen = faulted + others if len(everything) <= 3 else (faulted or others)
    return chosen[:_MAX_SERVICES]


def _hours(run: PolicyRun, start: float) -> FloatArray:
    return (np.asarray(run.times, dtype=np.float64) - start) / 3600.0


def _series(run: PolicyRun | None, values: Any) -> FloatArray | None:
    """``values`` as floats when it is aligned with the run's steps and has a finite value."""
    if run is None or values is None:
        return None
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.shape != np.shape(run.times) or not np.isfinite(array).any():
        return None
    return array


def _metric(run: PolicyRun | None, service: str, metric: str) -> FloatArray | None:
    if run is None:
        return None
    return _series(run, run.metrics.get(service, {}).get(metric))


def _step_hours(result: ScenarioResult, x: FloatArray) -> float:
    if result.step > 0:
        return result.step / 3600.0
    diffs = np.diff(x)
    return float(np.median(diffs)) if diffs.size else 0.0


def _shade(ax: Axes, spans: list[tuple[float, float]], color: str, alpha: float) -> None:
    """Full-height bands over ``spans`` (hours) without touching the y autoscaling."""
    if not spans:
        return
    verts = [[(x0, 0.0), (x0, 1.0), (x1, 1.0), (x1, 0.0)] for x0, x1 in spans]
    bands = PolyCollection(
        verts, facecolors=color, edgecolors="none", alpha=alpha, transform=ax.get_xaxis_transform()
    )
    bands.set_zorder(0)
    ax.add_collection(bands, autolim=False)


class _Decorations:
    """What every panel of a service shows: fault windows, SLO breaches and the agent's actions."""

    def __init__(self, result: ScenarioResult, service: str) -> None:
        agent = result.runs.get(AGENT)
        end = result.start + result.duration
        self.faults = [
            ((f.start - result.start) / 3600.0, ((end if f.end is None else f.end) - result.start) / 3600.0)
            for f in result.faults
            if f.service == service
        ]
        self.breaches: list[tuple[float, float]] = []
        self.actions: list[tuple[float, str, bool]] = []
        if agent is None:
            return
        self.actions = [
            ((a.time - result.start) / 3600.0, a.action, a.necessary)
            for a in sorted(agent.actions, key=lambda a: a.time)
            if a.service == service
        ]
        breach = agent.slo_breach.get(service)
        if breach is None:
            return
        flags = np.asarray(breach, dtype=bool)
        if flags.ndim != 1 or flags.shape != np.shape(agent.times) or not flags.any():
            return
        x = _hours(agent, result.start)
        edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
        starts = np.flatnonzero(edges == 1)
        stops = np.flatnonzero(edges == -1) - 1
        step = _step_hours(result, x)
        self.breaches = [(float(x[i]), float(x[j]) + step) for i, j in zip(starts, stops, strict=True)]

    def draw(self, ax: Axes) -> None:
        _shade(ax, self.faults, _FAULT_COLOR, 0.15)
        _shade(ax, self.breaches, _BREACH_COLOR, 0.15)
        transform = ax.get_xaxis_transform()
        for x, action, necessary in self.actions:
            color = _ACTION_COLOR if necessary else _UNNEEDED_COLOR
            ax.axvline(x, color=color, linewidth=1.0, linestyle="-" if necessary else "--", zorder=3)
            ax.text(
                x,
                0.98,
                f" {action}",
                transform=transform,
                rotation=90,
                va="top",
                ha="right",
                fontsize=7,
                color=color,
                clip_on=True,
                parse_math=False,
            )

    @staticmethod
    def legend_handles() -> list[Any]:
        return [
            Patch(facecolor=_FAULT_COLOR, alpha=0.3, label="fault"),
            Patch(facecolor=_BREACH_COLOR, alpha=0.3, label="SLO breach (agent)"),
            Line2D([], [], color=_ACTION_COLOR, linewidth=1.0, label="agent action"),
        ]


def _legend(ax: Axes, extra: list[Any], twin: Axes | None = None) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if twin is not None:
        more_handles, more_labels = twin.get_legend_handles_labels()
        handles += more_handles
        labels += more_labels
    handles += extra
    labels += [str(h.get_label()) for h in extra]
    if handles:  # above the panel, right of its title, so it hides neither data nor action labels
        (twin or ax).legend(
            handles,
            labels,
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            fontsize=7,
            ncols=min(len(handles), 5),
            frameon=False,
            borderaxespad=0.2,
        )


def _traffic_panel(result: ScenarioResult, service: str) -> _Panel | None:
    agent = result.runs.get(AGENT)
    requests = _metric(agent, service, REQUESTS)
    mean = _series(agent, agent.forecast_mean.get(service)) if agent else None
    upper = _series(agent, agent.forecast_upper.get(service)) if agent else None
    replicas = [
        (policy, run, values)
        for policy in (AGENT, HPA, NO_AGENT)
        if (run := result.runs.get(policy)) is not None
        and (values := _series(run, run.replicas.get(service))) is not None
    ]
    if requests is None and mean is None and upper is None and not replicas:
        return None

    def draw(ax: Axes) -> Axes | None:
        ax.set_ylabel("requests/s", fontsize=8)
        if agent is not None:
            x = _hours(agent, result.start)
            if requests is not None:
                ax.plot(x, requests, color="C0", linewidth=1.0, label="request rate")
            if mean is not None:
                ax.plot(x, mean, color=_FORECAST_COLOR, linewidth=0.9, label="forecast mean")
            if upper is not None:
                lower = mean if mean is not None else upper
                ok = np.isfinite(lower) & np.isfinite(upper)
                if mean is None:
                    ax.plot(
                        x, upper, color=_FORECAST_COLOR, linewidth=0.8, linestyle=":", label="forecast upper"
                    )
                else:
                    ax.fill_between(
                        x, lower, upper, where=ok, color=_FORECAST_COLOR, alpha=0.2, label="forecast band"
                    )
        if not replicas:
            return None
        twin = ax.twinx()
        twin.set_ylabel("replicas", fontsize=8)
        styles = {AGENT: ("C2", "-"), HPA: ("C4", "--"), NO_AGENT: ("C7", ":")}
        for policy, run, values in replicas:
            color, style = styles[policy]
            twin.plot(
                _hours(run, result.start),
                values,
                color=color,
                linestyle=style,
                linewidth=1.2,
                drawstyle="steps-post",
                label=f"replicas ({policy})",
            )
        twin.set_ylim(bottom=0)
        return twin

    return ("request rate, forecast and replicas", draw)


def _errors_panel(result: ScenarioResult, service: str) -> _Panel | None:
    lines = [
        (policy, run, metric, values)
        for policy in (AGENT, NO_AGENT)
        if (run := result.runs.get(policy)) is not None
        for metric in (ERROR_RATIO, P99)
        if (values := _metric(run, service, metric)) is not None
    ]
    if not lines:
        return None
    metrics = [m for m in (ERROR_RATIO, P99) if any(line[2] == m for line in lines)]

    def draw(ax: Axes) -> Axes | None:
        axes: dict[str, Axes] = {metrics[0]: ax}
        twin = None
        if len(metrics) > 1:
            twin = ax.twinx()
            axes[metrics[1]] = twin
        colors = {ERROR_RATIO: "C3", P99: "C0"}
        names = {ERROR_RATIO: "error ratio", P99: "p99 latency (s)"}
        objectives = {ERROR_RATIO: result.slo.get("error_ratio"), P99: result.slo.get("p99_seconds")}
        for metric, target in axes.items():
            target.set_ylabel(names[metric], fontsize=8, color=colors[metric])
            objective = _finite(objectives[metric])
            if objective is not None:
                target.axhline(
                    objective,
                    color=colors[metric],
                    linewidth=0.8,
                    linestyle="-.",
                    alpha=0.6,
                    label=f"{names[metric]} SLO",
                )
        for policy, run, metric, values in lines:
            axes[metric].plot(
                _hours(run, result.start),
                values,
                color=colors[metric],
                linewidth=1.0 if policy == AGENT else 0.9,
                linestyle="-" if policy == AGENT else "--",
                alpha=1.0 if policy == AGENT else 0.6,
                label=f"{names[metric]} ({policy})",
            )
        for target in axes.values():
            target.set_ylim(bottom=0)
        return twin

    return ("error ratio and p99 latency (agent solid, none dashed)", draw)


def _anomaly_panel(result: ScenarioResult, service: str) -> _Panel | None:
    agent = result.runs.get(AGENT)
    score = _series(agent, agent.anomaly_score.get(service)) if agent else None
    if agent is None or score is None:
        return None

    def draw(ax: Axes) -> Axes | None:
        ax.plot(_hours(agent, result.start), score, color="C5", linewidth=1.0, label="anomaly score")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("anomaly score", fontsize=8)
        return None

    return ("anomaly score (agent)", draw)


def plot_scenario(result: ScenarioResult, path: Path) -> Path:
    """Write the scenario's plot as a PNG at ``path`` and return the path.

    One column of panels per plotted service (see :func:`_plot_services`): request rate with the
    agent's forecast band and the replicas of the agent, the HPA and no agent; error ratio and p99
    latency of the agent and of no agent; the agent's anomaly score. Every panel shades fault
    windows and the agent's SLO breaches and marks the agent's actions. Panels without data are
    left out.
    """
    panels: list[tuple[str, str, Callable[[Axes], Axes | None], _Decorations]] = []
    for service in _plot_services(result):
        decorations = _Decorations(result, service)
        for make in (_traffic_panel, _errors_panel, _anomaly_panel):
            panel = make(result, service)
            if panel is not None:
                panels.append((service, panel[0], panel[1], decorations))

    rows = max(len(panels), 1)
    figure = Figure(
        figsize=(_WIDTH_IN, _TITLE_HEIGHT_IN + _PANEL_HEIGHT_IN * rows), dpi=_DPI, layout="constrained"
    )
    FigureCanvasAgg(figure)
    title = f"{result.name}: {result.description}" if result.description else result.name
    figure.suptitle(textwrap.fill(title, 150), fontsize=12, parse_math=False)
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    hours = result.duration / 3600.0
    if not panels:
        ax = axes[0]
        ax.text(0.5, 0.5, "no data to plot", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    for index, (service, name, draw, decorations) in enumerate(panels):
        ax = axes[index]
        twin = draw(ax)
        decorations.draw(ax)
        ax.set_title(f"{service}: {name}", fontsize=9, loc="left", parse_math=False)
        ax.tick_params(labelsize=8)
        if twin is not None:
            twin.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
        _legend(ax, _Decorations.legend_handles() if index == 0 else [], twin)
    if hours > 0:
        axes[-1].set_xlim(0, hours)
    axes[-1].set_xlabel("hours since start", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=_DPI, metadata=_PNG_METADATA)
    return path


# ---------------------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class ReportFiles:
    """The files :func:`write_report` wrote."""

    directory: Path
    index: Path
    """``index.html``: the self-contained page."""
    summary: Path
    """``summary.json``: every scenario's summary and whether all passed."""
    plots: tuple[Path, ...]
    """``<scenario>.png`` per scenario, in the order of the results."""
    summaries: tuple[Path, ...]
    """``<scenario>.json`` per scenario, in the order of the results."""


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities turned into None and numpy scalars into plain values."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    return value


def dumps_json(value: Any) -> str:
    """Deterministic JSON text: sorted keys, two-space indent, no NaN, a final newline."""
    return json.dumps(json_safe(value), indent=2, sort_keys=True, allow_nan=False) + "\n"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _file_stem(name: str) -> str:
    stem = _UNSAFE.sub("_", name).strip("._")
    return stem or "scenario"


def write_report(results: Sequence[ScenarioResult], directory: Path) -> ReportFiles:
    """Write the report into ``directory`` (created if needed) and return the paths written.

    Per scenario ``<name>.png`` and ``<name>.json`` (its summary); ``summary.json`` with every
    summary and whether all scenarios passed; ``index.html``, one page with everything embedded.
    """
    stems = [_file_stem(r.name) for r in results]
    if len(set(stems)) != len(stems):
        raise ValueError(f"scenario names must map to distinct file names: {sorted(stems)}")
    directory.mkdir(parents=True, exist_ok=True)
    plots: list[Path] = []
    summaries: list[Path] = []
    for result, stem in zip(results, stems, strict=True):
        plots.append(plot_scenario(result, directory / f"{stem}.png"))
        summary_path = directory / f"{stem}.json"
        summary_path.write_text(dumps_json(result.summary()), encoding="utf-8")
        summaries.append(summary_path)
    summary = directory / "summary.json"
    combined = {"scenarios": [r.summary() for r in results], "passed": all(r.passed for r in results)}
    summary.write_text(dumps_json(combined), encoding="utf-8")
    index = directory / "index.html"
    index.write_text(_html(results, stems, plots), encoding="utf-8")
    return ReportFiles(directory, index, summary, tuple(plots), tuple(summaries))


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1500px; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
tr.agent td { font-weight: 600; background: #f7f3fb; }
.ok { color: #1a7f37; } .fail { color: #c62828; }
.badge { padding: 0.1em 0.5em; border-radius: 0.3em; color: #fff; font-size: 0.85em; }
.badge.ok { background: #1a7f37; } .badge.fail { background: #c62828; }
ul.expectations { list-style: none; padding-left: 0.5em; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.muted { color: #666; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _html(results: Sequence[ScenarioResult], stems: Sequence[str], plots: Sequence[Path]) -> str:
    passed = all(r.passed for r in results)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8"><title>aiops replay report</title>',
        f"<style>{_CSS}</style></head>",
        "<body>",
        "<h1>aiops replay report "
        f'<span class="badge {"ok" if passed else "fail"}">{"passed" if passed else "failed"}</span></h1>',
        "<table><tr><th>scenario</th><th>expectations met</th><th>result</th></tr>",
    ]
    for result, stem in zip(results, stems, strict=True):
        met, total = _expectation_counts(result)
        css, word = ("ok", "passed") if result.passed else ("fail", "failed")
        out.append(
            f'<tr><td><a href="#{_e(stem)}">{_e(result.name)}</a></td>'
            f'<td class="num">{met}/{total}</td><td class="{css}">{word}</td></tr>'
        )
    out.append("</table>")
    for result, stem, plot in zip(results, stems, plots, strict=True):
        out.extend(_html_scenario(result, stem, plot))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _html_scenario(result: ScenarioResult, stem: str, plot: Path) -> list[str]:
    met, total = _expectation_counts(result)
    css = "ok" if result.passed else "fail"
    out = [
        f'<section id="{_e(stem)}">',
        f'<h2>{_e(result.name)} <span class="badge {css}">{met}/{total} expectations met</span></h2>',
        f"<p>{_e(result.description)}</p>",
        f'<p class="muted">seed {_e(result.seed)}, {_e(_fmt(result.duration / 3600, digits=2))} h '
        f"at {_e(_fmt(result.step, digits=0))} s steps; services: {_e(', '.join(result.services))}</p>",
    ]
    if result.faults:
        out.append("<p>faults:</p><ul>")
        out.extend(
            f"<li>{_e(_clock(f.start - result.start))} {_e(f.service)}: {_e(f.kind)} - {_e(f.text)}"
            f"{'' if f.end is None else ' (until ' + _e(_clock(f.end - result.start)) + ')'}</li>"
            for f in result.faults
        )
        out.append("</ul>")
    out.append("<table><tr><th>policy</th>" + "".join(f"<th>{_e(c)}</th>" for c in SCORE_COLUMNS) + "</tr>")
    for policy in _ordered_policies(result):
        cells = "".join(f'<td class="num">{_e(c)}</td>' for c in _score_cells(result.runs[policy].score))
        row_css = ' class="agent"' if policy == AGENT else ""
        out.append(f"<tr{row_css}><td>{_e(policy)}</td>{cells}</tr>")
    out.append("</table>")
    out.append('<ul class="expectations">')
    for expectation in result.expectations:
        mark, mark_css = ("\u2713", "ok") if expectation.met else ("\u2717", "fail")
        detail = f' <span class="muted">({_e(expectation.detail)})</span>' if expectation.detail else ""
        out.append(f'<li><span class="{mark_css}">{mark}</span> {_e(expectation.text)}{detail}</li>')
    out.append("</ul>")
    encoded = base64.b64encode(plot.read_bytes()).decode("ascii")
    out.append(f'<img alt="{_e(result.name)} plot" src="data:image/png;base64,{encoded}">')
    out.append("<details><summary>agent timeline</summary>")
    out.append(f"<pre>{_e(format_timeline(result, AGENT, limit=None))}</pre>")
    out.append("</details>")
    out.append("</section>")
    return out
