"""Loading playbooks: many files, many documents per file, every error located.

Each error names the file, line and column, the field path and what was expected. Besides what
the models check, the loader refuses at load time: unknown template variables, actions that cannot
act on the target's kind, literal names that are not Kubernetes names, scale counts outside the
playbook's own bounds, and two playbooks with one name (across all files of a set).

Hostile input is bounded: files over :data:`MAX_FILE_BYTES` are refused unread, documents that
expand past :data:`MAX_NODES` nodes (alias bombs) or nest deeper than :data:`MAX_DEPTH` are
refused unexpanded, and YAML is parsed with the safe loader only (no tags that build objects).
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from agent.playbook.actions import (
    ACTIONS,
    LOAD_CONTEXT,
    ActionParams,
    ScaleParams,
    kubernetes_names,
    target_kinds,
)
from agent.playbook.models import UNKNOWN_ACTION, Playbook, Trigger
from agent.playbook.templating import (
    NameKind,
    Scope,
    Template,
    TemplateError,
    format_number,
    kubernetes_name_problem,
    parse_template,
    render_name,
)
from agent.yamlloc import (
    LocatedError,
    Location,
    YamlDocument,
    YamlValidationError,
    field_path,
    located_errors,
    parse_documents,
    read_text,
    too_large_error,
)
from detectors.patterns import Pattern, compile_pattern
from detectors.signal import Signal, SignalKind
from remediations.types import Target

#: A playbook file larger than this is refused unread.
MAX_FILE_BYTES = 1 << 20
#: All files of one set together.
MAX_TOTAL_BYTES = 8 << 20
#: Files in one set.
MAX_FILES = 500
#: Nodes of one document, aliases expanded.
MAX_NODES = 50_000
#: Nesting depth of one document.
MAX_DEPTH = 40

#: File names the loader reads from a directory.
SUFFIXES = (".yaml", ".yml")


class PlaybookLoadError(YamlValidationError):
    """A set of playbooks failed to load; carries every located error."""


@dataclass(frozen=True, slots=True)
class Absence:
    """A ``when: withoutSignal`` condition, compiled: its place in ``when`` and what it looks for."""

    index: int
    kind: SignalKind
    metric: Pattern
    within: float

    def matches(self, signal: Signal) -> bool:
        """Whether ``signal`` is of the kind and metric that must be absent."""
        return signal.kind is self.kind and bool(self.metric.fullmatch(signal.metric))


@dataclass(frozen=True, slots=True)
class LoadedPlaybook:
    """A validated playbook with its origin and its compiled matchers and target templates."""

    model: Playbook
    file: str
    line: int
    kinds: frozenset[SignalKind]
    metric: Pattern | None
    matchers: tuple[tuple[str, Pattern], ...]
    target_namespace: Template
    target_name: Template
    absences: tuple[Absence, ...] = ()
    """The ``withoutSignal`` conditions of ``when``: the engine remembers their signals per target."""

    @property
    def name(self) -> str:
        """The playbook's name."""
        return self.model.metadata.name

    @property
    def priority(self) -> int:
        """Higher acts first on a shared target."""
        return self.model.spec.priority

    def matches(self, signal: Signal) -> bool:
        """Whether ``signal`` has the trigger's kind, metric and labels (the score is checked apart)."""
        if signal.kind not in self.kinds:
            return False
        if self.metric is not None and not self.metric.fullmatch(signal.metric):
            return False
        labels = signal.series.labels
        for name, pattern in self.matchers:
            value = next((v for k, v in labels if k == name), "")
            if not pattern.fullmatch(value):
                return False
        return True

    def resolve_target(self, signal: Signal) -> Target:
        """The target this signal points at; TemplateError when a value is missing or not a name."""
        ctx = signal_context(signal, self.name)
        namespace = render_name(self.target_namespace, ctx, NameKind.LABEL, "target namespace")
        name = render_name(self.target_name, ctx, NameKind.SUBDOMAIN, "target name")
        return Target(self.model.spec.target.kind, namespace, name)


