"""k8s/Dockerfile, checked statically (no container engine here): what the image is and runs.

The build itself was rehearsed by hand without Docker (pip wheel in a clean venv, then an offline
install from the wheel directory); here: a pinned slim Python 3.11 base, a wheel built in one
stage and installed in the last, no compilers in the last stage, a numeric non-root user that is
the Deployment's, and the command and config path the Deployment and the CLI agree on.
"""

from __future__ import annotations

import json
import re
import shlex

import pytest

from tests.unit.test_k8s_support import K8S, Stage, dockerfile_stages, find, render_kustomization

DOCKERFILE = K8S / "Dockerfile"
PINNED_BASE = re.compile(r"^python:3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?$")
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|cc|make|cmake|python3-dev|libc6-dev|gfortran)\b")


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages(DOCKERFILE.read_text())[1]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"use the exec form (a JSON array), not {args!r}"
    return [str(v) for v in value]


def test_every_stage_uses_the_pinned_slim_python_311(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "multi-stage: build, then runtime"
    for stage in stages:
        assert PINNED_BASE.match(stage.base), f"{stage.base} is not a pinned python:3.11.x-slim image"


def test_the_wheel_is_built_first_and_installed_last(stages: list[Stage]) -> None:
    build, final = stages[0], stages[-1]
    assert build.alias
    assert any("pip wheel" in run for run in build.all("RUN"))
    installs = [run for run in final.all("RUN") if "pip install" in run]
    assert len(installs) == 1
    assert f"from={build.alias}" in installs[0]
    assert "--no-index" in installs[0], "the runtime installs only the built wheels"
    assert not final.all("ADD")
    for copy in final.all("COPY"):
        assert "--from" not in copy, "runtime copies nothing from the build stage; wheels are mounted"


def test_the_final_stage_has_no_compilers(stages: list[Stage]) -> None:
    final = stages[-1]
    for run in final.all("RUN"):
        if "apt-get" in run or "apk" in run:
            assert not COMPILERS.search(run), f"a compiler in the runtime stage: {run}"
    assert not COMPILERS.search(final.base)


def test_the_user_is_numeric_non_root_and_the_deployments(stages: list[Stage]) -> None:
    users = stages[-1].all("USER")
    assert users, "the runtime stage sets USER"
    user = users[-1]
    assert re.fullmatch(r"\d+(:\d+)?", user), "numeric USER, so runAsNonRoot can verify it"
    uid, _, gid = user.partition(":")
    assert int(uid) != 0
    assert not gid or int(gid) != 0
    pod = find(render_kustomization(K8S), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    if gid:
        assert pod["securityContext"]["runAsGroup"] == int(gid)


def test_the_command_is_the_deployments(stages: list[Stage]) -> None:
    final = stages[-1]
    entrypoint = exec_form(final.all("ENTRYPOINT")[-1])
    cmd = exec_form(final.all("CMD")[-1])
    assert [*entrypoint, *cmd] == ["aiops", "run", "--config", "/etc/aiops/config.yaml"]
    agent = find(render_kustomization(K8S), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert [*agent["command"], *agent["args"]] == [*entrypoint, *cmd]
    port = agent["ports"][0]["containerPort"]
    assert final.all("EXPOSE") == [str(port)]


def test_the_build_context_is_limited_to_the_sources() -> None:
    ignore = (K8S / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore
    copied = {
        token
        for keyword, args in (
            (k, a) for s in dockerfile_stages(DOCKERFILE.read_text())[1] for k, a in s.instructions
        )
        if keyword == "COPY" and "--from" not in args
        for token in shlex.split(args)[:-1]
    }
    for path in copied:
        assert f"!{path.rstrip('/')}/" in ignore or f"!{path}" in ignore, f"{path} is copied but ignored"
