"""The one place that talks to the Kubernetes API for children: a thin DynamicClient wrapper.

404 and 409 are made survivable here: a missing object reads as None, a create that races with
another writer falls back to reading what is there.
"""

from __future__ import annotations

import functools
from typing import Any

from kubernetes import config, dynamic
from kubernetes.client import ApiClient
from kubernetes.dynamic.exceptions import ConflictError, NotFoundError, ResourceNotFoundError

MERGE_PATCH = "application/merge-patch+json"


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
    def __init__(self, client: ApiClient | None = None) -> None:
        self.dynamic = dynamic.DynamicClient(client or load_api_client())

    @functools.cache
    def _resource(self, api_version: str, kind: str) -> Any:
        try:
            return self.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError as exc:
            raise RouteApiUnavailable(f"the cluster does not serve {kind}.{api_version}") from exc

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
