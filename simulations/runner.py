"""``aiops replay``: validate every scenario first, replay each, print the timeline and scores.

Everything is checked before anything runs: the playbooks (file and line of each error), every
scenario (unknown services, playbooks or faults, colliding faults, trace gaps) — one bad file
and nothing is replayed. Then each scenario is replayed per policy with a progress bar on a
terminal, its timeline and the score table are printed, and with ``--report DIR`` the PNGs,
summary JSON and the HTML page are written.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from agent.config import AgentConfig, ConfigError, load_config
from agent.playbook.loader import PlaybookLoadError, PlaybookSet, load_paths
from agent.yamlloc import YamlValidationError
from simulations.jobs import Run, default_jobs, run_all
from simulations.limits import available_cores
from simulations.replay import SHIPPED_CONFIG, ReplayOptions, score_replay, steps_of
from simulations.result import POLICIES, PolicyRun
from simulations.scenario import Scenario, load_scenario
from simulations.seeds import SeedSummary, format_seeds, seeds_of, with_seed

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2

#: Where the shipped playbooks and scenarios live (the source tree, or the installed package).
ROOT = Path(__file__).resolve().parent.parent
SHIPPED_PLAYBOOKS = ROOT / "playbooks"
SHIPPED_SCENARIOS = Path(__file__).resolve().parent / "scenarios"
STATIC_PLAYBOOKS = Path(__file__).resolve().parent / "baselines" / "static-playbooks.yaml"


@dataclass(frozen=True, slots=True)
class RunSettings:
    """The command line, parsed."""

    scenarios: Sequence[Path]
    playbooks: Path | None = None
    config: Path | None = None
    """The agent's config file (detectors, guardrails); None: the shipped k8s/agent-config.yaml."""
    policies: Sequence[str] = POLICIES
    report: Path | None = None
    kafka: str | None = None
    metrics_port: int | None = None
    progress: bool | None = None
    """None: when stderr is a terminal."""
    timeline: bool = True
    seeds: int = 1
    """Replay every scenario with this many seeds (its own and the next ones)."""
    speed: float | None = None
    """None: as fast as it computes; else a factor of real time (60: an hour of scenario a minute)."""
    jobs: int | None = 1
    """Runs (scenario x seed x policy) side by side in this many processes; None: one per core (as
    memory allows), or one at a time when paced, serving metrics or going through Kafka.

    One by default here: worker processes are spawned, and a spawned process imports the caller's
    main module again, so a script that calls :func:`run` without an ``if __name__ ==
    "__main__":`` guard must not get them unasked. ``aiops replay`` asks (None)."""


def shipped_scenarios() -> list[str]:
    """The names of the shipped scenarios (``simulations/scenarios/NAME.yaml``), sorted."""
    return sorted(p.stem for p in SHIPPED_SCENARIOS.glob("*.yaml"))


def scenario_paths(paths: Sequence[Path]) -> list[Path]:
    """Files as given; directories expand to their ``*.yaml`` files (sorted); a name that is no file
    but a shipped scenario's name is that scenario. Raise ValueError naming an unknown one."""
    out: list[Path] = []
    for path in paths or [SHIPPED_SCENARIOS]:
        if path.is_dir():
            out.extend(sorted(path.glob("*.yaml")))
        elif path.exists():
            out.append(path)
        elif path.parent == Path() and (SHIPPED_SCENARIOS / f"{path.name}.yaml").is_file():
            out.append(SHIPPED_SCENARIOS / f"{path.name}.yaml")
        else:
            msg = (
                f"{path}: no such scenario file, and no shipped scenario of that name; "
                f"shipped: {', '.join(shipped_scenarios())}"
            )
            raise ValueError(msg)
    return out


def load_all(
    settings: RunSettings, err: TextIO
) -> tuple[AgentConfig, PlaybookSet, PlaybookSet, list[Scenario]] | None:
    """Load the agent config, the playbooks and every scenario; print every error, None if any."""
    try:
        config = load_config(settings.config or SHIPPED_CONFIG)
    except ConfigError as exc:
        for e in exc.errors:
            print(f"error: {e}", file=err)
        return None
    playbook_dir = settings.playbooks or SHIPPED_PLAYBOOKS
    try:
        playbooks = load_paths([playbook_dir])
        static = load_paths([STATIC_PLAYBOOKS])
    except PlaybookLoadError as exc:
        for e in exc.errors:
            print(f"error: {e}", file=err)
        return None
    names = [p.name for p in playbooks.playbooks]
    scenarios: list[Scenario] = []
    failed = False
    try:
        paths = scenario_paths(settings.scenarios)
    except ValueError as exc:
        print(f"error: {exc}", file=err)
        return None
    for path in paths:
        try:
            scenarios.append(load_scenario(path, playbook_names=names))
        except YamlValidationError as exc:
            failed = True
            for e in exc.errors:
                print(f"error: {e}", file=err)
    if not scenarios and not failed:
        print("error: no scenario files found", file=err)
        return None
    unknown = [p for p in settings.policies if p not in POLICIES]
    if unknown:
        print(f"error: --policies: unknown {unknown}; expected some of {list(POLICIES)}", file=err)
        return None
    return None if failed else (config, playbooks, static, scenarios)


