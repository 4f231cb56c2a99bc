"""``aiops approve ID`` / ``aiops reject ID`` / ``aiops approvals``: decide actions waiting for a person.

The executor keeps each action that needs approval as a record in its approval store (see
:mod:`agent.approvals`): ConfigMaps in the agent's namespace (``executor.approvals.store:
configmap``), or files in ``executor.approvals_dir``. These commands write the decision into the
same store, from any replica or from a laptop with a kubeconfig, and the executor acts on it at its
next tick. ``aiops approvals`` lists the records.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from agent.approvals import (
    DEFAULT_APPROVALS_DIR,
    ApprovalError,
    ApprovalStore,
    ConfigMapStore,
    DirectoryStore,
    open_store,
)

if TYPE_CHECKING:
    from remediations.kube import KubeClients

EXIT_OK = 0
EXIT_FAILURE = 1


def _connect(kubeconfig: Path | None, context: str | None) -> KubeClients:
    from kubernetes.config.config_exception import ConfigException  # noqa: PLC0415 - only for ConfigMaps

    from remediations.kube import connect  # noqa: PLC0415

    try:
        return connect(kubeconfig, context=context)
    except ConfigException as exc:
        msg = f"cannot load a Kubernetes configuration (in-cluster, --kubeconfig, KUBECONFIG): {exc}"
        raise ApprovalError(msg) from exc


def _store(args: argparse.Namespace) -> ApprovalStore:
    """The store the options name: ``--dir``; ``--namespace`` (ConfigMaps); the ``--config``'s
    ``executor.approvals``; else the default directory."""
    if args.dir is not None:
        return DirectoryStore(Path(args.dir))
    if args.config is None:
        if args.namespace is None:
            return DirectoryStore(DEFAULT_APPROVALS_DIR)
        return ConfigMapStore(_connect(args.kubeconfig, args.context), args.namespace)
    from agent.config import ConfigError, load_config  # noqa: PLC0415 - only with --config

    try:
        executor = load_config(args.config).executor
    except ConfigError as exc:
        raise ApprovalError(str(exc)) from exc
    if args.namespace is not None:
        executor = executor.model_copy(
            update={"approvals": executor.approvals.model_copy(update={"namespace": args.namespace})}
        )
    if executor.approvals.store == "directory":
        return open_store(executor, None, os.environ)
    kube = _connect(args.kubeconfig or executor.kubeconfig, args.context or executor.context)
    return open_store(executor, kube, os.environ)


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
        store = _store(args)
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
        store = _store(args)
        records = [r for r in store.records() if args.all or r.state.value == "pending"]
    except ApprovalError as exc:
        print(f"aiops approvals: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    where = store.directory if isinstance(store, DirectoryStore) else store.where
    if args.dir is None and args.config is None and args.namespace is None:
        print(
            f"aiops approvals: looking in {where}, the default; --config FILE reads the daemon's "
            "executor.approvals, --dir DIR or --namespace NS names one",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return EXIT_OK
    if not records:
        print(f"no {'' if args.all else 'pending '}approvals in {where}")
    for r in records:
        target = r.request.get("target") or {}
        place = f"{target.get('kind')}/{target.get('namespace')}/{target.get('name')}"
        summary = r.plan.splitlines()[0] if r.plan else ""
        print(f"{r.id}  {r.state.value:9}  {r.request.get('action')} {place}  {summary}")
    return EXIT_OK


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, help="an approvals directory (default: from --config, else /tmp)")
    p.add_argument("--config", type=Path, help="the agent config (its executor.approvals)")
    p.add_argument("--namespace", help="the approval ConfigMaps in this namespace (overrides the config's)")
    p.add_argument(
        "--kubeconfig", type=Path, help="for ConfigMaps: kubeconfig (default: in-cluster, KUBECONFIG)"
    )
    p.add_argument("--context", help="for ConfigMaps: kubeconfig context")


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