def signal_context(signal: Signal, playbook: str) -> dict[str, str]:
    """The template variables a signal provides."""
    ctx = {f"labels.{k}": v for k, v in signal.series.labels}
    ctx.update(
        {
            "signal.kind": signal.kind.value,
            "signal.metric": signal.metric,
            "signal.value": format_number(signal.value),
            "signal.score": format_number(signal.score),
            "signal.detector": signal.detector,
            "signal.timestamp": format_number(signal.timestamp),
            "playbook.name": playbook,
        }
    )
    return ctx


@dataclass(frozen=True, slots=True)
class PlaybookSet:
    """The playbooks loaded together, highest priority first, with a digest of their sources."""

    playbooks: tuple[LoadedPlaybook, ...]
    digest: str
    files: tuple[str, ...]
    warnings: tuple[LocatedError, ...] = ()
    """What loads but looks wrong: a template label the trigger does not ask signals for."""

    def __len__(self) -> int:
        return len(self.playbooks)

    def __iter__(self) -> Iterator[LoadedPlaybook]:
        return iter(self.playbooks)

    @property
    def names(self) -> list[str]:
        """The playbook names, in priority order."""
        return [p.name for p in self.playbooks]

    def get(self, name: str) -> LoadedPlaybook | None:
        """The playbook called ``name``."""
        return next((p for p in self.playbooks if p.name == name), None)


EMPTY_SET = PlaybookSet((), hashlib.sha256(b"").hexdigest(), ())


def digest_of(sources: Sequence[tuple[str, str]]) -> str:
    """A content hash of a set of (name, text) sources, independent of their order."""
    h = hashlib.sha256()
    for name, text in sorted(sources):
        data = text.encode("utf-8", "surrogatepass")
        h.update(f"{len(name)}:{name}:{len(data)}:".encode("utf-8", "surrogatepass"))
        h.update(data)
    return h.hexdigest()


def find_files(paths: Sequence[Path]) -> tuple[list[Path], list[LocatedError]]:
    """The playbook files among ``paths``: files as given, directories' ``*.yaml``/``*.yml``.

    Directories are read one level deep, skipping hidden entries, so a ConfigMap mount's ``..data``
    and timestamped directories are not read twice.
    """
    files: list[Path] = []
    errors: list[LocatedError] = []
    for path in paths:
        if path.is_dir():
            try:
                entries = sorted(path.iterdir())
            except OSError as exc:
                errors.append(LocatedError(Location(str(path), 0, 0), "", f"cannot list: {exc}"))
                continue
            files.extend(
                e for e in entries if not e.name.startswith(".") and e.name.endswith(SUFFIXES) and e.is_file()
            )
        elif path.exists():
            files.append(path)
        else:
            errors.append(LocatedError(Location(str(path), 0, 0), "", "file not found"))
    return files, errors


def read_sources(
    paths: Sequence[Path], *, max_file_bytes: int = MAX_FILE_BYTES, max_total_bytes: int = MAX_TOTAL_BYTES
) -> list[tuple[str, str]]:
    """Read the playbook files among ``paths`` as (name, text); PlaybookLoadError on any problem."""
    files, errors = find_files(paths)
    if len(files) > MAX_FILES:
        where = Location(str(paths[0]) if paths else "", 0, 0)
        raise PlaybookLoadError([LocatedError(where, "", f"{len(files)} files, more than {MAX_FILES}")])
    sources: list[tuple[str, str]] = []
    total = 0
    for f in files:
        try:
            text = read_text(f, max_bytes=max_file_bytes)
        except YamlValidationError as exc:
            errors.extend(exc.errors)
            continue
        total += len(text)
        if total > max_total_bytes:
            errors.append(too_large_error(str(f), total, max_total_bytes))
            break
        sources.append((str(f), text))
    if errors:
        raise PlaybookLoadError(errors)
    return sources