def _paced(update: Callable[[int], object], step: float, speed: float | None) -> Callable[[int], None]:
    """The progress callback; with a ``speed``, it also holds each step to ``step / speed`` wall seconds.

    Pacing is for people watching a replay (dashboards on ``--prometheus-port``); the replay's
    own time is virtual either way.
    """
    started = time.monotonic()
    done = [0]

    def progress(n: int) -> None:
        update(n)
        done[0] += n
        if speed is not None:
            ahead = started + done[0] * step / speed - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)

    return progress


def jobs_for(settings: RunSettings, err: TextIO) -> int | None:
    """How many processes the runs go to; None (with the reason printed) when they cannot.

    A paced replay (``--speed``), one serving its metrics (``--prometheus-port``) or one going
    through a broker (``--kafka``) is watched or shares a port or topics: it runs one at a time.
    """
    one_at_a_time = [
        flag
        for flag, given in (
            ("--speed", settings.speed is not None),
            ("--prometheus-port", settings.metrics_port is not None),
            ("--kafka", settings.kafka is not None),
        )
        if given
    ]
    if settings.jobs is None:
        return 1 if one_at_a_time else default_jobs()
    if settings.jobs < 1:
        print(f"error: --jobs: expected at least 1, got {settings.jobs}", file=err)
        return None
    if settings.jobs > 1 and one_at_a_time:
        print(
            f"error: --jobs {settings.jobs}: a replay with {', '.join(one_at_a_time)} runs one run at "
            "a time (--jobs 1)",
            file=err,
        )
        return None
    cores = available_cores()
    if settings.jobs > cores:  # more processes than cores: no faster, only more memory
        print(f"note: --jobs {settings.jobs}: {cores} cores here, so {cores} processes", file=err)
        return cores
    return settings.jobs


def run(settings: RunSettings, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Replay every scenario; exit 0 when all expectations are met, 1 if not, 2 on invalid input.

    ``out`` and ``err`` default to the streams of the moment (``sys.stdout``, ``sys.stderr``).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    loaded = load_all(settings, err)
    if loaded is None:
        return EXIT_INVALID
    config, playbooks, static, scenarios = loaded
    try:
        seeded = [
            (index, scenario, seeds_of(scenario, settings.seeds)) for index, scenario in enumerate(scenarios)
        ]
    except ValueError as exc:  # seeds_of's bound
        print(f"error: --{exc}", file=err)
        return EXIT_INVALID
    jobs = jobs_for(settings, err)
    if jobs is None:
        return EXIT_INVALID
    show = err.isatty() if settings.progress is None else settings.progress
    runs = [
        Run((index, seed, policy), with_seed(scenario, seed), policy)
        for index, scenario, seeds in seeded
        for seed in seeds
        for policy in settings.policies
    ]
    total = sum(steps_of(run.scenario) for run in runs)
    options = ReplayOptions(
        playbooks,
        static,
        policies=settings.policies,
        kafka=settings.kafka,
        metrics_port=settings.metrics_port,
        config=config,
    )
    from tqdm import tqdm  # noqa: PLC0415 - only for the command line

    done: dict[tuple[int, int, str], PolicyRun] = {}
    with tqdm(total=total, disable=not show, file=err, unit="step", dynamic_ncols=True) as bar:
        if jobs == 1:
            for run in runs:
                bar.set_description(f"{run.scenario.name} seed {run.scenario.spec.seed} {run.policy}")
                done |= run_all([run], options, 1, _paced(bar.update, run.scenario.spec.step, settings.speed))
        else:
            bar.set_description(f"{len(runs)} runs on {min(jobs, len(runs))} processes")
            done = run_all(runs, options, jobs, bar.update)
    summaries = [
        SeedSummary(
            [
                score_replay(
                    with_seed(scenario, seed),
                    {policy: done[(index, seed, policy)] for policy in settings.policies},
                )
                for seed in seeds
            ]
        )
        for index, scenario, seeds in seeded
    ]
    from simulations.report import format_scores, format_timeline, write_report  # noqa: PLC0415

    # the timeline, table and report of each scenario's own seed; the spread over seeds after them
    results = [summary.results[0] for summary in summaries]
    for result in results:
        if settings.timeline and "agent" in result.runs:
            print(f"== {result.name}: {result.description}", file=out)
            print(format_timeline(result), file=out)
            print(file=out)
    print(format_scores(results), file=out)
    if settings.seeds > 1:
        print(f"\n{format_seeds(summaries)}", file=out)
    if settings.report is not None:
        files = write_report(results, settings.report)
        seeds_file = settings.report / "seeds.json"
        seeds_file.write_text(json.dumps([s.as_dict() for s in summaries], indent=2, sort_keys=True) + "\n")
        print(f"\nreport: {files.index} (seeds: {seeds_file})", file=out)
    return EXIT_OK if all(s.passed for s in summaries) else EXIT_FAILED
