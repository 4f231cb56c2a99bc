"""Discovery documents: ``/version``, ``/api``, ``/apis``, and the resource list of each group version."""

from __future__ import annotations

from simulations.twin import resources
from simulations.twin.objects import Obj
from simulations.twin.resources.base import ResourceType
from simulations.twin.resources.core import NAMESPACES

SERVER_VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0-twin"}
_SUBRESOURCE_VERBS = ["get", "patch", "update"]


def version_info() -> Obj:
    """``/version``."""
    return {
        **SERVER_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def api_versions(server_address: str) -> Obj:
    """``/api``: the core group's versions."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group(name: str, versions: list[str]) -> Obj:
    listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": listed, "preferredVersion": listed[0]}


def api_group_list() -> Obj:
    """``/apis``: every named group."""
    groups = [_group(name, versions) for name, versions in resources.group_versions().items() if name]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(name: str) -> Obj | None:
    """``/apis/{group}``, or None when the group is not served."""
    versions = resources.group_versions().get(name)
    if not name or versions is None:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, versions)}


def _entry(rt: ResourceType) -> Obj:
    verbs = [v for v in rt.verbs if not (rt is NAMESPACES and v == "deletecollection")]
    entry: Obj = {
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": sorted(verbs),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    return entry


def api_resource_list(group: str, version: str) -> Obj | None:
    """``/api/v1`` or ``/apis/{group}/{version}``, or None when not served."""
    listed = [rt for rt in resources.ALL if rt.group == group and rt.version == version]
    if not listed:
        return None
    entries: list[Obj] = []
    for rt in listed:
        entries.append(_entry(rt))
        for sub in sorted(rt.subresources):
            entry: Obj = {
                "name": f"{rt.plural}/{sub}",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": _SUBRESOURCE_VERBS,
            }
            if sub == "scale":
                entry.update({"group": "autoscaling", "version": "v1", "kind": "Scale"})
            entries.append(entry)
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries,
    }
