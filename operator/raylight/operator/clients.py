"""All of the operator's I/O: the Kubernetes API (generic get/create/patch/delete/list, with the 404/409
policy in one place) and Qdrant collections. Small protocols, so reconcile logic runs against fakes,
an in-memory Qdrant or an in-process API mock alike."""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

from raylight.api.connections import CollectionPlan
from raylight.qdrant_layout import CollectionMismatch, ensure_collection

Obj = dict[str, Any]

# kind -> (apiVersion, plural) for every object the operator touches.
KINDS: dict[str, tuple[str, str]] = {
    "ModelDeployment": ("raylight.io/v1alpha1", "modeldeployments"),
    "Pipeline": ("raylight.io/v1alpha1", "pipelines"),
    "FineTune": ("raylight.io/v1alpha1", "finetunes"),
    "RayService": ("ray.io/v1", "rayservices"),
    "RayJob": ("ray.io/v1", "rayjobs"),
    "RayCronJob": ("ray.io/v1", "raycronjobs"),
    "CronJob": ("batch/v1", "cronjobs"),  # only to remove a pre-RayJob release's ingestion CronJob
    "Job": ("batch/v1", "jobs"),  # the weight cache's prefetch (spec.cache)
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims"),  # spec.cache's claim must exist (get only)
    "ConfigMap": ("v1", "configmaps"),
    "Secret": ("v1", "secrets"),
    "GatewayClass": ("gateway.networking.k8s.io/v1", "gatewayclasses"),  # upgradeStrategy Incremental only
    "CustomResourceDefinition": ("apiextensions.k8s.io/v1", "customresourcedefinitions"),  # the preflight
    # the chart's uninstall hook only (raylight.operator.uninstall)
    "Deployment": ("apps/v1", "deployments"),
    "Pod": ("v1", "pods"),
    "ValidatingWebhookConfiguration": ("admissionregistration.k8s.io/v1", "validatingwebhookconfigurations"),
}


class Conflict(Exception):
    """The object exists already (HTTP 409 on create)."""


class KubeClient(Protocol):
    """Namespace "" means a cluster-scoped object, or (for list) every namespace."""

    def get(self, kind: str, namespace: str, name: str) -> Obj | None: ...
    def create(self, kind: str, namespace: str, body: Obj) -> Obj: ...
    def patch(self, kind: str, namespace: str, name: str, patch: Obj) -> Obj | None: ...
    def delete(self, kind: str, namespace: str, name: str) -> bool: ...
    def list(self, kind: str, namespace: str, labels: dict[str, str]) -> list[Obj]: ...


def _path(kind: str, namespace: str, name: str | None = None) -> str:
    api_version, plural = KINDS[kind]
    root = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{root}/namespaces/{namespace}/{plural}" if namespace else f"{root}/{plural}"
    return f"{path}/{name}" if name else path


