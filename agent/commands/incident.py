"""``aiops incident list`` / ``aiops incident show ID``: why the agent acted, from its decision records.

The records come from a running daemon (``--url http://host:port``: its ``/incidents``) or from an
audit file (``--audit FILE``: the records published there, folded by the same code the daemon
uses, :func:`agent.decisions.records_from_lines`).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.decisions import MAX_LIST, newest_first, records_from_lines, summary
from remediations.jsontext import loads as loads_json

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2

#: The most bytes read from one answer of a daemon.
MAX_ANSWER = 16 * 1024 * 1024
#: Seconds to wait for a daemon.
TIMEOUT = 10.0


class SourceError(Exception):
    """The records could not be read: says from where and why."""


def _time(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fetch(url: str, path: str) -> Any:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        msg = f"--url: expected http://host:port, got {url!r}"
        raise SourceError(msg)
    full = url.rstrip("/") + path
    try:
        with urllib.request.urlopen(full, timeout=TIMEOUT) as answer:  # noqa: S310 - scheme checked above
            body = answer.read(MAX_ANSWER + 1)
    except urllib.error.HTTPError as exc:
        detail = exc.read(4096).decode(errors="replace").strip()
        msg = f"{full}: HTTP {exc.code} {detail}"
        raise SourceError(msg) from exc
    except (urllib.error.URLError, OSError) as exc:
        msg = f"{full}: cannot connect: {exc}"
        raise SourceError(msg) from exc
    if len(body) > MAX_ANSWER:
        msg = f"{full}: answer over {MAX_ANSWER} bytes"
        raise SourceError(msg)
    try:
        return loads_json(body)
    except ValueError as exc:
        msg = f"{full}: not JSON ({exc})"
        raise SourceError(msg) from exc


def _from_file(path: Path) -> dict[str, dict[str, Any]]:
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            return records_from_lines(fh)
    except OSError as exc:
        msg = f"--audit {path}: {exc.strerror or exc}"
        raise SourceError(msg) from exc


def list_incidents(args: argparse.Namespace) -> int:
    """Print the newest incidents, one line each."""
    try:
        if args.url:
            rows = _fetch(args.url, f"/incidents?limit={args.limit}").get("incidents", [])
        else:
            rows = [summary(r) for r in newest_first(_from_file(args.audit).values())[: args.limit]]
    except SourceError as exc:
        print(f"aiops incident list: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return EXIT_OK
    for r in rows:
        target = r.get("target") or {}
        where = f"{target.get('kind')}/{target.get('namespace')}/{target.get('name')}"
        actions = ", ".join(r.get("actions") or []) or "no action"
        print(
            f"{r.get('incident')}  {_time(r.get('opened'))}  {r.get('state'):10}  {r.get('playbook')}  "
            f"{where}  {actions}  {r.get('why') or ''}".rstrip()
        )
    return EXIT_OK


def show_incident(args: argparse.Namespace) -> int:
    """Print one incident's record."""
    try:
        if args.url:
            record = _fetch(args.url, "/incidents/" + urllib.parse.quote(args.id, safe=""))
        else:
            found = _from_file(args.audit).get(args.id)
            if found is None:
                msg = f"--audit {args.audit}: no record of incident {args.id}"
                raise SourceError(msg)
            record = found
    except SourceError as exc:
        print(f"aiops incident show: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(record, indent=2, sort_keys=True))
    else:
        print("\n".join(render(record)))
    return EXIT_OK


def _guardrail(g: Mapping[str, Any]) -> str:
    name = g.get("name")
    if "used" in g:
        limit = "no limit" if g.get("limit") is None else g.get("limit")
        scope = "; ".join(x for x in (g.get("counts"), f"{g.get('class')}, from {g.get('source')}") if x)
        value = f"{g['used']} of {limit} ({scope})"
    elif name == "cooldown":
        value = f"{g.get('remaining', 0):.0f}s remaining of {g.get('limit', 0):.0f}s"
    elif "value" in g:
        value = str(g["value"])
        if g.get("mode"):
            value += f" (gitops: {g['mode']})"
    else:
        value = ", ".join(
            f"{k} {_time(v) if k.startswith('last') else v}" for k, v in g.items() if k not in {"name", "ok"}
        )
    return f"  {'ok  ' if g.get('ok', True) else 'HELD'}  {name}: {value}"


def _indent(text: str, pad: str) -> Iterable[str]:
    return (pad + line for line in text.splitlines())


def render(r: Mapping[str, Any]) -> list[str]:
    """A record for people to read."""
    target = r.get("target") or {}
    out = [
        f"incident {r.get('incident')}: {r.get('playbook')} on "
        f"{target.get('kind')}/{target.get('namespace')}/{target.get('name')}",
        f"state: {r.get('state')}  opened {_time(r.get('opened'))}  closed {_time(r.get('closed'))}",
    ]
    rule = r.get("rule") or {}
    if rule:
        terms = ", ".join(f"{k} {v}" for k, v in rule.items())
        out.append(f"rule: {terms} (priority {r.get('priority')}, {r.get('class')}, from {r.get('source')})")
    signals = r.get("signals") or []
    out.append(f"signals ({r.get('signalsSeen', len(signals))} matched, {len(signals)} kept):")
    for s in signals:
        labels = ",".join(f"{k}={v}" for k, v in sorted((s.get("labels") or {}).items()))
        out.append(
            f"  {_time(s.get('time'))}  {s.get('kind')} {s.get('metric')}{{{labels}}} "
            f"by {s.get('detector')}: {s.get('why')}"
        )
    if r.get("guardrails"):
        out.append("guardrails:")
        out += [_guardrail(g) for g in r["guardrails"]]
    if r.get("holds"):
        out.append("held:")
        out += [f"  {_time(h.get('time'))}  {h.get('guardrail')}: {h.get('reason')}" for h in r["holds"]]
    if r.get("actions"):
        out.append("actions:")
    for a in r.get("actions") or []:
        out.append(f"  {a.get('step')} {a.get('action')}: {a.get('status') or 'no outcome yet'}")
        if a.get("message"):
            out.append(f"    {a['message']}")
        if a.get("diff"):
            out.append("    diff:")
            out += _indent(a["diff"], "      ")
        elif a.get("plan"):
            out.append("    plan:")
            out += _indent(a["plan"], "      ")
        decided = ", ".join(
            f"{d.get('decision')}{' by ' + d['guardrail'] if d.get('guardrail') else ''}"
            for d in a.get("decisions") or []
        )
        if decided:
            out.append(f"    executor: {decided}")
    v = r.get("verification")
    if v:
        out.append(f"verification: {v.get('result')} at {_time(v.get('time'))}: {v.get('reason')}")
        for e in v.get("evidence") or []:
            fresh = e.get("freshSamples")
            state = "stale" if e.get("stale") else f"{fresh} fresh samples ({e.get('need')} needed)"
            out.append(f"  {e.get('series')}: {state}, last seen {_time(e.get('lastSeen'))}")
    out.append("timeline:")
    for t in r.get("timeline") or []:
        out.append(f"  {_time(t.get('time'))}  {t.get('from')} -> {t.get('to')}: {t.get('reason')}")
    if r.get("dropped"):
        out.append(f"(bounded: dropped {r['dropped']})")
    return out


def _limit(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_LIST:
        msg = f"expected 1 to {MAX_LIST}, got {value}"
        raise argparse.ArgumentTypeError(msg)
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``incident list`` and ``incident show``."""
    p = subparsers.add_parser("incident", help="why the agent acted: decision records of incidents")
    sub = p.add_subparsers(dest="incident_command", required=True, metavar="SUBCOMMAND")
    listing = sub.add_parser("list", help="the newest incidents, one line each")
    listing.add_argument("--limit", type=_limit, default=20, help=f"how many (1-{MAX_LIST}, default 20)")
    show = sub.add_parser("show", help="one incident's decision record")
    show.add_argument("id", help="the incident id (aiops incident list shows them)")
    for q in (listing, show):
        where = q.add_mutually_exclusive_group(required=True)
        where.add_argument("--url", help="a running daemon, http://host:port (its /incidents)")
        where.add_argument("--audit", type=Path, help="an audit file (executor.audit_file)")
        q.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=list_incidents)
    show.set_defaults(func=show_incident)
