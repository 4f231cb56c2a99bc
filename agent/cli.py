"""The ``aiops`` command line.

Exit codes: 0 success; 1 the agent could not work with what it found (a query Prometheus
rejects, a runtime failure); 2 invalid usage or an invalid config file.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.config import AgentConfig

#: Modules under agent/commands that each add subcommands: ``register(subparsers)`` adds a parser
#: whose ``func`` default is called with the parsed arguments and returns the exit code.
COMMAND_MODULES: tuple[str, ...] = (
    "agent.commands.detect",
    "agent.commands.nab",
    "agent.commands.forecast",
    "agent.commands.playbook",
    "agent.commands.approve",
    "agent.commands.incident",
    "agent.commands.replay",
    "agent.commands.twin",
    "agent.commands.rbac",
)

#: Commands that one module of :data:`COMMAND_MODULES` adds alone: running one of them loads only
#: that module (the others import the Kubernetes client, the simulator, ...).
SINGLE_COMMANDS: dict[str, str] = {
    "detect": "agent.commands.detect",
    "nab": "agent.commands.nab",
    "forecast": "agent.commands.forecast",
    "replay": "agent.commands.replay",
    "twin": "agent.commands.twin",
    "rbac": "agent.commands.rbac",
}

#: One-shot commands made to start and stop fast (docs/benchmarks.md, ``aiops detect`` start-up).
#: They do no matrix algebra (numba's loop, element-wise numpy), so numpy's OpenBLAS starts one
#: thread for them, not one per core (an OPENBLAS_NUM_THREADS already set wins); and once one has
#: written its output, the console script exits without the interpreter's garbage collections,
#: which would walk every object numba made only to free memory the process gives back anyway.
QUICK_COMMANDS: frozenset[str] = frozenset({"detect"})

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2

log = logging.getLogger("aiops.cli")


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``command`` alone when it is one of
    :data:`SINGLE_COMMANDS` (and the built-in ones)."""
    p = argparse.ArgumentParser(
        prog="aiops", description="Event-driven AIOps self-healing agent for Kubernetes."
    )
    p.add_argument("--version", action=_Version, help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent daemon")
    run.add_argument("--config", type=Path, required=True, help="the agent config YAML file")
    run.add_argument("--log-format", choices=["human", "json"], help="overrides log.format in the config")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="overrides log.level")
    run.add_argument(
        "--kubeconfig", type=Path, help="kubeconfig for the executor (default: in-cluster, then KUBECONFIG)"
    )

    config = sub.add_parser("config", help="work with config files")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    check = config_sub.add_parser("check", help="validate a config file without starting")
    check.add_argument("file", type=Path)
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    check.add_argument(
        "--offline",
        action="store_true",
        help="skip the checks of paths on this machine (a config for a pod, checked on a laptop)",
    )

    config_sub.add_parser(
        "reference", help="print the configuration reference (Markdown, from the config models)"
    )

    demo = sub.add_parser("demo", help="run the engine over generated samples and print the signals")
    demo.add_argument("--hours", type=float, default=2.0, help="how much generated time to run")
    demo.add_argument("--seed", type=int, default=7)

    single = SINGLE_COMMANDS.get(command or "")
    for module in COMMAND_MODULES if single is None else (single,):
        importlib.import_module(module).register(sub)
    return p


def version() -> str:
    """The installed package's version (``unknown`` when run from a tree that was never installed)."""
    import importlib.metadata  # noqa: PLC0415 - only --version reads the package metadata

    try:
        return importlib.metadata.version("aiops-agent")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class _Version(argparse.Action):
    """``--version``: looks the version up only when asked (argparse's own action takes it when
    the parser is built, on every run)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        sys.stdout.write(f"aiops {version()}\n")
        parser.exit()


def _cmd_config_check(args: argparse.Namespace) -> int:
    from agent.config import ConfigError, check_config  # noqa: PLC0415 - `aiops detect` needs no pydantic

    try:
        config = check_config(args.file, local=not args.offline)
    except ConfigError as exc:
        if args.json:
            print(
                json.dumps(
                    {"file": str(args.file), "valid": False, "errors": [e.to_dict() for e in exc.errors]}
                )
            )
        else:
            for err in exc.errors:
                print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        print(json.dumps({"file": str(args.file), "valid": True}))
    else:
        print(f"{args.file}: ok ({_summary(config)})")
    return EXIT_OK


def _summary(config: AgentConfig) -> str:
    parts = []
    if config.kafka_source_enabled and config.sources.kafka is not None:
        parts.append(f"kafka topics {','.join(config.sources.kafka.topics)}")
    if config.sources.prometheus is not None and config.sources.prometheus.enabled:
        parts.append(f"{len(config.sources.prometheus.queries)} prometheus queries")
    parts.append(f"{len(config.detectors)} detectors")
    return ", ".join(parts)


def _cmd_run(args: argparse.Namespace) -> int:
    from agent.app import Agent  # noqa: PLC0415 - keeps `aiops config check` light
    from agent.clock import WallClock  # noqa: PLC0415
    from agent.config import ConfigError, load_config  # noqa: PLC0415
    from agent.logs import setup_logging  # noqa: PLC0415
    from agent.sources.base import SourceStartupError  # noqa: PLC0415

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for err in exc.errors:
            print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    setup_logging(args.log_format or config.log.format, args.log_level or config.log.level)
    try:
        agent = Agent(config, WallClock(), kubeconfig=args.kubeconfig)
    except ConfigError as exc:  # a secret named in the config is missing from the environment
        for err in exc.errors:
            log.error("%s", err)
        return EXIT_INVALID
    agent.install_signal_handlers()
    port = agent.start_http()
    log.info("serving /metrics, /healthz, /readyz, /incidents on %s:%d", config.http.host, port)
    try:
        agent.run()
    except SourceStartupError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_FAILURE
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aiops`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in QUICK_COMMANDS and "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = _parser(argv[0] if argv else None).parse_args(argv)
    func = getattr(args, "func", None)
    if func is not None:
        return int(func(args))
    if args.command == "run":
        return _cmd_run(args)
    if args.command == "config" and args.config_command == "reference":
        from agent.config_reference import reference_markdown  # noqa: PLC0415

        sys.stdout.write(reference_markdown())
        return EXIT_OK
    if args.command == "config":
        return _cmd_config_check(args)
    if args.command == "demo":
        from agent.demo import run_demo  # noqa: PLC0415

        run_demo(sys.stdout, hours=args.hours, seed=args.seed)
        return EXIT_OK
    return EXIT_INVALID  # unreachable: argparse requires a command


def console() -> None:
    """Entry point of the ``aiops`` console script: :func:`main` on the command line, then exit
    with its code (for :data:`QUICK_COMMANDS`, with every object left frozen out of the
    collections of the interpreter's shutdown; their files are closed by then)."""
    argv = sys.argv[1:]
    code = main(argv)
    if argv and argv[0] in QUICK_COMMANDS:
        gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console()
