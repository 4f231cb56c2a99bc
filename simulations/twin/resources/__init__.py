"""The resource types the twin serves, one module per API group, and their registry."""

from __future__ import annotations

from simulations.twin.resources import apps, autoscaling, batch, coordination, core, events
from simulations.twin.resources.base import ResourceType

ALL: tuple[ResourceType, ...] = (
    *core.RESOURCES,
    *apps.RESOURCES,
    *autoscaling.RESOURCES,
    *batch.RESOURCES,
    *coordination.RESOURCES,
    *events.RESOURCES,
)
"""Every resource type of the twin, in discovery order."""

_BY_PATH = {(rt.group, rt.version, rt.plural): rt for rt in ALL}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    """The resource type served at ``/apis/{group}/{version}/{plural}`` (``group`` empty for core)."""
    return _BY_PATH.get((group, version, plural))


def group_versions() -> dict[str, list[str]]:
    """Served versions by API group (``""`` is the core group)."""
    found: dict[str, list[str]] = {}
    for rt in ALL:
        versions = found.setdefault(rt.group, [])
        if rt.version not in versions:
            versions.append(rt.version)
    return found


__all__ = ["ALL", "ResourceType", "group_versions", "lookup"]
