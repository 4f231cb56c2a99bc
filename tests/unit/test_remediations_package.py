"""The remediations package loads its names when first used: one of its leaf modules (the JSON
loader) comes without the Kubernetes client, and every public name still resolves."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import remediations


def test_every_public_name_is_where_the_package_says_and_resolves_to_it() -> None:
    where = remediations._WHERE
    assert sorted(where) == sorted(remediations.__all__)
    for name, module in where.items():
        assert getattr(remediations, name) is getattr(importlib.import_module(f"remediations.{module}"), name)
    assert set(remediations.__all__) <= set(dir(remediations))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'remediations' has no attribute 'Nothing'"):
        remediations.Nothing  # noqa: B018 - the access is the test


def test_the_json_loader_comes_without_the_kubernetes_client() -> None:
    script = (
        "import json, sys\n"
        "from remediations.jsontext import loads\n"
        "print(json.dumps(sorted(m for m in ('kubernetes', 'urllib3', 'pydantic') if m in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(done.stdout) == []
