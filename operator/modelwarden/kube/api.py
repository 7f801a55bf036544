"""The one place that talks to the Kubernetes API: a thin DynamicClient wrapper.

404 and 409 are made survivable here: a missing object reads as None, a create that races with
another writer falls back to reading what is there, and a status write made from an outdated view
is refused by the API server (a resourceVersion precondition) and surfaces as `StaleView`.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import urllib3
from kubernetes import config, dynamic
from kubernetes.client import ApiClient, VersionApi
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ConflictError, NotFoundError, ResourceNotFoundError

MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "modelwarden"
MISSING_KIND_RETRY_SECONDS = 60.0


class RouteApiUnavailable(RuntimeError):
    """The cluster does not serve this kind (e.g. no Gateway API or Istio CRDs installed)."""


class StaleView(RuntimeError):
    """A conditional write was refused (409): the object changed since the view the write was computed from."""


def describe_error(error: BaseException) -> str:
    """One line for a log: an API error's status and the API server's own message (the client's
    str() leads with the response headers, which hide the reason, e.g. a Service IP range full)."""
    status, body = getattr(error, "status", None), getattr(error, "body", None)
    if status is not None and body:
        try:
            message = json.loads(body).get("message") or body
        except (TypeError, ValueError, AttributeError):
            message = body
        return f"{type(error).__name__} {status}: {message}"[:500]
    return f"{type(error).__name__}: {error}"[:500]


def load_api_client() -> ApiClient:
    """In-cluster credentials when running in a pod, the kubeconfig otherwise (KUBECONFIG honoured)."""
    try:
        config.load_incluster_config()
        return ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()


def unreachable_cluster(timeout: float = 10.0) -> str | None:
    """Why no API server can be used (no credentials, or nothing answering), in one line; None when
    one answers. Any HTTP answer counts as reachable: access is the handlers' business."""
    try:
        client = load_api_client()
    except (config.ConfigException, OSError) as exc:
        return f"no Kubernetes credentials (in-cluster or KUBECONFIG): {str(exc).splitlines()[0][:200]}"
    host = client.configuration.host
    try:
        VersionApi(client).get_code(_request_timeout=timeout)
    except ApiException:
        return None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return f"no Kubernetes API server answers at {host}: {str(reason).split(': ')[-1][:200]}"
    finally:
        client.close()
    return None


class KubeApi:
    """Shared by kopf's handler threads, the evaluation pool and the notification pool."""

    def __init__(self, client: ApiClient | None = None) -> None:
        self.dynamic = dynamic.DynamicClient(client or load_api_client())
        self._resources: dict[tuple[str, str], Any] = {}
        self._missing: dict[tuple[str, str], float] = {}  # kinds not served -> when to look again
        # The DynamicClient's discovery cache is not thread-safe (concurrent first look-ups of a kind
        # corrupt it: KeyError 'resources'); requests themselves are (urllib3's pool).
        self._discovery = threading.Lock()

    def _resource(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        with self._discovery:
            if key not in self._resources:
                retry_at = self._missing.get(key)
                if retry_at is not None and time.monotonic() < retry_at:
                    raise RouteApiUnavailable(f"the cluster does not serve {kind}.{api_version}")
                try:
                    self._resources[key] = self.dynamic.resources.get(api_version=api_version, kind=kind)
                except ResourceNotFoundError as exc:
                    # Remembered for a while, so a cluster without e.g. Istio costs no discovery per
                    # reconcile, yet a CRD installed later is noticed.
                    self._missing[key] = time.monotonic() + MISSING_KIND_RETRY_SECONDS
                    raise RouteApiUnavailable(f"the cluster does not serve {kind}.{api_version}") from exc
            return self._resources[key]

    def serves(self, api_version: str, kind: str) -> bool:
        """Whether the API server serves this kind right now: one discovery request for its group
        version, never the DynamicClient's discovery cache (which may outlive a CRD)."""
        path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        try:
            found = self.dynamic.request("get", path).to_dict()
        except NotFoundError:
            return False
        return any(r.get("kind") == kind and "/" not in r.get("name", "") for r in found.get("resources") or [])

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
        except NotFoundError:
            return None

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """Objects of a kind in a namespace selected by labels on the server (never a watch)."""
        found = self._resource(api_version, kind).get(namespace=namespace, label_selector=label_selector).to_dict()
        return list(found.get("items") or [])

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        resource = self._resource(body["apiVersion"], body["kind"])
        try:
            return resource.create(body=body, namespace=meta.get("namespace")).to_dict()
        except ConflictError:
            existing = self.get(body["apiVersion"], body["kind"], meta.get("namespace"), meta["name"])
            if existing is None:
                raise
            return existing

    def apply(self, body: dict[str, Any], field_manager: str = FIELD_MANAGER) -> dict[str, Any]:
        """Server-side apply as field manager `modelwarden`: fields others set (an HPA's replicas,
        another controller's annotations) stay theirs; `force` takes back only fields in `body`."""
        meta = body["metadata"]
        resource = self._resource(body["apiVersion"], body["kind"])
        return resource.server_side_apply(
            body=body, name=meta["name"], namespace=meta.get("namespace"), field_manager=field_manager, force_conflicts=True,
        ).to_dict()

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any], resource_version: str,
    ) -> dict[str, Any]:
        """Merge-patch status only if the object is still at `resource_version` (else `StaleView`)."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            path = self._resource(api_version, kind).path(name=name, namespace=namespace) + "/status"
            return self.dynamic.request("patch", path, body=body, content_type=MERGE_PATCH).to_dict()
        except ConflictError as exc:
            raise StaleView(f"{kind} {namespace}/{name} changed since resourceVersion {resource_version}") from exc

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            self._resource(api_version, kind).delete(name=name, namespace=namespace)
        except NotFoundError:
            pass
