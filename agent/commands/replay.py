"""``aiops replay``: replay incident scenarios against a twin cluster and score the agent.

The command line only; the replay itself is :mod:`simulations.runner`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _speed(text: str) -> str:
    if text == "max":
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        msg = f"expected 'max' or a positive factor of real time, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return text


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"expected a whole number of at least 1, got {text[:40]!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _seeds(text: str) -> int:
    from simulations.seeds import MAX_SEEDS  # noqa: PLC0415 - heavy imports only for this command

    value = _positive(text)
    if value > MAX_SEEDS:
        msg = f"expected at most {MAX_SEEDS} seeds, got {value}"
        raise argparse.ArgumentTypeError(msg)
    return value


def run(args: argparse.Namespace) -> int:
    """Execute ``aiops replay``; returns the exit code."""
    from simulations.runner import RunSettings  # noqa: PLC0415 - heavy imports only for this command
    from simulations.runner import run as run_replay  # noqa: PLC0415

    settings = RunSettings(
        scenarios=args.scenarios,
        playbooks=args.playbooks,
        config=args.config,
        policies=tuple(p.strip() for p in args.policies.split(",") if p.strip()),
        report=args.report,
        kafka=args.kafka,
        metrics_port=args.prometheus_port,
        progress=False if args.no_progress else None,
        timeline=not args.no_timeline,
        speed=None if args.speed == "max" else float(args.speed),
        seeds=args.seeds,
        jobs=args.jobs,
    )
    return run_replay(settings)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``replay`` subcommand."""
    p = subparsers.add_parser(
        "replay",
        help="replay incident scenarios against a simulated cluster and score the agent",
        description=(
            "Replay each SCENARIO (a file, a directory of *.yaml, or the name of a shipped scenario such "
            "as bad-rollout; default: every shipped scenario) "
            "closed-loop against a twin Kubernetes cluster on virtual time: the agent's detectors, "
            "playbook engine and executor act on it through the Kubernetes API, and the same scenario "
            "is replayed with the baselines (no agent, static thresholds, the HPA). Prints the timeline "
            "and a score table; exit 0 when every scenario's expectations are met, 1 if not, 2 on "
            "invalid scenarios or playbooks."
        ),
    )
    p.add_argument("scenarios", nargs="*", type=Path, metavar="SCENARIO")
    p.add_argument(
        "--playbooks", type=Path, metavar="DIR", help="playbook directory (default: the shipped ones)"
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="the agent config whose detectors and guardrails the agent runs with "
        "(default: the shipped k8s/agent-config.yaml; its dry run and approval mode are ignored)",
    )
    p.add_argument(
        "--policies",
        default="agent,none,static,hpa",
        help="comma-separated policies to replay (default: agent,none,static,hpa)",
    )
    p.add_argument(
        "--seeds",
        type=_seeds,
        default=5,
        metavar="N",
        help="replay each scenario with N seeds (its own and the next N-1) and show each policy's "
        "mean and range (default: 5, at most 1000); a scenario passes when every seed meets its expectations",
    )
    p.add_argument(
        "--jobs",
        type=_positive,
        metavar="N",
        help="make the runs (each scenario x seed x policy) in N processes side by side (default: one "
        "per core; one at a time with --speed, --kafka or --prometheus-port); the scores do not "
        "depend on it",
    )
    p.add_argument(
        "--speed",
        type=_speed,
        default="max",
        help="'max' (default: as fast as it computes) or a factor of real time, e.g. 60 = an hour a minute",
    )
    p.add_argument(
        "--kafka", metavar="BOOTSTRAP", help="publish metrics to this broker; the agent consumes them"
    )
    p.add_argument(
        "--prometheus-port", type=int, metavar="N", help="also serve the simulated metrics at :N/metrics"
    )
    p.add_argument("--report", type=Path, metavar="DIR", help="write PNGs, summary JSON and index.html here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-timeline", action="store_true", help="print only the score table")
    p.set_defaults(func=run)
