"""What the twin knows about one resource type: names, scope, subresources, defaults, validation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from simulations.twin.errors import FieldError
from simulations.twin.objects import Obj
from simulations.twin.selectors import FieldGetter, field_getters
from simulations.twin.validation import NameRule, dns1123_subdomain

Hook = Callable[[Obj], None]
Validator = Callable[[Obj, Obj | None], list[FieldError]]
"""``validate(new, old)``: field errors of an object being created (``old`` None) or updated."""
Convert = Callable[[Obj], Obj]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


def _nothing(obj: Obj) -> None:
    del obj


def _valid(new: Obj, old: Obj | None) -> list[FieldError]:
    del new, old
    return []


@dataclass(frozen=True)
class ResourceType:
    """One REST resource of the twin API (``deployments`` in ``apps/v1`` ...)."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    has_generation: bool = True
    generation_on_annotations: bool = False
    """Deployments bump ``metadata.generation`` on annotation changes too (they are copied to ReplicaSets)."""
    name_rule: NameRule = dns1123_subdomain
    defaults: Hook = _nothing
    """Defaulting, run on every write (like the API server's defaulting on decode)."""
    prepare_create: Hook = _nothing
    """Run once on create after defaulting (reset status, generate a selector ...)."""
    validate: Validator = _valid
    field_labels: Mapping[str, FieldGetter] = field(default_factory=field_getters)
    storage: str = ""
    """Storage key when two API views share objects (``events`` in ``v1`` and ``events.k8s.io/v1``)."""
    to_storage: Convert | None = None
    from_storage: Convert | None = None
    allow_create_on_update: bool = False
    return_deleted_object: bool = False

    @property
    def api_version(self) -> str:
        """``apps/v1`` or ``v1``."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``deployments.apps`` or ``pods``: the group resource, as error messages name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def storage_key(self) -> str:
        """The key of this resource's objects in the store."""
        return self.storage or self.qualified

    @property
    def has_status(self) -> bool:
        """Whether ``/status`` is a subresource (then writes to the main resource ignore ``status``)."""
        return "status" in self.subresources

    @property
    def list_kind(self) -> str:
        """``DeploymentList``."""
        return self.kind + "List"
