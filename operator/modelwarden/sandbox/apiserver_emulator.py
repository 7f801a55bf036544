"""ApiServerEmulator: kmock's KubernetesEmulator with the API-server behaviour kopf relies on.

The core of the emulator that sandbox/apiserver.py runs (its docstring lists the behaviour): the
store's metadata and cluster-wide resourceVersions, routing with answers produced outside the
lock, deletion with finalizers, lists and gap-free watches with label selectors, and the bounds
that keep memory and speed constant. Writes (PATCH, PUT, server-side apply) are mixed in from
apiserver_writes.py.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import attrs
import kmock
from kmock._internal import apps, enums, k8s, parsing, rendering

from modelwarden.sandbox.apiserver_objects import NAMESPACES, STATUS_SUBRESOURCE, now
from modelwarden.sandbox.apiserver_tables import table, wants_table
from modelwarden.sandbox.apiserver_writes import ObjectWrites

_NAMESPACE_SUBRESOURCES = {"status", "finalize"}
_kmock_parse_path = parsing.parse_path

# Bounds on what kmock would otherwise keep forever (see ApiServerEmulator._housekeep).
VERSIONS_KEPT = 2  # an object's history: the current and the previous version (or the last one and the deletion mark)
REQUESTS_KEPT = 100  # served requests in each reaction's log, and accumulated request errors
HOUSEKEEPING_EVERY = 100  # requests


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock reads /api/v1/namespaces[/NAME[/status]] as a namespace prefix with nothing after it."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (
        len(parts) <= 4 or (len(parts) == 5 and parts[4] in _NAMESPACE_SUBRESOURCES)
    ):
        name = parts[3] if len(parts) > 3 else None
        subresource = parts[4] if len(parts) > 4 else None
        return parsing.ParsedPath("", "v1", "namespaces", None, name, subresource)
    return _kmock_parse_path(path)


parsing.parse_path = _parse_path  # kmock looks it up at call time; the fix is needed for kopf's namespace scans


def _label_selector_matches(selector: str | None, labels: Mapping[str, str]) -> bool:
    """Equality-based selectors only: `a=b`, `a==b`, `a!=b`, `a`, `!a`, comma-separated."""
    if not selector:
        return True
    for term in (t.strip() for t in selector.split(",") if t.strip()):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _rv(obj: Mapping[str, Any]) -> int:
    try:
        return int(obj.get("metadata", {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


class _RequestLog(list):  # type: ignore[type-arg]
    """kmock's log of requests (`Root._requests`), holding only the requests being served.

    kmock routes each request by checking which reactions "see" it, and each check walks this log
    from its first request: kept forever, it made every request slower than the one before (and
    held every request body). A request leaves the log once answered. kmock reads len() of the log
    as "requests served so far" (request ids, its `limit`, round-robin over servers), so len()
    still counts every request ever logged; iteration, indexing and bool() see what is held.
    """

    def __init__(self) -> None:
        super().__init__()
        self.logged = 0

    def append(self, request: Any) -> None:
        super().append(request)
        self.logged += 1

    def __len__(self) -> int:
        return self.logged

    def __bool__(self) -> bool:
        return list.__len__(self) > 0


@attrs.define(kw_only=True)
class ApiServerEmulator(ObjectWrites, kmock.KubernetesEmulator):
    """kmock's emulator with the API-server behaviour listed in sandbox/apiserver.py."""

    _versions: Iterable[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _current_version: int = attrs.field(default=0, init=False)
    _in_flight: set[rendering.Request] = attrs.field(factory=set, init=False)
    _answers: dict[rendering.Request, dict[str, Any]] = attrs.field(factory=dict, init=False)
    _answered: int = attrs.field(default=0, init=False)
    _printer_columns: dict[tuple[str, str, str], list[dict[str, Any]]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._requests = _RequestLog()
        self.fallback[enums.method.PUT] << self._serve_update  # kmock has no action for PUT

    def next_version(self) -> str:
        self._current_version = next(self._versions)  # type: ignore[call-overload]
        return str(self._current_version)

    def has_status_subresource(self, resource: kmock.resource) -> bool:
        return resource in self.resources and STATUS_SUBRESOURCE in self.resources[resource].subresources

    def register_crd(self, crd: Mapping[str, Any]) -> None:
        """Serve a CustomResourceDefinition's resources in discovery (every served version)."""
        spec = crd["spec"]
        names = spec["names"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            key = f"{spec['group']}/{version['name']}/{names['plural']}"
            self._printer_columns[(spec["group"], version["name"], names["plural"])] = version.get("additionalPrinterColumns") or []
            self.resources[key] = kmock.ResourceInfo(
                kind=names["kind"],
                singular=names.get("singular") or names["kind"].lower(),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                verbs={"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"},
                shortnames=set(names.get("shortNames", [])),
                categories=set(names.get("categories", [])),
                subresources=set(version.get("subresources", {}) or {}),
            )

    # --- Routing: state changes under the lock, answers outside it --------------------------------
    # kmock's own handlers (_serve_update, _serve_fetch...) take self._lock (an asyncio.Lock, not
    # reentrant): a response must never be produced while it is held. Writes here compute the
    # answer under the lock and leave it in self._answers for _serve_update/_serve_delete.

    async def _handle(self, request: rendering.Request) -> Any:
        self._in_flight.add(request)
        try:
            return await self._route(request)
        finally:
            self._in_flight.discard(request)
            self._answers.pop(request, None)
            try:
                list.remove(self._requests, request)
            except ValueError:
                pass
            self._answered += 1
            if self._answered % HOUSEKEEPING_EVERY == 0:
                self._housekeep()

    async def _route(self, request: rendering.Request) -> Any:
        if request.resource is None:
            return await super()._handle(request)
        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            self._fill_new_metadata(request.data, request.namespace)
            await self.ensure_namespace(request.data["metadata"].get("namespace"))
            return await super()._handle(request)
        if request.name is not None and (request.action == enums.action.UPDATE or request.method == enums.method.PUT):
            return await self._update(request)
        if request.action == enums.action.DELETE and request.name is not None:
            return await self._delete(request)
        return await super()._handle(request)

    async def _serve_update(self, request: rendering.Request) -> Any:
        if request in self._answers:
            return self._answers.pop(request)
        if request.action != enums.action.UPDATE:
            raise k8s.KubernetesEndpointNotFoundError()  # a PUT to a collection
        return await super()._serve_update(request)

    async def _serve_delete(self, request: rendering.Request) -> Any:
        if request in self._answers:
            return self._answers.pop(request)
        return await super()._serve_delete(request)

    def _housekeep(self) -> None:
        """Bound what kmock keeps: reactions' request logs, accumulated errors, object histories,
        deleted objects (forgotten unless a request being served names them)."""
        for payload in self._payloads:
            del payload._requests[:-REQUESTS_KEPT]
        for errors in self._errors:
            del errors[:-REQUESTS_KEPT]
        busy = {(r.resource, r.namespace, r.name) for r in self._in_flight}
        for key, obj in list(self._objects.items()):
            if obj.deleted and key not in busy and key[0] in self.resources:
                del self._objects[key]
            else:
                del obj.history[:-VERSIONS_KEPT]

    def _record(self, obj: Any, version: dict[str, Any] | None) -> None:
        """Add a version (None: the deletion mark) to an object's history, keeping the last few."""
        if version is None:
            obj.delete()
        else:
            obj.history.append(version)
        del obj.history[:-VERSIONS_KEPT]

    async def _respond(self, request: rendering.Request, answer: dict[str, Any]) -> Any:
        """Answer through kmock's reactions (outside the lock!) with the state the write produced."""
        self._answers[request] = answer
        return await apps.RawHandler._handle(self, request)

    async def ensure_namespace(self, name: str | None) -> None:
        """Namespaces exist once something lives in them (a real cluster needs them created first)."""
        if not name:
            return
        async with self._lock:
            key = (NAMESPACES, None, name)
            if key in self._objects and not self._objects[key].deleted:
                return
            namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, "status": {"phase": "Active"}}
            self._fill_new_metadata(namespace, None)
            self._objects[key] = namespace
            await self._buses[NAMESPACES].put({"type": "ADDED", "object": namespace})

    def _fill_new_metadata(self, data: dict[str, Any], namespace: str | None) -> None:
        meta = data.setdefault("metadata", {})
        if namespace and not meta.get("namespace"):
            meta["namespace"] = namespace
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = self.next_version()
        meta["generation"] = 1
        meta["creationTimestamp"] = now()
        meta.pop("deletionTimestamp", None)

    # --- Deletion ---------------------------------------------------------------------------------

    async def _delete(self, request: rendering.Request) -> Any:
        """Delete at once, or only mark (deletionTimestamp) while finalizers remain."""
        assert request.resource is not None
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                raise k8s.KubernetesObjectNotFoundError()
            obj = self._objects[key]
            answer = obj.raw
            meta = answer.get("metadata", {})
            if meta.get("finalizers") and not meta.get("deletionTimestamp"):
                answer = copy.deepcopy(answer)
                answer["metadata"]["deletionTimestamp"] = now()
                answer["metadata"]["resourceVersion"] = self.next_version()
                self._record(obj, answer)
                await self._buses[request.resource].put({"type": "MODIFIED", "object": answer})
            elif not meta.get("finalizers"):
                answer = copy.deepcopy(answer)
                answer.setdefault("metadata", {})["resourceVersion"] = self.next_version()
                self._record(obj, answer)
                self._record(obj, None)
                await self._buses[request.resource].put({"type": "DELETED", "object": answer})
            # else: already marked, waiting for its finalizers: nothing changes
        return await self._respond(request, answer)

    # --- Reading ----------------------------------------------------------------------------------

    async def _serve_list(self, request: rendering.Request) -> Any:
        listing = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        items = [i for i in listing["items"] if _label_selector_matches(selector, i.get("metadata", {}).get("labels", {}))]
        info = self.resources[request.resource] if request.resource in self.resources else None
        kind = info.kind if info and info.kind else request.resource.plural.capitalize()
        api_version = f"{request.resource.group}/{request.resource.version}".lstrip("/")
        if wants_table(request.headers.get("Accept")):
            return self._table(request, items)
        return {"apiVersion": api_version, "kind": f"{kind}List", "items": items,
                "metadata": {"resourceVersion": str(self._current_version)}}

    async def _serve_fetch(self, request: rendering.Request) -> Any:
        found = await super()._serve_fetch(request)
        if isinstance(found, dict) and wants_table(request.headers.get("Accept")):
            return self._table(request, [found])
        return found

    def _table(self, request: rendering.Request, items: list[dict[str, Any]]) -> dict[str, Any]:
        resource = request.resource
        columns = self._printer_columns.get((resource.group or "", resource.version or "", resource.plural or ""), [])
        return table(items, columns, str(self._current_version))

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        """kmock's watch, made gap-free: the bus position is marked under the same lock as the
        snapshot of stored objects, so nothing created in between is lost (kmock marks later)."""
        yield b""  # start streaming the response at once
        assert request.resource is not None
        since = int(request.params.get("resourceVersion") or 0)
        selector = request.params.get("labelSelector")
        bus = self._buses[request.resource]
        async with self._lock:
            marker = await bus.mark()
            stored = [obj.raw for obj in self._KubernetesEmulator__get_objs(request, strict=False) if not obj.deleted]
        try:
            # A watch that resumes from a list's resourceVersion must not see what it already listed.
            for obj in stored:
                if _rv(obj) > since and _label_selector_matches(selector, obj.get("metadata", {}).get("labels", {})):
                    yield {"type": "ADDED", "object": obj}
            async for event in bus.stream(since=marker):
                obj = event.get("object", {})
                meta = obj.get("metadata", {})
                if self._KubernetesEmulator__check(request, request.resource, meta.get("namespace"), meta.get("name"), strict=False) \
                        and _label_selector_matches(selector, meta.get("labels", {})):
                    yield event
        finally:
            await bus.unmark(marker)
