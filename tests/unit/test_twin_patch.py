"""The twin's patch formats: RFC 6902 JSON patch, RFC 7386 merge patch, strategic merge patch."""

from __future__ import annotations

from typing import Any

import pytest

from simulations.twin.patch import PatchError, json_patch, merge_patch, strategic_merge_patch


def deployment() -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "annotations": {"a": "1"}, "finalizers": ["x"]},
        "spec": {
            "replicas": 2,
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "web:1",
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        },
                        {"name": "sidecar", "image": "proxy:1"},
                    ],
                    "tolerations": [{"key": "k"}],
                },
            },
        },
    }


# ---------------------------------------------------------------- RFC 6902


def test_json_patch_operations_apply_in_order():
    doc = deployment()
    patched = json_patch(
        doc,
        [
            {"op": "replace", "path": "/spec/replicas", "value": 5},
            {"op": "add", "path": "/metadata/annotations/b~1c", "value": "2"},
            {"op": "remove", "path": "/metadata/annotations/a"},
            {
                "op": "add",
                "path": "/spec/template/spec/containers/-",
                "value": {"name": "third", "image": "x"},
            },
            {"op": "copy", "from": "/spec/replicas", "path": "/spec/minReadySeconds"},
            {"op": "move", "from": "/metadata/finalizers", "path": "/metadata/kept"},
            {"op": "test", "path": "/spec/replicas", "value": 5},
        ],
    )
    assert patched["spec"]["replicas"] == 5
    assert patched["metadata"]["annotations"] == {"b/c": "2"}
    assert [c["name"] for c in patched["spec"]["template"]["spec"]["containers"]] == [
        "app",
        "sidecar",
        "third",
    ]
    assert patched["spec"]["minReadySeconds"] == 5
    assert "finalizers" not in patched["metadata"]
    assert patched["metadata"]["kept"] == ["x"]
    assert doc["spec"]["replicas"] == 2, "the original is untouched"


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "replace", "path": "/spec/missing", "value": 1}],
        [{"op": "remove", "path": "/metadata/nothing"}],
        [{"op": "test", "path": "/spec/replicas", "value": 3}],
        [{"op": "add", "path": "/spec/template/spec/containers/9", "value": {}}],
        [{"op": "frobnicate", "path": "/spec"}],
        {"op": "replace"},
    ],
)
def test_json_patch_errors(ops):
    with pytest.raises(PatchError):
        json_patch(deployment(), ops)


def test_json_patch_replace_whole_template_as_rollout_undo_does():
    template = {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "web:0"}]},
    }
    patched = json_patch(
        deployment(),
        [
            {"op": "replace", "path": "/spec/template", "value": template},
            {
                "op": "replace",
                "path": "/metadata/annotations",
                "value": {"deployment.kubernetes.io/revision": "1"},
            },
        ],
    )
    assert patched["spec"]["template"] == template
    assert patched["metadata"]["annotations"] == {"deployment.kubernetes.io/revision": "1"}


# ---------------------------------------------------------------- RFC 7386


def test_merge_patch_merges_objects_deletes_nulls_and_replaces_lists():
    patched = merge_patch(
        deployment(),
        {
            "metadata": {"annotations": {"a": None, "b": "2"}},
            "spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x"}]}}},
        },
    )
    assert patched["metadata"]["annotations"] == {"b": "2"}
    assert patched["spec"]["template"]["spec"]["containers"] == [{"name": "only", "image": "x"}]
    assert patched["spec"]["replicas"] == 2


def test_merge_patch_rfc7386_examples():
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert merge_patch({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}


# ---------------------------------------------------------------- strategic merge


def test_strategic_merge_merges_containers_by_name_and_env_by_name():
    patched = strategic_merge_patch(
        deployment(),
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "web:2",
                                "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                            }
                        ]
                    }
                }
            }
        },
    )
    containers = patched["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["app", "sidecar"]
    assert containers[0]["image"] == "web:2"
    assert containers[0]["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "20"},
        {"name": "C", "value": "3"},
    ]
    assert containers[1] == {"name": "sidecar", "image": "proxy:1"}


def test_strategic_merge_restart_annotation_as_kubectl_rollout_restart_sends_it():
    stamp = "2024-01-01T00:00:00Z"
    patched = strategic_merge_patch(
        deployment(),
        {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}},
    )
    assert patched["spec"]["template"]["metadata"] == {
        "labels": {"app": "web"},
        "annotations": {"kubectl.kubernetes.io/restartedAt": stamp},
    }


def test_strategic_merge_directives():
    doc = deployment()
    deleted = strategic_merge_patch(
        doc, {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}}
    )
    assert [c["name"] for c in deleted["spec"]["template"]["spec"]["containers"]] == ["app"]

    replaced = strategic_merge_patch(doc, {"metadata": {"annotations": {"$patch": "replace", "z": "9"}}})
    assert replaced["metadata"]["annotations"] == {"z": "9"}

    retained = strategic_merge_patch(doc, {"spec": {"$retainKeys": ["template"], "template": {}}})
    assert set(retained["spec"]) == {"template"}

    env_removed = strategic_merge_patch(
        doc,
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "app", "env": [{"name": "A", "$patch": "delete"}]}]}
                }
            }
        },
    )
    assert env_removed["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "B", "value": "2"}]

    finalizers = strategic_merge_patch(doc, {"metadata": {"finalizers": ["y"]}})
    assert finalizers["metadata"]["finalizers"] == ["x", "y"]
    without = strategic_merge_patch(doc, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}})
    assert without["metadata"]["finalizers"] == []

    ordered = strategic_merge_patch(
        doc,
        {
            "spec": {
                "template": {
                    "spec": {
                        "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                        "containers": [{"name": "app", "image": "web:3"}],
                    }
                }
            }
        },
    )
    assert [c["name"] for c in ordered["spec"]["template"]["spec"]["containers"]] == ["sidecar", "app"]


def test_strategic_merge_replaces_lists_without_merge_key_and_deletes_nulls():
    patched = strategic_merge_patch(
        deployment(),
        {
            "spec": {"template": {"spec": {"tolerations": [{"key": "other"}]}}},
            "metadata": {"annotations": None},
        },
    )
    assert patched["spec"]["template"]["spec"]["tolerations"] == [{"key": "other"}]
    assert "annotations" not in patched["metadata"]


def test_strategic_merge_requires_the_merge_key():
    with pytest.raises(PatchError):
        strategic_merge_patch(
            deployment(), {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}
        )
