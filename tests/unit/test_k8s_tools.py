"""The helpers the k8s/ tests rely on are right: PromQL names, exposition names, kustomize, Dockerfile."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.test_k8s_support import (
    K8S,
    PromQLError,
    UnsupportedKustomizationError,
    configmap_hash,
    dockerfile_stages,
    exported_metric_names,
    grafana_query_metric_names,
    identity,
    promql_metric_names,
    render_kustomization,
)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('absent(aiops_x{job="a"})', {"aiops_x"}),
        ("sum by (namespace, le) (rate(aiops_a_bucket[5m]))", {"aiops_a_bucket"}),
        (
            "sum(rate(aiops_a_total[5m])) by (job) / ignoring(x) group_left(y) aiops_b",
            {"aiops_a_total", "aiops_b"},
        ),
        ("time() - aiops_t > 120", {"aiops_t"}),
        ('aiops_x{reason="rate(fake_metric)", by="{"} offset 5m', {"aiops_x"}),
        ("histogram_quantile(0.99, sum without (pod) (rate(a:b:c[1h:5m])))", {"a:b:c"}),
        ('{__name__="aiops_named", job="j"} and on() vector(1)', {"aiops_named"}),
        ("aiops_a unless bool aiops_b or aiops_c @ end()", {"aiops_a", "aiops_b", "aiops_c"}),
        ("1e3 * 0x1f + .5 - inf + nan", set()),
        ('count_values("v", aiops_v) # sum(commented_out)\n', {"aiops_v"}),
        ("max_over_time(aiops_g[10m])[1h:] ", {"aiops_g"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


@pytest.mark.parametrize(
    "expr",
    ["ratee(aiops_x[5m])", 'aiops_x{job="open', '{__name__=~"aiops_.*"}', "rate(x[$__rate_interval])"],
)
def test_promql_metric_names_refuses_what_it_cannot_read(expr: str) -> None:
    with pytest.raises(PromQLError):
        promql_metric_names(expr)


def test_grafana_queries() -> None:
    assert grafana_query_metric_names('sum(rate(aiops_a_total{pod=~"$pod"}[$__rate_interval]))') == {
        "aiops_a_total"
    }
    assert grafana_query_metric_names('label_values(aiops_t{job="a"}, namespace)') == {"aiops_t"}
    assert grafana_query_metric_names("label_values(namespace)") == set()


def test_exported_names_include_labelled_metrics_without_samples() -> None:
    text = """\
# HELP aiops_a_total A
# TYPE aiops_a_total counter
# HELP aiops_g G
# TYPE aiops_g gauge
aiops_g 1.0
# TYPE aiops_h histogram
aiops_h_bucket{le="+Inf"} 0.0
aiops_h_count 0.0
aiops_h_sum 0.0
"""
    names = exported_metric_names(text)
    assert {"aiops_a_total", "aiops_a_created", "aiops_g", "aiops_h_bucket", "aiops_h_sum"} <= set(names)
    assert "aiops_a" not in names
    assert "aiops_h" not in names


def test_configmap_hash_is_kustomizes() -> None:
    # `kubectl kustomize` names a generator `foo` with files [a.txt] holding "hi\n" foo-5484kbgg2f
    assert configmap_hash({"a.txt": "hi\n"}) == "5484kbgg2f"
    assert configmap_hash({"a.txt": "hi!\n"}) != "5484kbgg2f"


def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("namespace: other\nresources: []\n")
    with pytest.raises(UnsupportedKustomizationError, match="namespace"):
        render_kustomization(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("configMapGenerator:\n- name: x\n  files: [../escape]\n")
    with pytest.raises(UnsupportedKustomizationError, match="outside"):
        render_kustomization(tmp_path)


def test_renderer_matches_kubectl_kustomize() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the Python renderer is checked by the other tests only")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    theirs = {identity(o): o for o in yaml.safe_load_all(result.stdout) if o}
    ours = {identity(o): o for o in render_kustomization(K8S)}
    assert sorted(ours) == sorted(theirs)
    for key, obj in ours.items():
        assert obj == theirs[key], key


def test_dockerfile_parser() -> None:
    text = """\
# syntax=docker/dockerfile:1
ARG BASE=python:3.11.9-slim
FROM ${BASE} AS build
RUN a \\
    # a comment inside
    && b
FROM --platform=linux/amd64 $BASE
USER 1000
CMD ["x"]
"""
    args, stages = dockerfile_stages(text)
    assert args == {"BASE": "python:3.11.9-slim"}
    assert [(s.base, s.alias) for s in stages] == [
        ("python:3.11.9-slim", "build"),
        ("python:3.11.9-slim", None),
    ]
    assert stages[0].all("RUN") == ["a  && b"]
    assert stages[1].all("USER") == ["1000"]
