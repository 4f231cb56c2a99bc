"""The REST layer: a request (method, path, headers, body) in, a status code and a JSON body out.

Routing follows the API server's URL scheme (``/api/v1/namespaces/{ns}/pods/{name}``,
``/apis/{group}/{version}/...``, ``/status`` and ``/scale`` subresources, lists across all
namespaces). It knows nothing about sockets, so tests and simulations can call it in-process; the
HTTP server in :mod:`simulations.twin.server` is a thin shell around :meth:`KubeApi.handle`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from remediations.jsontext import loads as loads_json
from simulations.twin import discovery, resources
from simulations.twin.errors import ApiError, invalid
from simulations.twin.objects import Obj, clone, metadata
from simulations.twin.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from simulations.twin.resources.base import ResourceType
from simulations.twin.selectors import (
    EVERYTHING,
    FieldSelector,
    parse_field_selector,
    parse_label_selector,
    selector_string,
)
from simulations.twin.store import Store

log = logging.getLogger(__name__)

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH, STRATEGIC_PATCH]
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}


@dataclass(frozen=True)
class RequestInfo:
    """What a request addresses, in the API server's terms (used for routing, faults and the log)."""

    verb: str
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def resource_path(self) -> str:
        """``deployments`` or ``deployments/scale``."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass
class Response:
    """A response: HTTP code, a JSON object (or plain text), extra headers."""

    code: int
    body: Obj | str
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, str]:
        """The body bytes and their content type."""
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return json.dumps(self.body, separators=(",", ":")).encode(), "application/json"


_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def classify(method: str, raw_path: str) -> RequestInfo:
    """The :class:`RequestInfo` of a request (``verb`` is the Kubernetes verb: get, list, create ...)."""
    split = urlsplit(raw_path)
    query = parse_qs(split.query, keep_blank_values=True)
    parts = [unquote(p) for p in split.path.split("/") if p]
    method = method.upper()
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return RequestInfo(verb=method.lower())
    namespace, name, subresource = "", "", ""
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in _NAMESPACE_SUBRESOURCES:
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    if len(rest) > 1:
        name = rest[1]
    if len(rest) > 2:
        subresource = "/".join(rest[2:])
    verb = _VERBS.get(method, method.lower())
    if not name:
        if method == "GET":
            verb = "watch" if query.get("watch", [""])[0] in {"true", "1"} else "list"
        elif method == "DELETE":
            verb = "deletecollection"
    return RequestInfo(verb, group, version, plural, subresource, namespace, name)


class KubeApi:
    """The twin's REST API over a :class:`~simulations.twin.store.Store`."""

    def __init__(self, store: Store, server_address: Callable[[], str] = lambda: "127.0.0.1:0") -> None:
        self.store = store
        self.server_address = server_address

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Serve one request; every error becomes a ``Status`` response."""
        try:
            return self._route(method.upper(), raw_path, headers, body)
        except ApiError as error:
            return Response(error.code, error.status(), dict(error.headers))
        except Exception as error:
            log.exception("twin API: %s %s failed", method, raw_path)
            failure = ApiError.internal(f"{type(error).__name__}: {error}")
            return Response(failure.code, failure.status())

    # ------------------------------------------------------------ routing

    def _route(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Response:
        split = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        parts = [unquote(p) for p in split.path.split("/") if p]
        if not parts:
            return Response(
                200, {"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]}
            )
        if parts[0] in {"healthz", "livez", "readyz"} and method == "GET":
            return Response(200, "ok")
        if parts == ["version"] and method == "GET":
            return Response(200, discovery.version_info())
        if parts[0] == "api" and len(parts) <= 2 and method == "GET":
            found = (
                discovery.api_versions(self.server_address())
                if len(parts) == 1
                else (discovery.api_resource_list("", parts[1]))
            )
            return self._found(found)
        if parts[0] == "apis" and len(parts) <= 3 and method == "GET":
            if len(parts) == 1:
                return Response(200, discovery.api_group_list())
            if len(parts) == 2:
                return self._found(discovery.api_group(parts[1]))
            return self._found(discovery.api_resource_list(parts[1], parts[2]))
        info = classify(method, raw_path)
        if not info.resource:
            raise ApiError.path_not_found()
        if info.resource == "watch":
            raise ApiError.method_not_allowed("watch is not supported by the twin API server")
        rt = resources.lookup(info.group, info.version, info.resource)
        if rt is None or (info.namespace and not rt.namespaced):
            raise ApiError.path_not_found()
        if info.subresource and (info.subresource not in rt.subresources or not info.name):
            raise ApiError.path_not_found()
        if rt.namespaced and info.name and not info.namespace:
            raise ApiError.path_not_found()
        return self._serve(rt, info, query, headers, body)

    @staticmethod
    def _found(document: Obj | None) -> Response:
        if document is None:
            raise ApiError.path_not_found()
        return Response(200, document)

    def _serve(
        self,
        rt: ResourceType,
        info: RequestInfo,
        query: dict[str, str],
        headers: Mapping[str, str],
        body: bytes,
    ) -> Response:
        verb, ns, name, sub = info.verb, info.namespace, info.name, info.subresource
        dry_run = _dry_run(query)
        if verb == "watch":
            raise ApiError.method_not_allowed("watch is not supported by the twin API server")
        if sub and verb not in {"get", "update", "patch"}:
            raise ApiError.method_not_allowed()
        if verb == "list":
            return self._list(rt, ns, query)
        if verb == "get":
            obj = self.store.get(rt, ns, name)
            return Response(200, _scale_of(obj) if sub == "scale" else obj)
        if verb == "create":
            if name:
                raise ApiError.method_not_allowed()
            return Response(201, self.store.create(rt, ns, _json_object(headers, body), dry_run=dry_run))
        if verb == "update":
            if not name:
                raise ApiError.method_not_allowed()
            payload = _json_object(headers, body)
            if sub == "scale":
                with self.store.lock:
                    return Response(200, self._write_scale(rt, ns, name, payload, dry_run))
            with self.store.lock:
                created = self.store.find(rt, ns, name) is None
                result = self.store.update(rt, ns, name, payload, subresource=sub or None, dry_run=dry_run)
            return Response(201 if created else 200, result)
        if verb == "patch":
            if not name:
                raise ApiError.method_not_allowed()
            return Response(200, self._patch(rt, ns, name, sub, headers, body, dry_run))
        if verb == "delete":
            return self._delete(rt, ns, name, query, body, dry_run)
        if verb == "deletecollection":
            if rt.plural == "namespaces":
                raise ApiError.method_not_allowed()
            return self._delete_collection(rt, ns, query, dry_run)
        raise ApiError.method_not_allowed()

    # ------------------------------------------------------------ verbs

    def _list(self, rt: ResourceType, namespace: str, query: dict[str, str]) -> Response:
        labels = parse_label_selector(query["labelSelector"]) if query.get("labelSelector") else EVERYTHING
        fields = (
            parse_field_selector(query["fieldSelector"], rt.field_labels)
            if query.get("fieldSelector")
            else None
        )
        items, version = self.store.list(rt, namespace, labels, fields)
        meta: Obj = {"resourceVersion": version}
        token = query.get("continue")
        if token:
            after = _decode_continue(token)
            items = [i for i in items if _list_key(i) > after]
        limit = _int_param(query, "limit")
        if limit and limit > 0 and len(items) > limit:
            remaining = len(items) - limit
            items = items[:limit]
            meta["continue"] = _encode_continue(_list_key(items[-1]))
            meta["remainingItemCount"] = remaining
        for item in items:
            item.pop("apiVersion", None)
            item.pop("kind", None)
        return Response(
            200, {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta, "items": items}
        )

    def _patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        sub: str,
        headers: Mapping[str, str],
        body: bytes,
        dry_run: bool,
    ) -> Obj:
        content_type = _content_type(headers)
        if content_type not in PATCH_TYPES:
            raise ApiError.unsupported_media_type(content_type, PATCH_TYPES)
        if content_type == APPLY_PATCH:
            raise ApiError.unsupported_media_type(
                content_type + " (the twin does not implement server-side apply)",
                [JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH],
            )
        patch = _json(body)
        with self.store.lock:
            current = self.store.get(rt, namespace, name)
            target = _scale_of(current) if sub == "scale" else current
            try:
                if content_type == JSON_PATCH:
                    patched = json_patch(target, patch)
                elif content_type == MERGE_PATCH:
                    if not isinstance(patch, dict):
                        raise ApiError.bad_request("a merge patch must be a JSON object")
                    patched = merge_patch(target, patch)
                else:
                    if not isinstance(patch, dict):
                        raise ApiError.bad_request("a strategic merge patch must be a JSON object")
                    patched = strategic_merge_patch(target, patch)
            except PatchError as error:
                raise ApiError(422, "Invalid", str(error), {}) from None
            if not isinstance(patched, dict):
                raise ApiError.bad_request("the patch did not produce an object")
            if sub == "scale":
                return self._write_scale(rt, namespace, name, patched, dry_run)
            if metadata(patched).get("name") != name:
                patched_name = metadata(patched).get("name")
                msg = f"the name of the object ({patched_name}) does not match the name on the URL ({name})"
                raise ApiError.bad_request(msg)
            return self.store.update(rt, namespace, name, patched, subresource=sub or None, dry_run=dry_run)

    def _write_scale(self, rt: ResourceType, namespace: str, name: str, scale: Obj, dry_run: bool) -> Obj:
        if scale.get("kind") not in {None, "Scale"} or scale.get("apiVersion") not in {
            None,
            "autoscaling/v1",
        }:
            msg = f"the kind in the data ({scale.get('kind')}) does not match the expected kind (Scale)"
            raise ApiError.bad_request(msg)
        meta = metadata(scale)
        if meta.get("name") and meta["name"] != name:
            raise ApiError.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        current = self.store.get(rt, namespace, name)
        version = meta.get("resourceVersion")
        if version and version != current["metadata"]["resourceVersion"]:
            raise ApiError.stale(rt.group, rt.plural, name)
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError.invalid(
                "autoscaling",
                "Scale",
                name,
                [invalid("spec.replicas", replicas, "must be greater than or equal to 0")],
            )
        updated = clone(current)
        updated.setdefault("spec", {})["replicas"] = replicas
        return _scale_of(self.store.update(rt, namespace, name, updated, dry_run=dry_run))

    def _delete(
        self, rt: ResourceType, namespace: str, name: str, query: dict[str, str], body: bytes, dry_run: bool
    ) -> Response:
        options = _json(body) if body.strip() else {}
        if not isinstance(options, dict):
            raise ApiError.bad_request("DeleteOptions must be a JSON object")
        propagation = query.get("propagationPolicy") or options.get("propagationPolicy")
        if propagation not in {None, "Orphan", "Background", "Foreground"}:
            raise ApiError.invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                [invalid("propagationPolicy", propagation, "unsupported value")],
            )
        dry_run = dry_run or "All" in (options.get("dryRun") or [])
        deleted = self.store.delete(
            rt,
            namespace,
            name,
            preconditions=options.get("preconditions"),
            propagation=propagation,
            dry_run=dry_run,
        )
        if rt.return_deleted_object or deleted["metadata"].get("deletionTimestamp"):
            return Response(200, deleted)
        details: Obj = {"name": name}
        if rt.group:
            details["group"] = rt.group
        details.update({"kind": rt.plural, "uid": deleted["metadata"]["uid"]})
        return Response(
            200,
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details},
        )

    def _delete_collection(
        self, rt: ResourceType, namespace: str, query: dict[str, str], dry_run: bool
    ) -> Response:
        labels = parse_label_selector(query["labelSelector"]) if query.get("labelSelector") else EVERYTHING
        fields: FieldSelector | None = (
            parse_field_selector(query["fieldSelector"], rt.field_labels)
            if query.get("fieldSelector")
            else None
        )
        with self.store.lock:
            items, _ = self.store.list(rt, namespace, labels, fields)
            deleted = [
                self.store.delete(
                    rt, i["metadata"].get("namespace", ""), i["metadata"]["name"], dry_run=dry_run
                )
                for i in items
            ]
            version = str(self.store.revision)
        for item in deleted:
            item.pop("apiVersion", None)
            item.pop("kind", None)
        return Response(
            200,
            {
                "kind": rt.list_kind,
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": version},
                "items": deleted,
            },
        )


# ---------------------------------------------------------------- helpers


def _scale_of(obj: Obj) -> Obj:
    """The ``autoscaling/v1`` Scale of a scalable object (zero ``spec.replicas`` omitted, as in Go)."""
    meta = obj["metadata"]
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    scale_spec: Obj = {"replicas": spec["replicas"]} if spec.get("replicas") else {}
    scale_status: Obj = {"replicas": int(status.get("replicas") or 0)}
    selector = selector_string(spec.get("selector"))
    if selector:
        scale_status["selector"] = selector
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": scale_spec,
        "status": scale_status,
    }


def _content_type(headers: Mapping[str, str]) -> str:
    for key, value in headers.items():
        if key.lower() == "content-type":
            return value.split(";")[0].strip().lower()
    return ""


def _json(body: bytes) -> Any:
    try:
        return loads_json(body.decode("utf-8") or "null")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError.bad_request(f"couldn't get version/kind; json parse error: {error}") from None


def _json_object(headers: Mapping[str, str], body: bytes) -> Obj:
    content_type = _content_type(headers)
    if content_type not in {"", "application/json", "*/*"}:
        raise ApiError.unsupported_media_type(content_type, ["application/json"])
    value = _json(body)
    if not isinstance(value, dict):
        raise ApiError.bad_request("the body of the request must be a JSON object")
    return value


def _dry_run(query: dict[str, str]) -> bool:
    value = query.get("dryRun")
    if value in {None, ""}:
        return False
    if value != "All":
        raise ApiError.bad_request(f'Invalid dry run directive: "{value}", only "All" is supported')
    return True


def _int_param(query: dict[str, str], key: str) -> int | None:
    value = query.get(key)
    if value in {None, ""}:
        return None
    try:
        return int(str(value))
    except ValueError:
        raise ApiError.bad_request(f'invalid "{key}" parameter: {value}') from None


def _list_key(item: Obj) -> tuple[str, str]:
    meta = item.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _encode_continue(key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, binascii.Error):
        raise ApiError.bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion"
        ) from None
    return (str(namespace), str(name))
