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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.dates import AutoDateLocator, DateFormatter
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from simulations.result import (
    ACCURACY,
    AGENT,
    ERROR_RATIO,
    HPA,
    MEMORY,
    NO_AGENT,
    P99,
    POLICIES,
    REQUESTS,
    ActionRecord,
    Event,
    FloatArray,
    PolicyRun,
    ScenarioResult,
    Score,
)

__all__ = [
    "IncidentView",
    "ReportFiles",
    "dumps_json",
    "fault_end",
    "format_scores",
    "format_timeline",
    "incident_views",
    "json_safe",
    "plot_incident",
    "plot_scenario",
    "wall_time",
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
_SIGNAL_COLOR = "#d95f02"
_HELD_COLOR = "#b8860b"
_ZOOM_HEIGHT_IN = 2.4
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


def wall_time(seconds: float, *, date: bool = True) -> str:
    """Unix seconds as UTC wall-clock time: ``2024-01-01 09:30:15`` (``09:30:15`` without the date)."""
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")


def fault_end(result: ScenarioResult, index: int, policy: str = AGENT) -> float | None:
    """When fault ``index`` ended in the policy's run: removed by the run, else its own end (None: never)."""
    run = result.runs.get(policy)
    if run is not None and index < len(run.mitigated) and run.mitigated[index] is not None:
        return run.mitigated[index]
    return result.faults[index].end


def _timeline_entries(result: ScenarioResult, policy: str) -> list[Event]:
    """Fault windows (at their start) and the run's events, by time; equal times keep their order."""
    entries: list[Event] = []
    for index, fault in enumerate(result.faults):
        end = fault_end(result, index, policy)
        until = "not removed" if end is None else f"until {wall_time(end, date=False)}"
        entries.append(Event(fault.start, "fault", fault.service, f"{fault.kind}: {fault.text} ({until})"))
    run = result.runs.get(policy)
    if run is not None:
        entries.extend(run.events)
    entries.sort(key=lambda entry: entry.time)  # stable: faults first, then the order things happened
    return entries


def format_timeline(result: ScenarioResult, policy: str = AGENT, limit: int | None = 60) -> str:
    """The policy run's events and the fault windows, one line each, in the order they happened.

    ``YYYY-MM-DD HH:MM:SS  +HH:MM:SS  kind  service  text``: UTC wall-clock time, then the time since
    the scenario's start. With more than ``limit`` lines, the first ``limit`` are shown and then
    ``... N more``.
    """
    entries = _timeline_entries(result, policy)
    if not entries:
        return "(no events)"
    shown = entries if limit is None else entries[: max(limit, 0)]
    kind_width = max((len(e.kind) for e in shown), default=0)
    service_width = max((len(e.service) for e in shown), default=0)
    lines = [
        f"{wall_time(e.time)}  {_clock(e.time - result.start)}  {e.kind.ljust(kind_width)}  "
        f"{e.service.ljust(service_width)}  {_one_line(e.text)}".rstrip()
        for e in shown
    ]
    if len(entries) > len(shown):
        lines.append(f"... {len(entries) - len(shown)} more")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- incidents

#: The agent's incidents on one service this close together (seconds) are one incident in the report.
INCIDENT_GAP = 600.0
#: Each zoomed panel shows at least this much (seconds) before the onset and after the resolution.
MIN_MARGIN = 600.0
#: At most this many incidents per scenario get a zoomed panel (the rest are listed).
MAX_INCIDENT_PANELS = 12
#: Outcomes of an action that changed nothing, and states that call a person.
_NO_CHANGE = frozenset({"noop", "started"})
_ALARM_STATES = frozenset({"failed", "escalated"})
_TERMINAL_STATES = frozenset({"resolved", "failed", "escalated", "suppressed", "expired"})


@dataclass(frozen=True, slots=True)
class IncidentView:
    """One incident as the report shows it: a service's episode, from onset to resolution.

    An episode groups the agent's incidents on one service that follow each other within
    :data:`INCIDENT_GAP`, with the fault they answer; a fault nothing acted on is an episode too.
    """

    service: str
    onset: float
    """The fault's start, or the agent's first incident event when no fault preceded it."""
    resolved: float | None
    """When the last of its incidents ended or its fault was removed, whichever is later; None: open."""
    faults: tuple[int, ...]
    """Indices into :attr:`ScenarioResult.faults`."""
    incidents: tuple[str, ...]
    """The agent's incident ids, in order of appearance."""

    def window(self, result: ScenarioResult) -> tuple[float, float]:
        """The span of its zoomed panel: onset to resolution, with a margin either side, within the run."""
        end = result.start + result.duration
        resolved = end if self.resolved is None else self.resolved
        margin = max(MIN_MARGIN, 0.25 * (resolved - self.onset))
        return max(result.start, self.onset - margin), min(end, resolved + margin)


@dataclass(slots=True)
class _Span:
    service: str
    first: float
    last: float
    state: str = ""
    notable: bool = False


def incident_views(result: ScenarioResult) -> list[IncidentView]:
    """The agent's run as incidents: its incidents grouped per service and episode, plus unanswered faults.

    An incident of the agent counts when it changed something (an action other than a no-op), was
    held or suppressed by a guardrail, or failed or escalated; the others (expired while pending,
    a scale to the replicas already there) stay in the timeline and in the details of the
    incident whose window they fall in.
    """
    run = result.runs.get(AGENT)
    end = result.start + result.duration
    spans: dict[str, _Span] = {}
    changed = {a.incident for a in run.actions if a.outcome not in _NO_CHANGE} if run is not None else set()
    for event in run.events if run is not None else ():
        if not event.incident:
            continue
        span = spans.get(event.incident)
        if span is None:
            span = spans[event.incident] = _Span(event.service, event.time, event.time)
        span.last = event.time
        if event.state:
            span.state = event.state
        if event.guardrail or event.incident in changed or event.state in _ALARM_STATES:
            span.notable = True
    episodes: list[tuple[str, float, float | None, list[str]]] = []
    by_service: dict[str, list[tuple[str, _Span]]] = {}
    for ident, span in spans.items():
        if span.notable:
            by_service.setdefault(span.service, []).append((ident, span))
    for service, members in sorted(by_service.items()):
        members.sort(key=lambda item: item[1].first)
        current: tuple[float, float, bool, list[str]] | None = None
        for ident, span in members:
            closed = span.state in _TERMINAL_STATES
            stop = span.last if closed else end
            if current is not None and span.first <= current[1] + INCIDENT_GAP:
                current = (current[0], max(current[1], stop), current[2] and closed, [*current[3], ident])
                continue
            if current is not None:
                episodes.append((service, current[0], current[1] if current[2] else None, current[3]))
            current = (span.first, stop, closed, [ident])
        if current is not None:
            episodes.append((service, current[0], current[1] if current[2] else None, current[3]))
    views: list[IncidentView] = []
    linked: set[int] = set()
    for service, first, closed_at, idents in sorted(episodes, key=lambda e: (e[1], e[0])):
        last = end if closed_at is None else closed_at
        faults = []
        for index, fault in enumerate(result.faults):
            removed = fault_end(result, index)
            if (
                index not in linked
                and fault.service == service
                and fault.start <= last
                and (removed is None or removed >= first - INCIDENT_GAP)
            ):
                faults.append(index)
                linked.add(index)
        onset = min([first] + [result.faults[i].start for i in faults])
        resolved = None
        if closed_at is not None:
            removals = [r for i in faults if (r := fault_end(result, i)) is not None]
            resolved = max([closed_at, *removals])
        views.append(IncidentView(service, onset, resolved, tuple(faults), tuple(idents)))
    for index, fault in enumerate(result.faults):
        if index not in linked:
            views.append(IncidentView(fault.service, fault.start, fault_end(result, index), (index,), ()))
    views.sort(key=lambda v: (v.onset, v.service))
    return views


def _incident_events(result: ScenarioResult, view: IncidentView) -> list[Event]:
    """What happened in the incident, in order: every event of its incidents, and everything on
    its service within its window (faults, signals, OOM kills, the agent's other incidents)."""
    lo, hi = view.window(result)
    idents = set(view.incidents)
    return [
        e
        for e in _timeline_entries(result, AGENT)
        if e.incident in idents or (e.service == view.service and lo <= e.time <= hi)
    ]


def _outcomes(result: ScenarioResult, view: IncidentView) -> str:
    """``playbook: last state`` of each of the view's incidents; ``no action`` when there are none."""
    run = result.runs.get(AGENT)
    last: dict[str, tuple[str, str]] = {}
    for event in run.events if run is not None else ():
        if event.incident in view.incidents and event.state:
            last[event.incident] = (event.playbook, event.state)
    parts = [f"{playbook}: {state}" for playbook, state in (last[i] for i in view.incidents if i in last)]
    return "; ".join(parts) or "no action"


# ----------------------------------------------------------------------------------------- plots


def _plot_services(result: ScenarioResult) -> list[str]:
    """The services plotted: faulted ones first, then the others (all only if <= 3), by name."""
    everything = list(dict.fromkeys([*result.services, *(f.service for f in result.faults)]))
    faulted = sorted({f.service for f in result.faults})
    others = sorted(s for s in everything if s not in faulted)
    chosen = faulted + others if len(everything) <= 3 else (faulted or others)
    return chosen[:_MAX_SERVICES]


def _days(seconds: Any) -> Any:
    """Unix seconds as matplotlib date numbers (days since 1970-01-01 UTC, matplotlib's epoch)."""
    return np.asarray(seconds, dtype=np.float64) / 86400.0


def _x(run: PolicyRun) -> FloatArray:
    return np.asarray(_days(run.times), dtype=np.float64)


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


def _shade(ax: Axes, spans: list[tuple[float, float]], color: str, alpha: float) -> None:
    """Full-height bands over ``spans`` (date numbers) without touching the y autoscaling."""
    if not spans:
        return
    verts = [[(x0, 0.0), (x0, 1.0), (x1, 1.0), (x1, 0.0)] for x0, x1 in spans]
    bands = PolyCollection(
        verts, facecolors=color, edgecolors="none", alpha=alpha, transform=ax.get_xaxis_transform()
    )
    bands.set_zorder(0)
    ax.add_collection(bands, autolim=False)


def _mark_label(ax: Axes, x: float, y: float, text: str, color: str) -> None:
    ax.text(
        x,
        y,
        f" {text}",
        transform=ax.get_xaxis_transform(),
        rotation=90,
        va="top",
        ha="right",
        fontsize=7,
        color=color,
        clip_on=True,
        parse_math=False,
    )


class _Decorations:
    """What every panel of a service shows: fault windows (to their removal), SLO breaches, and the
    agent's signals, held actions (with the guardrail that held them) and actions."""

    def __init__(self, result: ScenarioResult, service: str, detail: bool = False) -> None:
        agent = result.runs.get(AGENT)
        run_end = result.start + result.duration
        self.detail = detail
        self.faults = [
            (float(_days(f.start)), float(_days(run_end if (stop := fault_end(result, i)) is None else stop)))
            for i, f in enumerate(result.faults)
            if f.service == service
        ]
        self.breaches: list[tuple[float, float]] = []
        self.actions: list[tuple[float, str, bool]] = []
        self.held: list[tuple[float, str]] = []
        self.signals: list[float] = []
        if agent is None:
            return
        # held actions are timeline events (the engine's and the executor's alike), taken ones actions
        taken: dict[float, list[ActionRecord]] = {}
        for a in agent.actions:
            if a.service == service and not a.guardrail and a.outcome not in _NO_CHANGE:
                taken.setdefault(a.time, []).append(a)
        self.actions = [  # one line per instant, its label naming every action taken then
            (
                float(_days(t)),
                ", ".join(dict.fromkeys(a.action for a in same)),
                all(a.necessary for a in same),
            )
            for t, same in taken.items()
        ]
        for e in agent.events:
            if e.service != service:
                continue
            if e.kind == "signal":
                self.signals.append(float(_days(e.time)))
            elif e.kind == "held":
                self.held.append((float(_days(e.time)), f"held: {e.guardrail or 'guardrail'}"))
        breach = agent.slo_breach.get(service)
        if breach is None:
            return
        flags = np.asarray(breach, dtype=bool)
        if flags.ndim != 1 or flags.shape != np.shape(agent.times) or not flags.any():
            return
        x = _x(agent)
        edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
        starts = np.flatnonzero(edges == 1)
        stops = np.flatnonzero(edges == -1) - 1
        step = float(_days(result.step)) if result.step > 0 else 0.0
        self.breaches = [(float(x[i]), float(x[j]) + step) for i, j in zip(starts, stops, strict=True)]

    def draw(self, ax: Axes) -> None:
        _shade(ax, self.faults, _FAULT_COLOR, 0.15)
        _shade(ax, self.breaches, _BREACH_COLOR, 0.15)
        transform = ax.get_xaxis_transform()
        if self.signals:
            ax.scatter(
                self.signals,
                [0.03] * len(self.signals),
                marker="^",
                s=28,
                color=_SIGNAL_COLOR,
                transform=transform,
                zorder=4,
                clip_on=True,
            )
        for x, label in self.held:
            ax.scatter([x], [0.93], marker="X", s=36, color=_HELD_COLOR, transform=transform, zorder=4)
            if self.detail:
                _mark_label(ax, x, 0.88, label, _HELD_COLOR)
        for x, action, necessary in self.actions:
            color = _ACTION_COLOR if necessary else _UNNEEDED_COLOR
            ax.axvline(x, color=color, linewidth=1.0, linestyle="-" if necessary else "--", zorder=3)
            _mark_label(ax, x, 0.98, action, color)

    @staticmethod
    def legend_handles() -> list[Any]:
        return [
            Patch(facecolor=_FAULT_COLOR, alpha=0.3, label="fault (until removed)"),
            Patch(facecolor=_BREACH_COLOR, alpha=0.3, label="SLO breach (agent)"),
            Line2D([], [], color=_SIGNAL_COLOR, marker="^", linestyle="none", label="signal"),
            Line2D([], [], color=_HELD_COLOR, marker="X", linestyle="none", label="held by a guardrail"),
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


def _time_axis(ax: Axes, lo: float, hi: float) -> None:
    """UTC wall-clock ticks (HH:MM; with the day when the span crosses midnight) and the date."""
    first, last = datetime.fromtimestamp(lo, UTC), datetime.fromtimestamp(hi, UTC)
    one_day = first.date() == last.date()
    ax.xaxis.set_major_locator(AutoDateLocator(tz=UTC, minticks=4, maxticks=12))  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M" if one_day else "%d %b %H:%M", tz=UTC))  # type: ignore[no-untyped-call]
    ax.tick_params(axis="x", labelbottom=True)
    dates = first.strftime("%a %Y-%m-%d") if one_day else f"{first:%Y-%m-%d} to {last:%Y-%m-%d}"
    ax.set_xlabel(f"time (UTC), {dates}", fontsize=7)
    if hi > lo:
        ax.set_xlim(float(_days(lo)), float(_days(hi)))


#: A forecast this many times the highest request rate is cut off at the top of its panel.
_FORECAST_VIEW = 3.0


def _keep_in_view(ax: Axes, measured: FloatArray | None, forecasts: list[FloatArray | None]) -> None:
    """Keep the measured series readable: a forecast far above it (a bound that blew up) is cut off
    at the top instead of flattening the requests to the axis."""
    if measured is None or not np.isfinite(measured).any():
        return
    top = float(np.nanmax(measured))
    highest = max(
        (float(np.nanmax(f)) for f in forecasts if f is not None and np.isfinite(f).any()), default=0.0
    )
    if top > 0 and highest > _FORECAST_VIEW * top:
        ax.set_ylim(bottom=0, top=1.5 * top)
        ax.text(
            0.01,
            0.97,
            f"forecast up to {highest:.3g} cut off",
            transform=ax.transAxes,
            fontsize=7,
            va="top",
            color=_FORECAST_COLOR,
            parse_math=False,
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
            x = _x(agent)
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
            _keep_in_view(ax, requests, [mean, upper])
        if not replicas:
            return None
        twin = ax.twinx()
        twin.set_ylabel("replicas", fontsize=8)
        styles = {AGENT: ("C2", "-"), HPA: ("C4", "--"), NO_AGENT: ("C7", ":")}
        for policy, run, values in replicas:
            color, style = styles[policy]
            twin.plot(
                _x(run),
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
                _x(run),
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
        ax.plot(_x(agent), score, color="C5", linewidth=1.0, label="anomaly score")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("anomaly score", fontsize=8)
        return None

    return ("anomaly score (agent)", draw)


#: Memory over this share of its limit gets a panel (a leak on its way to the OOM killer).
_MEMORY_SHOWN = 0.6


def _resource_panel(result: ScenarioResult, service: str) -> _Panel | None:
    """Model accuracy (a service serving a model) and memory against its limit (when it nears it)."""
    runs = [(p, run) for p in (AGENT, NO_AGENT) if (run := result.runs.get(p)) is not None]
    accuracy = [(p, run, v) for p, run in runs if (v := _metric(run, service, ACCURACY)) is not None]
    memory = [
        (p, run, v)
        for p, run in runs
        if (v := _metric(run, service, MEMORY)) is not None and np.nanmax(v) >= _MEMORY_SHOWN
    ]
    if not accuracy and not memory:
        return None

    def draw(ax: Axes) -> Axes | None:
        for lines, color, name in ((accuracy, "C8", "model accuracy"), (memory, "C1", "memory / limit")):
            for policy, run, values in lines:
                style = "-" if policy == AGENT else "--"
                ax.plot(
                    _x(run), values, color=color, linestyle=style, linewidth=1.0, label=f"{name} ({policy})"
                )
        if memory:
            ax.axhline(1.0, color="C1", linewidth=0.8, linestyle="-.", alpha=0.6, label="memory limit")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("ratio", fontsize=8)
        return None

    names = [n for n, shown in (("model accuracy", accuracy), ("memory against its limit", memory)) if shown]
    return (" and ".join(names) + " (agent solid, none dashed)", draw)


def _clip(result: ScenarioResult, lo: float, hi: float) -> ScenarioResult:
    """``result`` with every per-step array cut to the steps in ``[lo, hi]`` (events and actions kept)."""

    def cut_run(run: PolicyRun) -> PolicyRun:
        times = np.asarray(run.times, dtype=np.float64)
        keep = (times >= lo) & (times <= hi)

        def cut(arrays: dict[str, Any]) -> dict[str, Any]:
            return {k: np.asarray(v)[keep] if np.shape(v) == times.shape else v for k, v in arrays.items()}

        return replace(
            run,
            times=times[keep],
            metrics={service: cut(bucket) for service, bucket in run.metrics.items()},
            replicas=cut(run.replicas),
            slo_breach=cut(run.slo_breach),
            anomaly_score=cut(run.anomaly_score),
            forecast_upper=cut(run.forecast_upper),
            forecast_mean=cut(run.forecast_mean),
            requests=cut(run.requests),
            errors=cut(run.errors),
        )

    return replace(result, runs={policy: cut_run(run) for policy, run in result.runs.items()})


def _render(
    result: ScenarioResult,
    services: Sequence[str],
    title: str,
    span: tuple[float, float],
    path: Path,
    detail: bool,
    panel_height: float,
) -> Path:
    """One PNG: the panels of ``services`` over ``span`` (unix seconds), decorated, on a UTC time axis."""
    panels: list[tuple[str, str, Callable[[Axes], Axes | None], _Decorations]] = []
    for service in services:
        decorations = _Decorations(result, service, detail)
        for make in (_errors_panel, _traffic_panel, _resource_panel, _anomaly_panel) if detail else _PANELS:
            panel = make(result, service)
            if panel is not None:
                panels.append((service, panel[0], panel[1], decorations))
    rows = max(len(panels), 1)
    figure = Figure(
        figsize=(_WIDTH_IN, _TITLE_HEIGHT_IN + panel_height * rows), dpi=_DPI, layout="constrained"
    )
    FigureCanvasAgg(figure)
    figure.suptitle(textwrap.fill(title, 150), fontsize=12, parse_math=False)
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
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
    for ax in axes:
        _time_axis(ax, span[0], span[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=_DPI, metadata=_PNG_METADATA)
    return path


#: The whole-run view's panels per service, in order.
_PANELS = (_traffic_panel, _errors_panel, _resource_panel, _anomaly_panel)


def plot_scenario(result: ScenarioResult, path: Path) -> Path:
    """Write the whole-run plot of the scenario as a PNG at ``path`` and return the path.

    One column of panels per plotted service (see :func:`_plot_services`): request rate with the
    agent's forecast band and the replicas of the agent, the HPA and no agent; error ratio and p99
    latency of the agent and of no agent; model accuracy and memory near its limit, when the
    service has them; the agent's anomaly score. Every panel shades fault
    windows until the agent's run removed the fault, and the agent's SLO breaches, and marks the
    agent's signals, held actions and actions. Panels without data are left out. Time is UTC.
    """
    title = f"{result.name}: {result.description}" if result.description else result.name
    span = (result.start, result.start + result.duration)
    return _render(result, _plot_services(result), title, span, path, False, _PANEL_HEIGHT_IN)


def plot_incident(result: ScenarioResult, view: IncidentView, path: Path) -> Path:
    """Write the zoomed panel of one incident (its service, onset to resolution with margins)."""
    lo, hi = view.window(result)
    resolved = "still open at the end" if view.resolved is None else f"resolved {wall_time(view.resolved)}"
    title = f"{view.service}: onset {wall_time(view.onset)} UTC, {resolved}"
    return _render(_clip(result, lo, hi), [view.service], title, (lo, hi), path, True, _ZOOM_HEIGHT_IN)


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
    incidents: tuple[Path, ...] = ()
    """``incidents/<scenario>/<n>.png``: the zoomed panel of each incident, scenario by scenario."""


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


@dataclass(frozen=True, slots=True)
class _Scenario:
    """What the page shows of one scenario: its result, file stem, plots and incidents."""

    result: ScenarioResult
    stem: str
    plot: Path
    views: list[IncidentView]
    zooms: list[Path]
    """The zoomed panels of the first :data:`MAX_INCIDENT_PANELS` views."""


def write_report(results: Sequence[ScenarioResult], directory: Path) -> ReportFiles:
    """Write the report into ``directory`` (created if needed) and return the paths written.

    Per scenario ``<name>.png`` (the whole run), ``incidents/<name>/<n>.png`` (each incident
    zoomed) and ``<name>.json`` (its summary); ``summary.json`` with every summary and whether all
    scenarios passed; ``index.html``, one page with everything embedded.
    """
    stems = [_file_stem(r.name) for r in results]
    if len(set(stems)) != len(stems):
        raise ValueError(f"scenario names must map to distinct file names: {sorted(stems)}")
    directory.mkdir(parents=True, exist_ok=True)
    shown: list[_Scenario] = []
    summaries: list[Path] = []
    for result, stem in zip(results, stems, strict=True):
        plot = plot_scenario(result, directory / f"{stem}.png")
        views = incident_views(result)
        zooms = [
            plot_incident(result, view, directory / "incidents" / stem / f"{n}.png")
            for n, view in enumerate(views[:MAX_INCIDENT_PANELS], start=1)
        ]
        shown.append(_Scenario(result, stem, plot, views, zooms))
        summary_path = directory / f"{stem}.json"
        summary_path.write_text(dumps_json(result.summary()), encoding="utf-8")
        summaries.append(summary_path)
    summary = directory / "summary.json"
    combined = {"scenarios": [r.summary() for r in results], "passed": all(r.passed for r in results)}
    summary.write_text(dumps_json(combined), encoding="utf-8")
    index = directory / "index.html"
    index.write_text(_html(shown), encoding="utf-8")
    return ReportFiles(
        directory,
        index,
        summary,
        tuple(s.plot for s in shown),
        tuple(summaries),
        tuple(z for s in shown for z in s.zooms),
    )


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1500px; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.1em; margin-top: 1.5em; } h4 { font-size: 1em; margin: 1em 0 0.4em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.time { white-space: nowrap; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
tr.agent td { font-weight: 600; background: #f7f3fb; }
tr.kind-signal td.kind { color: #d95f02; } tr.kind-held td.kind { color: #b8860b; }
tr.kind-action td.kind { color: #7b3294; } tr.kind-fault td.kind { color: #c06000; }
.ok { color: #1a7f37; } .fail { color: #c62828; }
.badge { padding: 0.1em 0.5em; border-radius: 0.3em; color: #fff; font-size: 0.85em; }
.badge.ok { background: #1a7f37; } .badge.fail { background: #c62828; }
ul.expectations { list-style: none; padding-left: 0.5em; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
article.incident { border-left: 3px solid #f0a030; padding-left: 1em; margin: 1.2em 0; }
details.record { margin: 0.4em 0; } details.record > summary { cursor: pointer; }
.muted { color: #666; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _html(scenarios: Sequence[_Scenario]) -> str:
    passed = all(s.result.passed for s in scenarios)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8"><title>aiops replay report</title>',
        f"<style>{_CSS}</style></head>",
        "<body>",
        "<h1>aiops replay report "
        f'<span class="badge {"ok" if passed else "fail"}">{"passed" if passed else "failed"}</span></h1>',
        '<p class="muted">Times are UTC.</p>',
        "<table><tr><th>scenario</th><th>incidents</th><th>expectations met</th><th>result</th></tr>",
    ]
    for s in scenarios:
        met, total = _expectation_counts(s.result)
        css, word = ("ok", "passed") if s.result.passed else ("fail", "failed")
        out.append(
            f'<tr><td><a href="#{_e(s.stem)}">{_e(s.result.name)}</a></td>'
            f'<td class="num">{len(s.views)}</td>'
            f'<td class="num">{met}/{total}</td><td class="{css}">{word}</td></tr>'
        )
    out.append("</table>")
    for s in scenarios:
        out.extend(_html_scenario(s))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _png(path: Path, alt: str, css: str) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img class="{css}" alt="{_e(alt)}" src="data:image/png;base64,{encoded}">'


def _html_scenario(s: _Scenario) -> list[str]:
    result = s.result
    met, total = _expectation_counts(result)
    css = "ok" if result.passed else "fail"
    out = [
        f'<section id="{_e(s.stem)}">',
        f'<h2>{_e(result.name)} <span class="badge {css}">{met}/{total} expectations met</span></h2>',
        f"<p>{_e(result.description)}</p>",
        f'<p class="muted">from {_e(wall_time(result.start))} UTC for '
        f"{_e(_fmt(result.duration / 3600, digits=2))} h at {_e(_fmt(result.step, digits=0))} s steps; "
        f"seed {_e(result.seed)}; services: {_e(', '.join(result.services))}</p>",
    ]
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
    out.extend(_html_incidents(s))
    out.append("<h3>The whole run</h3>")
    out.append(_png(s.plot, f"{result.name}: the whole run", "overview"))
    out.append("<details><summary>agent timeline</summary>")
    out.append(f"<pre>{_e(format_timeline(result, AGENT, limit=None))}</pre>")
    out.append("</details>")
    out.append("</section>")
    return out


def _first(events: Sequence[Event], view: IncidentView, kind: str) -> str:
    """When the incident's first event of ``kind`` happened: a signal on its service from its onset
    on, an action of its own incidents (the window's margin and other incidents do not count)."""
    found = next(
        (
            e.time
            for e in events
            if e.kind == kind and e.time >= view.onset and (kind != "action" or e.incident in view.incidents)
        ),
        None,
    )
    return MISSING if found is None else wall_time(found, date=False)


def _faults_text(result: ScenarioResult, view: IncidentView) -> str:
    """The faults the incident answers, and those on its service still there from before it."""
    parts = [f"{result.faults[i].kind}: {result.faults[i].text}" for i in view.faults]
    for index, fault in enumerate(result.faults):
        removed = fault_end(result, index)
        if (
            index not in view.faults
            and fault.service == view.service
            and fault.start < view.onset
            and (removed is None or removed > view.onset)
        ):
            since = wall_time(fault.start, date=False)
            parts.append(f"{fault.kind}: {fault.text} (still there, since {since})")
    return "; ".join(parts) or "no fault"


def _html_incidents(s: _Scenario) -> list[str]:
    result, views = s.result, s.views
    if not views:
        return ['<h3>Incidents</h3><p class="muted">no incidents: no fault, and the agent did not act</p>']
    out = [
        "<h3>Incidents</h3>",
        '<table class="incidents"><tr><th>#</th><th>service</th><th>onset</th><th>first signal</th>'
        "<th>first action</th><th>fault removed</th><th>resolved</th><th>outcome</th></tr>",
    ]
    rows: list[list[Event]] = [_incident_events(result, view) for view in views]
    for n, (view, events) in enumerate(zip(views, rows, strict=True), start=1):
        removed = [r for i in view.faults if (r := fault_end(result, i)) is not None]
        cells = [
            f'<a href="#{_e(s.stem)}-incident-{n}">{n}</a>',
            _e(view.service),
            _e(wall_time(view.onset)),
            _e(_first(events, view, "signal")),
            _e(_first(events, view, "action")),
            _e(wall_time(max(removed), date=False) if removed and view.faults else MISSING),
            _e(MISSING if view.resolved is None else wall_time(view.resolved, date=False)),
            _e(_outcomes(result, view)),
        ]
        out.append(
            "<tr>"
            + "".join(
                f'<td class="time">{c}</td>' if i in {2, 3, 4, 5, 6} else f"<td>{c}</td>"
                for i, c in enumerate(cells)
            )
            + "</tr>"
        )
    out.append("</table>")
    if len(views) > len(s.zooms):
        out.append(
            f'<p class="muted">{len(views) - len(s.zooms)} more incidents are listed without a zoomed '
            "panel; the whole-run view and the timeline show them.</p>"
        )
    for n, (view, events) in enumerate(zip(views, rows, strict=True), start=1):
        out.extend(_html_incident(s, n, view, events))
    return out


def _html_incident(s: _Scenario, n: int, view: IncidentView, events: Sequence[Event]) -> list[str]:
    result = s.result
    out = [
        f'<article class="incident" id="{_e(s.stem)}-incident-{n}">',
        f"<h4>#{n} {_e(view.service)}: {_e(_faults_text(result, view))} &mdash; "
        f"{_e(_outcomes(result, view))}</h4>",
    ]
    if n <= len(s.zooms):
        out.append(_png(s.zooms[n - 1], f"incident {n} on {view.service}", "zoom"))
    run = result.runs.get(AGENT)
    records = {str(r.get("incident")): r for r in run.incidents} if run is not None else {}
    for ident in view.incidents:
        record = records.get(ident)
        if record is None:
            continue
        out.append(
            f'<details class="record" data-incident="{_e(ident)}"><summary>decision record of '
            f"{_e(ident)}</summary><pre>{_e(dumps_json(record))}</pre></details>"
        )
    if not any(ident in records for ident in view.incidents):
        out.append(
            f'<details class="record" data-incident="{_e(",".join(view.incidents))}"><summary>what happened '
            f"({len(events)} events)</summary>"
        )
        out.append("<table><tr><th>time (UTC)</th><th>kind</th><th>what</th></tr>")
        out.extend(
            f'<tr class="kind-{_e(e.kind)}"><td class="time">{_e(wall_time(e.time, date=False))}</td>'
            f'<td class="kind">{_e(e.kind)}</td><td>{_e(e.text)}</td></tr>'
            for e in events
        )
        out.append("</table></details>")
    out.append("</article>")
    return out
