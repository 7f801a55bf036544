"""The one place that talks to the Kubernetes API for children: a thin DynamicClient wrapper.

404 and 409 are made survivable here: a missing object reads as None, a create that races with
another writer falls back to reading what is there.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from kubernetes import config, dynamic
from kubernetes.client import ApiClient
from kubernetes.dynamic.exceptions import ConflictError, NotFoundError, ResourceNotFoundError

MERGE_PATCH = "application/merge-patch+json"
MISSING_KIND_RETRY_SECONDS = 60.0


class RouteApiUnavailable(RuntimeError):
    """The cluster does not serve this kind (e.g. no Gateway API or Istio CRDs installed)."""


def load_api_client() -> ApiClient:
    """In-cluster credentials when running in a pod, the kubeconfig otherwise (KUBECONFIG honoured)."""
    try:
        config.load_incluster_config()
        return ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()


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
        try:
            self._resource(api_version, kind)
            return True
        except RouteApiUnavailable:
            return False

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
        except NotFoundError:
            return None

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        items = self._resource(api_version, kind).get(namespace=namespace, label_selector=label_selector).items
        return [item.to_dict() for item in items]

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

    def patch(self, api_version: str, kind: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            resource = self._resource(api_version, kind)
            return resource.patch(body=body, name=name, namespace=namespace, content_type=MERGE_PATCH).to_dict()
        except NotFoundError:
            return None

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            self._resource(api_version, kind).delete(name=name, namespace=namespace)
        except NotFoundError:
            pass
