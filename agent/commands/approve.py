"""``aiops approve ID`` / ``aiops reject ID`` / ``aiops approvals``: decide actions waiting for a person.

The executor keeps each action that needs approval as a JSON record in ``executor.approvals_dir``
(see :mod:`agent.approvals`); these commands write the decision into it, and the leader's executor
acts on it at its next tick. ``aiops approvals`` lists the records.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from pathlib import Path

from agent.approvals import DEFAULT_APPROVALS_DIR, ApprovalError, ApprovalStore

EXIT_OK = 0
EXIT_FAILURE = 1


def _directory(args: argparse.Namespace) -> Path:
    if args.dir is not None:
        return Path(args.dir)
    if args.config is not None:
        from agent.config import ConfigError, load_config  # noqa: PLC0415 - only with --config

        try:
            return Path(load_config(args.config).executor.approvals_dir)
        except ConfigError as exc:
            raise ApprovalError(str(exc)) from exc
    return DEFAULT_APPROVALS_DIR


def _by(args: argparse.Namespace) -> str:
    if args.by:
        return str(args.by)
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def decide(args: argparse.Namespace) -> int:
    """Approve or reject one pending action."""
    approve = args.command == "approve"
    try:
        store = ApprovalStore(_directory(args))
        record = store.decide(args.id, approve, _by(args), time.time(), args.reason or "")
    except ApprovalError as exc:
        print(f"aiops {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    request = record.request
    target = request.get("target") or {}
    print(
        f"{record.state.value}: {request.get('action')} on "
        f"{target.get('kind')}/{target.get('namespace')}/{target.get('name')} ({record.key})"
    )
    return EXIT_OK


def list_approvals(args: argparse.Namespace) -> int:
    """Print the approval records; say where they were looked for when no option said where."""
    try:
        directory = _directory(args)
        store = ApprovalStore(directory)
    except ApprovalError as exc:
        print(f"aiops approvals: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.dir is None and args.config is None:
        print(
            f"aiops approvals: looking in {directory}, the default; --config FILE reads the daemon's "
            "executor.approvals_dir, --dir DIR names one",
            file=sys.stderr,
        )
    records = [r for r in store.records() if args.all or r.state.value == "pending"]
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return EXIT_OK
    if not records:
        print(f"no {'' if args.all else 'pending '}approvals in {directory}")
    for r in records:
        target = r.request.get("target") or {}
        where = f"{target.get('kind')}/{target.get('namespace')}/{target.get('name')}"
        summary = r.plan.splitlines()[0] if r.plan else ""
        print(f"{r.id}  {r.state.value:9}  {r.request.get('action')} {where}  {summary}")
    return EXIT_OK


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, help="the approvals directory (default: from --config, else /tmp)")
    p.add_argument("--config", type=Path, help="the agent config (its executor.approvals_dir)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``approve``, ``reject`` and ``approvals``."""
    for name, verb in (("approve", "approve"), ("reject", "reject")):
        p = subparsers.add_parser(name, help=f"{verb} an action waiting for approval")
        p.add_argument("id", help="the approval id (aiops approvals lists them)")
        p.add_argument("--by", help="who decides (default: the login name)")
        p.add_argument("--reason", help="why, for the audit log")
        _common(p)
        p.set_defaults(func=decide)
    p = subparsers.add_parser("approvals", help="list actions waiting for approval")
    p.add_argument("--all", action="store_true", help="also decided and expired ones")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(func=list_approvals)