def matches(obj: Obj, labels: dict[str, str]) -> bool:
    have = obj.get("metadata", {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


class RestKube:
    """KubeClient over the official client's ApiClient (in-cluster credentials, else KUBECONFIG).
    Synchronous: Kopf runs sync handlers in its thread pool."""

    def __init__(self, api_client: Any = None, timeout: float = 30.0) -> None:
        self._api = api_client
        self._timeout = timeout
        self._lock = threading.Lock()

    @property
    def api(self) -> Any:
        with self._lock:
            if self._api is None:
                import kubernetes

                configuration = kubernetes.client.Configuration()
                try:
                    kubernetes.config.load_incluster_config(client_configuration=configuration)
                except kubernetes.config.ConfigException:
                    # KUBECONFIG is read here, not when kubernetes was imported (its default is fixed then).
                    kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"),
                                                       client_configuration=configuration)
                configuration.connection_pool_maxsize = 32
                self._api = kubernetes.client.ApiClient(configuration)
            return self._api

    def _call(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
              query: list[tuple[str, str]] | None = None) -> Any:
        api = self.api
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if not hasattr(api, "param_serialize"):  # kubernetes < 35: the older generated client
            return api.call_api(path, method, query_params=query or [], body=body, header_params=headers,
                                response_type="object", auth_settings=["BearerToken"],
                                _return_http_data_only=True, _request_timeout=self._timeout)
        params = api.param_serialize(method=method, resource_path=path, query_params=query or [],
                                     header_params=headers, body=body, auth_settings=["BearerToken"])
        response = api.call_api(*params, _request_timeout=self._timeout)
        response.read()
        types = {"200": "object", "201": "object", "202": "object"}
        return api.response_deserialize(response, types).data  # raises ApiException unless 2xx

    @staticmethod
    def _status(exc: Exception) -> int | None:
        return getattr(exc, "status", None)

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        try:
            result: Obj = self._call("GET", _path(kind, namespace, name))
            return result
        except Exception as exc:
            if self._status(exc) == 404:
                return None
            raise

    def create(self, kind: str, namespace: str, body: Obj) -> Obj:
        try:
            result: Obj = self._call("POST", _path(kind, namespace), body)
            return result
        except Exception as exc:
            if self._status(exc) == 409:
                raise Conflict(f"{kind} {namespace}/{body['metadata']['name']} exists") from exc
            raise

    def patch(self, kind: str, namespace: str, name: str, patch: Obj) -> Obj | None:
        """A JSON merge patch; None when the object is gone."""
        try:
            result: Obj = self._call("PATCH", _path(kind, namespace, name), patch, "application/merge-patch+json")
            return result
        except Exception as exc:
            if self._status(exc) == 404:
                return None
            raise

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        try:
            self._call("DELETE", _path(kind, namespace, name), query=[("propagationPolicy", "Background")])
            return True
        except Exception as exc:
            if self._status(exc) == 404:
                return False
            raise

    def list(self, kind: str, namespace: str, labels: dict[str, str]) -> list[Obj]:
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        result = self._call("GET", _path(kind, namespace), query=[("labelSelector", selector)] if selector else [])
        return [o for o in result.get("items", []) if matches(o, labels)]  # also where selectors are ignored

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        return secret_value(self, namespace, name, key)


def secret_value(kube: KubeClient, namespace: str, name: str, key: str) -> str | None:
    """One key of a Secret, decoded; None when the Secret or key is missing."""
    secret = kube.get("Secret", namespace, name)
    raw = (secret or {}).get("data", {}).get(key)
    return base64.b64decode(raw).decode() if raw else None


# ---------------------------------------------------------------- Qdrant


class CollectionStore(Protocol):
    def exists(self, collection: str) -> bool: ...
    def ensure(self, plan: CollectionPlan) -> bool: ...
    def drop(self, collection: str) -> bool: ...
    def count(self, collection: str) -> int | None: ...


class QdrantCollections:
    """Collections on one Qdrant server through qdrant-client (a `QdrantClient(":memory:")` in tests)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def exists(self, collection: str) -> bool:
        return bool(self.client.collection_exists(collection))

    def ensure(self, plan: CollectionPlan) -> bool:
        """Create the collection a collection plan describes; True when it was created now."""
        assert plan.dimensions is not None, "a plan without dimensions waits for the embedder"
        try:
            return ensure_collection(self.client, plan.collection, plan.dimensions, plan.sparse)
        except CollectionMismatch:
            return False  # left as it is: the ingestion run reports the mismatch

    def drop(self, collection: str) -> bool:
        if not self.exists(collection):
            return False
        self.client.delete_collection(collection)
        return True

    def count(self, collection: str) -> int | None:
        if not self.exists(collection):
            return None
        return int(self.client.count(collection, exact=False).count)


StoreFactory = Callable[[str, str | None], CollectionStore]


class QdrantServers:
    """One QdrantCollections per (url, api key), created on first use."""

    def __init__(self, timeout: float = 10.0) -> None:
        self._stores: dict[tuple[str, str | None], CollectionStore] = {}
        self._lock = threading.Lock()
        self._timeout = timeout

    def __call__(self, url: str, api_key: str | None) -> CollectionStore:
        with self._lock:
            key = (url, api_key)
            if key not in self._stores:
                from qdrant_client import QdrantClient

                self._stores[key] = QdrantCollections(QdrantClient(url=url, api_key=api_key,
                                                                   timeout=int(self._timeout)))
            return self._stores[key]