def load_paths(paths: Sequence[Path]) -> PlaybookSet:
    """Load every playbook in ``paths`` (files or directories) as one set."""
    return load_sources(read_sources(paths))


def load_sources(sources: Sequence[tuple[str, str]], *, max_file_bytes: int = MAX_FILE_BYTES) -> PlaybookSet:
    """Load (name, text) sources as one set; raise :class:`PlaybookLoadError` with every error."""
    errors: list[LocatedError] = []
    warnings: list[LocatedError] = []
    loaded: list[LoadedPlaybook] = []
    first: dict[str, Location] = {}
    for file, text in sources:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > max_file_bytes:
            errors.append(too_large_error(file, size, max_file_bytes))
            continue
        try:
            docs = parse_documents(text, file, max_nodes=MAX_NODES, max_depth=MAX_DEPTH)
        except YamlValidationError as exc:
            errors.extend(exc.errors)
            continue
        for doc in docs:
            if doc.data is None:
                continue  # an empty document between two `---`
            playbook, problems = _validate(doc)
            if playbook is None:
                errors.extend(problems)
                continue
            here = doc.locate(["metadata", "name"])
            if playbook.name in first:
                seen = first[playbook.name]
                msg = f"duplicate playbook name {playbook.name!r} (first defined at {seen})"
                errors.append(LocatedError(here, "metadata.name", msg))
                continue
            first[playbook.name] = here
            loaded.append(_compile(playbook, doc))
            warnings.extend(_label_warnings(doc, playbook))
    if errors:
        raise PlaybookLoadError(errors)
    loaded.sort(key=lambda p: (-p.priority, p.name))
    return PlaybookSet(tuple(loaded), digest_of(sources), tuple(f for f, _ in sources), tuple(warnings))


def required_labels(trigger: Trigger) -> frozenset[str]:
    """The labels every matching signal has a value for: those ``match`` requires with a pattern
    that does not accept the empty string (a missing label matches as ""), and ``alertname`` when
    the trigger takes only alerts."""
    required = {name for name, pattern in trigger.match.items() if not compile_pattern(pattern).fullmatch("")}
    if set(trigger.signal) == {SignalKind.ALERT}:
        required.add("alertname")
    return frozenset(required)


def _label_warnings(doc: YamlDocument, playbook: Playbook) -> list[LocatedError]:
    """Each ``{{ labels.X }}`` (target and action templates) that the trigger does not require."""
    required = required_labels(playbook.spec.trigger)
    found: list[LocatedError] = []
    places: list[tuple[list[str | int], str, Scope]] = [
        (["spec", "target", part], text, Scope.TARGET)
        for part in ("namespace", "name")
        if isinstance(text := _raw_at(doc.data, ["spec", "target", part]), str)
    ]
    for section in ("actions", "onFailure"):
        steps = _raw_at(doc.data, ["spec", section])
        for i, step in enumerate(steps if isinstance(steps, list) else []):
            if isinstance(step, dict) and len(step) == 1:
                action = next(iter(step))
                base: list[str | int] = ["spec", section, i, action]
                places.extend(
                    ([*base, *sub], value, Scope.ACTION)
                    for sub, value in _strings(_raw_at(doc.data, base), [])
                )
    for path, text, scope in places:
        try:
            used = parse_template(text, scope).variables
        except TemplateError:
            continue  # reported as an error already
        for label in dict.fromkeys(v.removeprefix("labels.") for v in used if v.startswith("labels.")):
            if label in required:
                continue
            hint = difflib.get_close_matches(label, sorted(required), n=1)
            advice = (
                f"did you mean {hint[0]!r}?"
                if hint
                else f'add it to trigger.match with a pattern that needs a value, like {label}: ".+"'
            )
            msg = (
                f"label {label!r} is not one the trigger requires ({', '.join(sorted(required)) or 'none'}): "
                f"a matching signal without it cannot fill this template; {advice}"
            )
            found.append(LocatedError(doc.locate(path), field_path(path), msg))
    return found


