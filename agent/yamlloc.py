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

M = TypeVar("M", bound=BaseModel)


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


def parse_documents(text: str, file: str) -> list[YamlDocument]:
    """Parse every document in ``text``; raise :class:`YamlValidationError` on syntax errors."""
    try:
        nodes = list(yaml.compose_all(text, Loader=_UniqueKeyLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        raise YamlValidationError([LocatedError(loc, "", f"invalid YAML: {exc.problem or exc}")]) from exc
    except yaml.YAMLError as exc:
        raise YamlValidationError([LocatedError(Location(file, 1, 1), "", f"invalid YAML: {exc}")]) from exc
    errors: list[LocatedError] = []
    docs = []
    for node in nodes:
        _check_duplicates(file, node, errors)
        loader = _UniqueKeyLoader("")
        try:
            data = loader.construct_document(node)
        except yaml.YAMLError as exc:
            raise YamlValidationError(
                [LocatedError(Location(file, 1, 1), "", f"invalid YAML: {exc}")]
            ) from exc
        finally:
            loader.dispose()
        docs.append(YamlDocument(file, data, node))
    if errors:
        raise YamlValidationError(errors)
    return docs


def read_documents(path: Path) -> list[YamlDocument]:
    """Read and parse a YAML file; a missing or unreadable file is a located error too."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise YamlValidationError([LocatedError(Location(str(path), 0, 0), "", "file not found")]) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise YamlValidationError(
            [LocatedError(Location(str(path), 0, 0), "", f"cannot read: {exc}")]
        ) from exc
    return parse_documents(text, str(path))


def _field_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def pydantic_errors(
    doc: YamlDocument, exc: ValidationError, prefix: Sequence[str | int] = ()
) -> list[LocatedError]:
    """Turn a pydantic ValidationError over ``doc`` into located errors."""
    out = []
    for err in exc.errors(include_url=False):
        loc: list[str | int] = [*prefix, *err["loc"]]
        # pydantic puts tagged-union / function-validator names into loc; keep only real path parts
        real: list[str | int] = []
        node = doc.node
        for part in loc:
            child = _child(node, part)
            if child is None and err["type"] != "extra_forbidden":
                continue
            real.append(part)
            node = child
        if err["type"] == "extra_forbidden":
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
