"""Kubernetes object rules shared by the API emulator's modules (sandbox/apiserver*.py).

The emulator's core (apiserver_emulator.py), its write path (apiserver_writes.py) and the
server-side-apply field algebra (apiserver_fields.py) all need these: the subresource and content
types, the metadata only the server writes, timestamps and the 409 Conflict a real API server
sends. Kept in a module of their own so that none of those has to import another in a circle.
"""

from __future__ import annotations

import datetime

import kmock
from kmock._internal import k8s

STATUS_SUBRESOURCE = "status"
NAMESPACES = kmock.resource("", "v1", "namespaces")
APPLY_PATCH = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"

# Metadata only the server writes: restored from the stored object whatever a write says.
SERVER_METADATA = ("uid", "name", "namespace", "creationTimestamp", "generation", "resourceVersion",
                   "deletionTimestamp", "managedFields")


def now() -> str:
    return datetime.datetime.now(tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def conflict(resource: kmock.resource, name: str, message: str) -> k8s.KubernetesError:
    """A 409 with the Status body a real API server sends."""
    qualified = f"{resource.plural}.{resource.group}" if resource.group else str(resource.plural)
    return k8s.KubernetesError(
        status=409, reason="Conflict", message=f'Operation cannot be fulfilled on {qualified} "{name}": {message}',
        details={"name": name, "group": resource.group, "kind": resource.plural},
    )