def _validate(doc: YamlDocument) -> tuple[Playbook | None, list[LocatedError]]:
    if not isinstance(doc.data, dict):
        found = type(doc.data).__name__
        msg = f"expected a Playbook: a mapping with apiVersion, kind, metadata and spec; got {found}"
        return None, [LocatedError(doc.locate([]), "", msg)]
    problems = _content_errors(doc)
    try:
        playbook = Playbook.model_validate(doc.data, context=dict(LOAD_CONTEXT))
    except ValidationError as exc:
        problems = _model_errors(doc, exc.errors(include_url=False)) + problems
        playbook = None
    if playbook is not None:
        problems += _bounds_errors(doc, playbook)
    unique = sorted(set(problems), key=lambda e: (e.location.line, e.location.column, e.field))
    return (None, unique) if unique else (playbook, [])


def _model_errors(doc: YamlDocument, details: list[ErrorDetails]) -> list[LocatedError]:
    out: list[LocatedError] = []
    plain: list[ErrorDetails] = []
    for err in details:
        if err["type"] == UNKNOWN_ACTION:
            out.append(_unknown_action(doc, list(err["loc"]), err["input"]))
        else:
            plain.append(err)
    for e in located_errors(doc, plain):
        message = e.message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        out.append(LocatedError(e.location, e.field, message))
    out.sort(key=lambda e: (e.location.line, e.location.column))
    return out


def _unknown_action(doc: YamlDocument, loc: list[str | int], value: Any) -> LocatedError:
    names = ", ".join(ACTIONS)
    if isinstance(value, dict) and len(value) == 1:
        key = next(iter(value))
        hint = difflib.get_close_matches(str(key), list(ACTIONS), n=1)
        msg = f"unknown action {key!r}; expected one of: {names}"
        if hint:
            msg += f" (did you mean {hint[0]!r}?)"
        return LocatedError(doc.locate_key([*loc, str(key)]), field_path([*loc, str(key)]), msg)
    if isinstance(value, dict):
        keys = ", ".join(str(k) for k in value) or "none"
        msg = f"a step names exactly one action (like `- restart: {{}}`), found keys: {keys}"
        return LocatedError(doc.locate(loc), field_path(loc), msg)
    msg = f"expected a step naming one action, like `- restart: {{}}`; got {type(value).__name__}"
    return LocatedError(doc.locate(loc), field_path(loc), msg)


class _Report(Protocol):
    def __call__(self, path: list[str | int], message: str, *, key: bool = False) -> None: ...


def _content_errors(doc: YamlDocument) -> list[LocatedError]:
    """Checks on the raw document that the models cannot make: templates, names, action vs kind.

    They run whether or not the models accept the document, so one pass reports every problem.
    """
    errors: list[LocatedError] = []

    def error(path: list[str | int], message: str, *, key: bool = False) -> None:
        where = doc.locate_key(path) if key else doc.locate(path)
        errors.append(LocatedError(where, field_path(path), message))

    for part, kind in (("namespace", NameKind.LABEL), ("name", NameKind.SUBDOMAIN)):
        path: list[str | int] = ["spec", "target", part]
        text = _raw_at(doc.data, path)
        if not isinstance(text, str):
            continue  # the model reports a missing or mistyped field
        try:
            template = parse_template(text, Scope.TARGET)
        except TemplateError as exc:
            error(path, str(exc))
            continue
        if template.is_literal:
            problem = kubernetes_name_problem(text, kind)
            if problem is not None:
                error(path, f"{text!r} {problem}")
    target_kind = _raw_at(doc.data, ["spec", "target", "kind"])
    for section in ("actions", "onFailure"):
        steps = _raw_at(doc.data, ["spec", section])
        if isinstance(steps, list):
            for i, step in enumerate(steps):
                _check_step(doc.data, section, i, step, target_kind, error)
    return errors


