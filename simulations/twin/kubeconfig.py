"""A kubeconfig that points the official ``kubernetes`` client at a twin (or any) API server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONTEXT = "twin"
DEFAULT_TOKEN = "twin-token"  # noqa: S105 - the twin accepts any bearer token; this is no secret


def kubeconfig_document(
    server_url: str, namespace: str = "default", *, context: str = DEFAULT_CONTEXT, token: str = DEFAULT_TOKEN
) -> dict[str, Any]:
    """The kubeconfig as a mapping: one cluster, one user with a bearer token, one current context."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server_url}}],
        "users": [{"name": context, "user": {"token": token}}],
        "contexts": [
            {"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}
        ],
        "current-context": context,
        "preferences": {},
    }


def write_kubeconfig(
    path: str | Path,
    server_url: str,
    namespace: str = "default",
    *,
    context: str = DEFAULT_CONTEXT,
    token: str = DEFAULT_TOKEN,
) -> Path:
    """Write a kubeconfig for ``server_url`` to ``path`` (mode 0600, like kubectl) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(
        kubeconfig_document(server_url, namespace, context=context, token=token), sort_keys=False
    )
    target.write_text(text, encoding="utf-8")
    target.chmod(0o600)
    return target


def new_api_client(path: str | Path, *, context: str | None = None) -> Any:
    """A ``kubernetes.client.ApiClient`` from a kubeconfig file (close it when done)."""
    from kubernetes import config  # noqa: PLC0415 - only callers that talk HTTP need the client

    return config.new_client_from_config(config_file=str(path), context=context)  # type: ignore[no-untyped-call]
