"""``aiops playbook``: validate, explain, test, schema, status.

Exit codes: 0 valid / healthy; 1 invalid playbooks, invalid signals, or a rejected reload;
2 an invalid ``--config``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_BAD_CONFIG = 2


def register(sub: Any) -> None:
    """Add ``aiops playbook ...`` to the CLI's subparsers."""
    p = sub.add_parser("playbook", help="validate, explain, test and inspect playbooks")
    psub = p.add_subparsers(dest="playbook_command", required=True, metavar="SUBCOMMAND")

    v = psub.add_parser(
        "validate",
        help="check playbook files; exit 0 when all are valid (warnings included), 1 otherwise",
    )
    v.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="playbook files or directories")
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(func=_cmd_validate)

    e = psub.add_parser("explain", help="say in plain words what a playbook does")
    e.add_argument("file", type=Path, metavar="FILE")
    e.add_argument("--name", help="only the playbook with this name")
    e.add_argument("--config", type=Path, help="the agent config, for its guardrail defaults")
    e.set_defaults(func=_cmd_explain)

    t = psub.add_parser(
        "test", help="feed recorded signals through the playbooks and show which actions would run"
    )
    t.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="playbook files or directories")
    t.add_argument("--signals", type=Path, required=True, metavar="FILE.jsonl", help="recorded signals")
    t.add_argument("--config", type=Path, help="the agent config, for its guardrail defaults")
    t.add_argument(
        "--fail", action="append", default=[], metavar="ACTION", help="pretend this action fails (repeatable)"
    )
    t.add_argument("--json", action="store_true", help="print events and actions as JSON")
    t.set_defaults(func=_cmd_test)

    s = psub.add_parser("schema", help="print the playbook JSON Schema")
    s.set_defaults(func=_cmd_schema)

    st = psub.add_parser("status", help="show the daemon's playbook reload status")
    where = st.add_mutually_exclusive_group()
    where.add_argument("--file", type=Path, help="the status file (default: the config's, else the default)")
    where.add_argument("--config", type=Path, help="the agent config naming the status file")
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    st.set_defaults(func=_cmd_status)


def _print_errors(errors: list[Any]) -> None:
    for err in errors:
        print(f"error: {err}", file=sys.stderr)