def _check_step(data: Any, section: str, index: int, step: Any, target_kind: Any, error: _Report) -> None:
    if not (isinstance(step, dict) and len(step) == 1):
        return  # the model reports a malformed step
    action = next(iter(step))
    params = ACTIONS.get(action) if isinstance(action, str) else None
    if params is None:
        return  # the model reports an unknown action
    base: list[str | int] = ["spec", section, index, action]
    kinds = target_kinds(params)
    if isinstance(target_kind, str) and kinds is not None and target_kind not in kinds:
        works_on = ", ".join(sorted(kinds))
        error(base, f"{action} cannot act on a {target_kind}; it works on: {works_on}", key=True)
    for sub, value in _strings(_raw_at(data, base), []):
        try:
            template = parse_template(value, Scope.ACTION)
        except TemplateError as exc:
            error([*base, *sub], str(exc))
            continue
        if template.is_literal and len(sub) == 1 and sub[0] in kubernetes_names(params):
            problem = kubernetes_name_problem(value, NameKind.SUBDOMAIN)
            if problem is not None:
                error([*base, *sub], f"{value!r} {problem}")


def _bounds_errors(doc: YamlDocument, playbook: Playbook) -> list[LocatedError]:
    """A fixed scale count outside the playbook's own replica bounds can never run."""
    errors: list[LocatedError] = []
    g = playbook.spec.guardrails
    for section, steps in (("actions", playbook.spec.actions), ("onFailure", playbook.spec.on_failure)):
        for i, step in enumerate(steps):
            params = step.params
            if not isinstance(params, ScaleParams) or params.replicas is None:
                continue
            path: list[str | int] = ["spec", section, i, "scale", "replicas"]
            where = doc.locate(path)
            if g.max_replicas is not None and params.replicas > g.max_replicas:
                msg = f"{params.replicas} is above guardrails.maxReplicas {g.max_replicas}"
                errors.append(LocatedError(where, field_path(path), msg))
            if g.min_replicas is not None and params.replicas < g.min_replicas:
                msg = f"{params.replicas} is below guardrails.minReplicas {g.min_replicas}"
                errors.append(LocatedError(where, field_path(path), msg))
    return errors


def _raw_at(data: Any, path: Sequence[str | int]) -> Any:
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return None
    return data


def _strings(value: Any, path: list[str | int]) -> Iterator[tuple[list[str | int], str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, [*path, str(k)])
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, [*path, i])


def _compile(playbook: Playbook, doc: YamlDocument) -> LoadedPlaybook:
    trigger = playbook.spec.trigger
    target = playbook.spec.target
    return LoadedPlaybook(
        model=playbook,
        file=doc.file,
        line=doc.locate([]).line,
        kinds=frozenset(trigger.signal),
        metric=compile_pattern(trigger.metric) if trigger.metric is not None else None,
        matchers=tuple((k, compile_pattern(v)) for k, v in sorted(trigger.match.items())),
        target_namespace=parse_template(target.namespace, Scope.TARGET),
        target_name=parse_template(target.name, Scope.TARGET),
        absences=tuple(
            Absence(
                i, c.without_signal.signal, compile_pattern(c.without_signal.metric), c.without_signal.within
            )
            for i, c in enumerate(playbook.spec.when)
            if c.without_signal is not None
        ),
    )


def render_params(loaded: LoadedPlaybook, params: ActionParams, context: Mapping[str, str]) -> dict[str, Any]:
    """An action's parameters with every template substituted; Kubernetes names checked.

    Raises TemplateError when a variable is missing or a name parameter renders to a bad name.
    """
    data = params.model_dump(by_alias=True, exclude_none=True, mode="json")
    names = set(kubernetes_names(params))

    def walk(value: Any, key: str | None) -> Any:
        if isinstance(value, str):
            template = parse_template(value, Scope.ACTION)
            if key in names:
                return render_name(template, context, NameKind.SUBDOMAIN, f"{key} of {loaded.name}")
            return template.render(context)
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, None) for v in value]
        return value

    rendered = walk(data, None)
    assert isinstance(rendered, dict)
    return rendered
