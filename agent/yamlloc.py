"""YAML loading that remembers where every value came from, so errors can name file, line and column.

Used for the agent config, and for any other YAML the agent validates (playbooks, scenarios).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from agent.files import read_regular_file

M = TypeVar("M", bound=BaseModel)

#: Default ceiling on the nodes of one document counted with every alias expanded: far above any
#: real file, far below what a "billion laughs" alias bomb expands to.
MAX_NODES = 1_000_000
#: Default ceiling on the nesting depth of one document.
MAX_DEPTH = 500


@dataclass(frozen=True, slots=True)
class Location:
    """A 1-based line and column in a file."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class LocatedError:
    """One problem in a YAML file: where, which field, and what was expected."""

    location: Location
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.location}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "file": self.location.file,
            "line": self.location.line,
            "column": self.location.column,
            "field": self.field,
            "message": self.message,
        }


class YamlValidationError(Exception):
    """A YAML file failed to parse or validate; carries every located error."""

    def __init__(self, errors: Sequence[LocatedError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of silently keeping the last."""


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """One parsed YAML document: its plain data and its node tree for locating paths."""

    file: str
    data: Any
    node: yaml.Node | None

    def locate(self, path: Sequence[str | int]) -> Location:
        """The location of the deepest node along ``path`` (a missing part points at its parent)."""
        node = self.node
        for part in path:
            child = _child(node, part)
            if child is None:
                break
            node = child
        if node is None:
            return Location(self.file, 1, 1)
        mark = node.start_mark
        return Location(self.file, mark.line + 1, mark.column + 1)

    def locate_key(self, path: Sequence[str | int]) -> Location:
        """The location of the key named by the last element of ``path`` (for unknown fields)."""
        node = self.node
        for part in path[:-1]:
            node = _child(node, part)
            if node is None:
                return self.locate(path)
        if isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(path[-1]):
                    m = key_node.start_mark
                    return Location(self.file, m.line + 1, m.column + 1)
        return self.locate(path)


def _child(node: yaml.Node | None, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                return cast("yaml.Node", value_node)
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return cast("yaml.Node", node.value[part])
    return None


def _check_duplicates(file: str, node: yaml.Node | None, errors: list[LocatedError], path: str = "") -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, yaml.Mark] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            here = f"{path}.{key}" if path else key
            if key in seen:
                m = key_node.start_mark
                first = seen[key]
                errors.append(
                    LocatedError(
                        Location(file, m.line + 1, m.column + 1),
                        here,
                        f"duplicate key (first defined at line {first.line + 1})",
                    )
                )
            else:
                seen[key] = key_node.start_mark
            _check_duplicates(file, value_node, errors, here)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicates(file, item, errors, f"{path}[{i}]")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _measure(file: str, root: yaml.Node, max_nodes: int, max_depth: int) -> LocatedError | None:
    """Count ``root``'s nodes with aliases expanded, without expanding them (shared nodes are memoized).

    Returns an error for a recursive alias, a document that would expand past ``max_nodes`` nodes
    (an alias bomb), or one nested deeper than ``max_depth``; None when the document is fine.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size capped past the limit, depth)
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        nid = id(node)
        if done:
            on_path.discard(nid)
            kids = [sizes[id(c)] for c in _children(node)]
            size = min(1 + sum(k[0] for k in kids), max_nodes + 1)
            depth = 1 + max((k[1] for k in kids), default=0)
            sizes[nid] = (size, depth)
            if size > max_nodes or depth > max_depth:
                m = node.start_mark
                where = Location(file, m.line + 1, m.column + 1)
                what = (
                    f"document expands to more than {max_nodes} nodes (an alias bomb?); refused unexpanded"
                    if size > max_nodes
                    else f"document is nested deeper than {max_depth} levels"
                )
                return LocatedError(where, "", what)
            continue
        if nid in sizes:
            continue
        if nid in on_path:
            m = node.start_mark
            return LocatedError(Location(file, m.line + 1, m.column + 1), "", "recursive alias: refused")
        on_path.add(nid)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return None


def _mark_location(file: str, exc: BaseException) -> Location:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            return Location(file, mark.line + 1, mark.column + 1)
    return Location(file, 1, 1)


def parse_documents(
    text: str, file: str, *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH
) -> list[YamlDocument]:
    """Parse every document in ``text``; raise :class:`YamlValidationError` on syntax errors.

    Aliases are never expanded past ``max_nodes`` nodes per document, recursive aliases and nesting
    deeper than ``max_depth`` are refused: hostile input gets a located error, not a hang.
    """
    try:
        nodes = list(yaml.compose_all(text, Loader=_UniqueKeyLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        raise YamlValidationError([LocatedError(loc, "", f"invalid YAML: {exc.problem or exc}")]) from exc
    except yaml.YAMLError as exc:
        raise YamlValidationError([LocatedError(Location(file, 1, 1), "", f"invalid YAML: {exc}")]) from exc
    except RecursionError as exc:
        raise YamlValidationError(
            [LocatedError(Location(file, 1, 1), "", "invalid YAML: nested too deeply to parse")]
        ) from exc
    errors: list[LocatedError] = []
    docs = []
    for node in nodes:
        if node is not None:
            problem = _measure(file, node, max_nodes, max_depth)
            if problem is not None:
                raise YamlValidationError([problem])
        _check_duplicates(file, node, errors)
        loader = _UniqueKeyLoader("")
        try:
            data = loader.construct_document(node)
        except yaml.YAMLError as exc:
            problem_text = exc.problem if isinstance(exc, yaml.MarkedYAMLError) and exc.problem else exc
            raise YamlValidationError(
                [LocatedError(_mark_location(file, exc), "", f"invalid YAML: {problem_text}")]
            ) from exc
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            # a scalar the resolver accepted but Python refuses: a 13th month, an integer of 5000 digits
            raise YamlValidationError(
                [LocatedError(Location(file, 1, 1), "", f"invalid YAML value: {exc}")]
            ) from exc
        finally:
            loader.dispose()
        docs.append(YamlDocument(file, data, node))
    if errors:
        raise YamlValidationError(errors)
    return docs


def read_text(path: Path, *, max_bytes: int | None = None, file: str | None = None) -> str:
    """Read a UTF-8 regular file; missing, unreadable, not a regular file or (with ``max_bytes``)
    oversized is a located error.

    An oversized file is refused without reading past the limit. ``file`` names the file in errors
    (default: ``path``), for files read through a snapshot directory.
    """
    name = str(path) if file is None else file
    try:
        raw = read_regular_file(path, max_bytes)  # not a FIFO or a device: they would never end
        if max_bytes is not None and len(raw) > max_bytes:
            size = _file_size(path, len(raw))
            raise YamlValidationError([LocatedError(Location(name, 1, 1), "", _too_large(size, max_bytes))])
        return raw.decode("utf-8")
    except FileNotFoundError as exc:
        raise YamlValidationError([LocatedError(Location(name, 0, 0), "", "file not found")]) from exc
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, or a NUL in the path
        raise YamlValidationError([LocatedError(Location(name, 0, 0), "", f"cannot read: {exc}")]) from exc


def read_documents(
    path: Path,
    *,
    max_bytes: int | None = None,
    max_nodes: int = MAX_NODES,
    max_depth: int = MAX_DEPTH,
) -> list[YamlDocument]:
    """Read and parse a YAML file; a missing, unreadable or oversized file is a located error too.

    With ``max_bytes`` a larger file is refused before it is parsed (and never read past the limit).
    """
    text = read_text(path, max_bytes=max_bytes)
    return parse_documents(text, str(path), max_nodes=max_nodes, max_depth=max_depth)


def _file_size(path: Path, at_least: int) -> int:
    try:
        return max(path.stat().st_size, at_least)
    except OSError:
        return at_least


def _human_bytes(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} bytes"


def _too_large(size: int, limit: int) -> str:
    return f"file is {_human_bytes(size)}, larger than the {_human_bytes(limit)} limit; refused unread"


def too_large_error(file: str, size: int, limit: int) -> LocatedError:
    """The error for text of ``size`` bytes over a ``limit`` (for callers holding text, not a file)."""
    return LocatedError(Location(file, 1, 1), "", _too_large(size, limit))


def _field_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def field_path(loc: Iterable[str | int]) -> str:
    """``["spec", "actions", 0, "scale"]`` -> ``spec.actions[0].scale``, as errors name fields."""
    return _field_path(loc)


def pydantic_errors(
    doc: YamlDocument, exc: ValidationError, prefix: Sequence[str | int] = ()
) -> list[LocatedError]:
    """Turn a pydantic ValidationError over ``doc`` into located errors."""
    return located_errors(doc, exc.errors(include_url=False), prefix)


def located_errors(
    doc: YamlDocument, errors: Iterable[ErrorDetails], prefix: Sequence[str | int] = ()
) -> list[LocatedError]:
    """Turn pydantic error details over ``doc`` into located errors (callers may pre-filter them)."""
    out = []
    for err in errors:
        loc: list[str | int] = [*prefix, *err["loc"]]
        extra = err["type"] == "extra_forbidden"
        # pydantic puts tagged-union / function-validator names into loc; keep only real path parts
        # (for an unknown field the last part is the unknown key itself, which has no value node)
        real: list[str | int] = []
        node = doc.node
        for i, part in enumerate(loc):
            child = _child(node, part)
            if child is None and not (extra and i == len(loc) - 1):
                continue
            real.append(part)
            node = child
        if extra:
            where = doc.locate_key(real)
            message = "unknown field"
        elif err["type"] == "missing":
            where = doc.locate(real)
            message = "required field is missing"
            real = [*real, *[p for p in loc[len(real) :] if isinstance(p, str)][-1:]]
        else:
            where = doc.locate(real)
            message = err["msg"]
            if err["type"] not in {"value_error", "assertion_error"}:
                message += f" (got {err['input']!r})"
        out.append(LocatedError(where, _field_path(real), message))
    return out


def validate_document(doc: YamlDocument, model: type[M]) -> M:
    """Validate ``doc`` as ``model``; raise :class:`YamlValidationError` with located errors."""
    try:
        return model.model_validate(doc.data if doc.data is not None else {})
    except ValidationError as exc:
        raise YamlValidationError(pydantic_errors(doc, exc)) from exc