def _cmd_validate(args: argparse.Namespace) -> int:
    from agent.playbook.loader import PlaybookLoadError, load_paths  # noqa: PLC0415 - keep the CLI light

    try:
        loaded = load_paths(args.paths)
    except PlaybookLoadError as exc:
        if args.json:
            print(json.dumps({"valid": False, "errors": [e.to_dict() for e in exc.errors]}, indent=2))
        else:
            _print_errors(exc.errors)
            print(f"{len(exc.errors)} error(s)", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        playbooks = [{"name": p.name, "file": p.file, "line": p.line} for p in loaded]
        warnings = [w.to_dict() for w in loaded.warnings]
        print(
            json.dumps(
                {"valid": True, "digest": loaded.digest, "playbooks": playbooks, "warnings": warnings},
                indent=2,
            )
        )
    else:
        for p in loaded:
            print(f"ok: {p.file}:{p.line}: {p.name}")
        for w in loaded.warnings:
            print(f"warning: {w}", file=sys.stderr)
        files, warned = len(loaded.files), len(loaded.warnings)
        print(f"{len(loaded)} playbook(s) valid in {files} file(s), {warned} warning(s)")
    return EXIT_OK


def _defaults(config: Path | None) -> tuple[Any, int]:
    """The guardrail defaults of ``config`` (None without one), or an exit code for a bad config."""
    if config is None:
        return None, EXIT_OK
    from agent.config import ConfigError, load_config  # noqa: PLC0415
    from agent.playbook.settings import PlaybooksConfig  # noqa: PLC0415

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        _print_errors(exc.errors)
        return None, EXIT_BAD_CONFIG
    section = getattr(cfg, "playbooks", None)
    return (section.guardrails if isinstance(section, PlaybooksConfig) else None), EXIT_OK


def _cmd_explain(args: argparse.Namespace) -> int:
    from agent.playbook.explain import explain  # noqa: PLC0415
    from agent.playbook.loader import PlaybookLoadError, load_paths  # noqa: PLC0415

    defaults, code = _defaults(args.config)
    if code != EXIT_OK:
        return code
    try:
        loaded = load_paths([args.file])
    except PlaybookLoadError as exc:
        _print_errors(exc.errors)
        return EXIT_INVALID
    chosen = [p for p in loaded if args.name is None or p.name == args.name]
    if not chosen:
        print(f"error: no playbook named {args.name!r} in {args.file}", file=sys.stderr)
        return EXIT_INVALID
    print("\n".join(explain(p, defaults) for p in sorted(chosen, key=lambda p: p.line)), end="")
    return EXIT_OK


def _cmd_test(args: argparse.Namespace) -> int:
    from agent.playbook.loader import PlaybookLoadError, load_paths  # noqa: PLC0415
    from agent.playbook.rehearsal import format_rehearsal, parse_records, rehearse  # noqa: PLC0415
    from agent.yamlloc import YamlValidationError, read_text  # noqa: PLC0415

    defaults, code = _defaults(args.config)
    if code != EXIT_OK:
        return code
    try:
        loaded = load_paths(args.paths)
        records = parse_records(read_text(args.signals, max_bytes=256 << 20), str(args.signals))
    except (PlaybookLoadError, YamlValidationError) as exc:
        _print_errors(exc.errors)
        return EXIT_INVALID
    result = rehearse(loaded, records, defaults=defaults, fail=frozenset(args.fail))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        print(format_rehearsal(result), end="")
    return EXIT_OK


def _cmd_schema(args: argparse.Namespace) -> int:
    from agent.playbook.schema import schema_text  # noqa: PLC0415

    sys.stdout.write(schema_text())
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    from agent.playbook.engine import iso_time  # noqa: PLC0415
    from agent.playbook.settings import DEFAULT_STATUS_FILE, PlaybooksConfig  # noqa: PLC0415
    from agent.playbook.watcher import read_status  # noqa: PLC0415

    path = args.file or DEFAULT_STATUS_FILE
    if args.config is not None:
        from agent.config import ConfigError, load_config  # noqa: PLC0415

        try:
            section = getattr(load_config(args.config), "playbooks", None)
        except ConfigError as exc:
            _print_errors(exc.errors)
            return EXIT_BAD_CONFIG
        if isinstance(section, PlaybooksConfig):
            path = section.status_file
    try:
        status = read_status(path)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read the playbook status {path}: {exc}", file=sys.stderr)
        print(
            "(the daemon writes it when playbooks.directory is set; run this where it runs)", file=sys.stderr
        )
        return EXIT_INVALID
    if args.json:
        print(json.dumps(status.to_dict(), indent=2, sort_keys=True))
        return EXIT_OK if status.healthy else EXIT_INVALID
    print(f"directory: {status.directory}")
    if status.digest is None:
        print("running:   no valid set loaded yet")
    else:
        loaded_at = iso_time(status.loaded_at) if status.loaded_at is not None else "?"
        print(f"running:   set {status.digest[:12]} loaded {loaded_at}: {len(status.playbooks)} playbook(s)")
        for name in status.playbooks:
            print(f"           - {name}")
    if status.checked_at is not None:
        print(f"checked:   {iso_time(status.checked_at)}")
    if status.healthy:
        print("state:     ok, the directory holds the running set")
        return EXIT_OK
    rejected_at = iso_time(status.rejected_at) if status.rejected_at is not None else "?"
    rejected = str(status.rejected_digest)[:12]
    print(f"state:     REJECTED set {rejected} at {rejected_at}, {len(status.errors)} error(s):")
    for err in status.errors:
        field = f"{err['field']}: " if err.get("field") else ""
        print(f"  {err.get('file')}:{err.get('line')}:{err.get('column')}: {field}{err.get('message')}")
    return EXIT_INVALID
