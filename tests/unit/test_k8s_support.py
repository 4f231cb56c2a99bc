"""Helpers of the k8s/ tests (this module holds no tests itself; its tests are in test_k8s_tools.py).

- :func:`render_kustomization`: a small kustomize for the subset ``k8s/`` uses (``resources``
  files and directories, ``configMapGenerator`` with ``files`` and ``options``, ``images``), with
  kustomize's ConfigMap name hash and the rewrite of generated names in pod specs. Anything else
  in a kustomization is refused, so the renderer cannot silently disagree with ``kubectl apply -k``
  (and where kubectl is installed a test compares the two outputs).
- :func:`promql_metric_names`: the metric names a PromQL expression selects, with functions,
  keywords, label names, strings, durations and Grafana variables left out.
- :func:`exported_metric_names`: the series names a Prometheus text exposition can produce.
- :func:`dockerfile_stages`: a Dockerfile's instructions per stage.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"

Obj = dict[str, Any]

# ---------------------------------------------------------------- kustomize (the subset k8s/ uses)

_KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "configMapGenerator", "images"}
_GENERATOR_FIELDS = {"name", "namespace", "files", "options"}
_OPTION_FIELDS = {"labels", "disableNameSuffixHash"}


class UnsupportedKustomizationError(ValueError):
    """The kustomization uses a feature this renderer does not implement."""


def load_yaml_documents(path: Path) -> list[Obj]:
    """The non-empty YAML documents of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _go_json(value: Any) -> str:
    """``encoding/json.Marshal`` of maps and strings: sorted keys, HTML characters escaped."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def configmap_hash(data: dict[str, str]) -> str:
    """Kustomize's name suffix for a generated ConfigMap (sha256 of its JSON, vowels mapped out).

    Kustomize hashes the ConfigMap before it is named, so the name in the encoding is empty.
    """
    encoded = _go_json({"data": data, "kind": "ConfigMap", "name": ""})
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _generate(directory: Path, spec: Obj) -> tuple[Obj, str | None]:
    """A ConfigMap from a configMapGenerator entry, and its name before hashing (None: not hashed)."""
    unknown = set(spec) - _GENERATOR_FIELDS
    options = spec.get("options") or {}
    unknown |= {f"options.{k}" for k in set(options) - _OPTION_FIELDS}
    if unknown:
        raise UnsupportedKustomizationError(f"configMapGenerator {spec.get('name')}: {sorted(unknown)}")
    data: dict[str, str] = {}
    for entry in spec.get("files") or []:
        key, _, source = str(entry).rpartition("=")
        path = (directory / source).resolve()
        if not path.is_relative_to(directory.resolve()):
            raise UnsupportedKustomizationError(f"{source} is outside the kustomization root {directory}")
        data[key or path.name] = path.read_text()
    name = str(spec["name"])
    meta: Obj = {"name": name}
    if "namespace" in spec:
        meta["namespace"] = spec["namespace"]
    if options.get("labels"):
        meta["labels"] = dict(options["labels"])
    hashed = not options.get("disableNameSuffixHash", False)
    if hashed:
        meta["name"] = f"{name}-{configmap_hash(data)}"
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}, (
        name if hashed else None
    )


def _pod_spec(obj: Obj) -> Obj | None:
    spec: Obj = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        return spec
    if obj.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    template = spec.get("template")
    found = template.get("spec") if isinstance(template, dict) else None
    return found if isinstance(found, dict) else None


def _rewrite_configmap_names(objects: list[Obj], renamed: dict[tuple[str, str], str]) -> None:
    """Point pod specs at the hashed names of generated ConfigMaps (kustomize's nameReference)."""
    for obj in objects:
        pod = _pod_spec(obj)
        if pod is None:
            continue
        namespace = str((obj.get("metadata") or {}).get("namespace") or "")

        def fix(ref: Obj | None, namespace: str = namespace) -> None:
            if isinstance(ref, dict) and (namespace, ref.get("name")) in renamed:
                ref["name"] = renamed[(namespace, str(ref["name"]))]

        for volume in pod.get("volumes") or []:
            fix(volume.get("configMap"))
            for source in (volume.get("projected") or {}).get("sources") or []:
                fix(source.get("configMap"))
        for container in [*(pod.get("containers") or []), *(pod.get("initContainers") or [])]:
            for env_from in container.get("envFrom") or []:
                fix(env_from.get("configMapRef"))
            for env in container.get("env") or []:
                fix((env.get("valueFrom") or {}).get("configMapKeyRef"))


def _set_images(objects: list[Obj], images: list[Obj]) -> None:
    for obj in objects:
        pod = _pod_spec(obj)
        for container in [*(pod or {}).get("containers", []), *(pod or {}).get("initContainers", [])]:
            ref = str(container.get("image", ""))
            name = re.split(r"[@]|:(?=[^/]*$)", ref, maxsplit=1)[0]
            for image in images:
                if image.get("name") != name:
                    continue
                unknown = set(image) - {"name", "newName", "newTag", "digest"}
                if unknown:
                    raise UnsupportedKustomizationError(f"images: {sorted(unknown)}")
                new = str(image.get("newName", name))
                if "digest" in image:
                    container["image"] = f"{new}@{image['digest']}"
                elif "newTag" in image:
                    container["image"] = f"{new}:{image['newTag']}"
                else:
                    container["image"] = new + ref[len(name) :]


def render_kustomization(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize DIRECTORY`` outputs (in resource order, not kustomize's)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text()) or {}
    unknown = set(kustomization) - _KUSTOMIZATION_FIELDS
    if unknown:
        raise UnsupportedKustomizationError(f"{directory}/kustomization.yaml: {sorted(unknown)}")
    objects: list[Obj] = []
    for entry in kustomization.get("resources") or []:
        path = (directory / entry).resolve()
        if not path.is_relative_to(directory.resolve()):
            raise UnsupportedKustomizationError(f"{entry} is outside the kustomization root {directory}")
        objects += render_kustomization(path) if path.is_dir() else load_yaml_documents(path)
    renamed: dict[tuple[str, str], str] = {}
    for spec in kustomization.get("configMapGenerator") or []:
        configmap, original = _generate(directory, spec)
        objects.append(configmap)
        if original is not None:
            renamed[(str(configmap["metadata"].get("namespace", "")), original)] = configmap["metadata"][
                "name"
            ]
    _rewrite_configmap_names(objects, renamed)
    _set_images(objects, kustomization.get("images") or [])
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        key = identity(obj)
        if key in seen:
            raise UnsupportedKustomizationError(f"{key} is defined twice")
        seen.add(key)
    return objects


def identity(obj: Obj) -> tuple[str, str, str]:
    """(kind, namespace, name) of an object."""
    meta = obj.get("metadata") or {}
    return str(obj.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name"))


def find(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    """The one object of ``kind`` (and ``name``); an AssertionError when there is not exactly one."""
    found = [o for o in objects if o.get("kind") == kind and (name is None or identity(o)[2] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# ---------------------------------------------------------------- PromQL


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: PromQL functions (Prometheus 3.x, the experimental ones included).
PROMQL_FUNCTIONS = _words(
    """
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp
    clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month
    deg delta deriv double_exponential_smoothing exp floor histogram_avg histogram_count
    histogram_fraction histogram_quantile histogram_stddev histogram_stdvar histogram_sum
    holt_winters hour idelta increase info irate label_join label_replace last_over_time ln log10
    log2 mad_over_time max_over_time min_over_time minute month pi predict_linear present_over_time
    quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_by_label
    sort_by_label_desc sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh time
    timestamp vector year
    """
)
PROMQL_AGGREGATIONS = _words(
    """
    sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio
    """
)
#: Keywords followed by a parenthesised list of label names.
PROMQL_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
PROMQL_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
PROMQL_MODIFIERS = frozenset({"start", "end"})  # @ start(), @ end()

_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_NUMBER = re.compile(r"(0x[0-9a-fA-F]+|[0-9]*\.?[0-9]+([eE][+-]?[0-9]+)?)[a-zA-Z0-9_]*")
_GRAFANA_VARIABLE = re.compile(r"\$(\{[^}]*\}|__[a-z_]+|[a-zA-Z_][a-zA-Z0-9_]*)")
_NAME_MATCHER = re.compile(r"__name__\s*(=~|!=|!~|=)\s*(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')")


class PromQLError(ValueError):
    """An expression this extractor cannot read with certainty."""


def _skip_string(expr: str, i: int) -> int:
    quote = expr[i]
    i += 1
    while i < len(expr) and expr[i] != quote:
        i += 2 if expr[i] == "\\" and quote != "`" else 1
    if i >= len(expr):
        raise PromQLError(f"unterminated string in {expr!r}")
    return i + 1


def _skip_to(expr: str, i: int, close: str) -> int:
    """The index after ``close``, skipping strings; ``expr[i]`` is the opening bracket."""
    i += 1
    while i < len(expr):
        if expr[i] in "\"'`":
            i = _skip_string(expr, i)
            continue
        if expr[i] == close:
            return i + 1
        i += 1
    raise PromQLError(f"no {close!r} to close the bracket in {expr!r}")


def promql_metric_names(expr: str, grafana: bool = False) -> set[str]:
    """The metric names selected by a PromQL expression (``grafana``: Grafana variables allowed)."""
    if grafana:
        expr = _GRAFANA_VARIABLE.sub("5m", expr)
    elif "$" in expr:
        raise PromQLError(f"a variable in a PromQL expression: {expr!r}")
    names: set[str] = set()
    i = 0
    while i < len(expr):
        char = expr[i]
        if char == "#":  # a comment, to the end of the line
            end = expr.find("\n", i)
            i = len(expr) if end < 0 else end
        elif char in "\"'`":
            i = _skip_string(expr, i)
        elif char == "[":
            i = _skip_to(expr, i, "]")
        elif char == "{":
            end = _skip_to(expr, i, "}")
            for op, value in _NAME_MATCHER.findall(expr[i:end]):
                if op != "=":
                    raise PromQLError(f"a __name__ matcher other than '=' in {expr!r}")
                names.add(value[1:-1])
            i = end
        elif char.isdigit() or (char == "." and expr[i + 1 : i + 2].isdigit()):
            match = _NUMBER.match(expr, i)
            assert match is not None
            i = match.end()
        elif (match := _IDENT.match(expr, i)) is not None:
            word = match.group()
            i = match.end()
            rest = expr[i:].lstrip()
            called = rest.startswith("(")
            lowered = word.lower()
            if lowered in PROMQL_LABEL_LISTS:
                if called:
                    i = _skip_to(expr, len(expr) - len(rest), ")")
            elif lowered in PROMQL_KEYWORDS or lowered in PROMQL_AGGREGATIONS:
                pass  # an aggregation is a keyword in PromQL, also before `by (...)`
            elif called:
                if word not in PROMQL_FUNCTIONS | PROMQL_AGGREGATIONS | PROMQL_MODIFIERS:
                    raise PromQLError(f"unknown function {word!r} in {expr!r}")
            else:
                names.add(word)
        else:
            i += 1
    return names


def grafana_query_metric_names(query: str) -> set[str]:
    """Metric names of a Grafana Prometheus query: PromQL, or ``label_values(...)`` of a variable."""
    stripped = query.strip()
    match = re.fullmatch(r"label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)", stripped, re.DOTALL)
    if match:
        return promql_metric_names(match.group(1), grafana=True)
    if re.fullmatch(r"label_values\(\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)", stripped):
        return set()
    return promql_metric_names(stripped, grafana=True)


# ---------------------------------------------------------------- exposition

_SERIES_BY_TYPE = {
    "counter": ("", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("",),
    "stateset": ("",),
    "untyped": ("",),
    "unknown": ("",),
}


def exported_metric_names(text: str) -> dict[str, str]:
    """Every series name the exposition can hold, with its family's type.

    A labelled metric with no child yet has only its ``# TYPE`` line, so names come from those
    lines (a counter's TYPE name carries ``_total``; ``_created`` is derived from it) as well as
    from the samples present.
    """
    names: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            base = name.removesuffix("_total") if kind == "counter" else name
            for suffix in _SERIES_BY_TYPE.get(kind, ("",)):
                series = name if kind == "counter" and suffix == "" else base + suffix
                names.setdefault(series, kind)
        elif line and not line.startswith("#"):
            match = _IDENT.match(line)
            if match is not None:
                names.setdefault(match.group(), "sample")
    return names


# ---------------------------------------------------------------- Dockerfile


@dataclass
class Stage:
    """One build stage: its base, its alias, and its instructions as (KEYWORD, arguments)."""

    base: str
    alias: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """The arguments of every ``keyword`` instruction of the stage."""
        return [args for word, args in self.instructions if word == keyword]


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        out.append((keyword.upper(), args.strip()))
        current = ""
    if current:
        raise ValueError("the Dockerfile ends inside a continued line")
    return out


def dockerfile_stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """The global ``ARG`` defaults, and the stages with ``${ARG}`` in ``FROM`` resolved."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in dockerfile_instructions(text):
        if keyword == "FROM":
            parts = [p for p in rest.split() if not p.startswith("--")]
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, alias))
        elif not stages:
            if keyword == "ARG" and "=" in rest:
                name, _, value = rest.partition("=")
                args[name.strip()] = value.strip().strip('"')
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages
