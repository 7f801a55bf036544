"""An in-memory Kubernetes API server for the sandbox and the tests, built on kmock's emulator.

kmock's KubernetesEmulator stores objects and streams watch events but behaves like a plain
JSON store. This subclass adds what kopf and our operator rely on from a real API server:

- metadata on create: uid, namespace, resourceVersion, generation, creationTimestamp;
- a cluster-wide, monotonically increasing resourceVersion bumped on every write (deletions
  included), returned by lists; a write that changes nothing keeps it and emits no watch event;
- `generation` bumped when anything outside metadata/status changes;
- server-owned metadata (uid, name, namespace, creationTimestamp, generation, resourceVersion,
  deletionTimestamp, managedFields) that no client write can change;
- the status subresource: writes to the main endpoint keep the old status, writes to /status
  change only the status;
- PATCH as merge patch (strategic merge patches are treated as merge patches), JSON patch or
  server-side apply, and PUT as a replacement of the object;
- optimistic concurrency: a write (to the object or its /status) whose body carries a
  metadata.resourceVersion other than the stored one is refused with 409 Conflict and changes
  nothing; a failed JSON-patch `test` is refused with 422;
- server-side apply (`application/apply-patch+yaml` with `fieldManager` and `force`): creates a
  missing object; otherwise merges the applied configuration, lists of containers, env, ports,
  volumes... item by item by their key (`name`; `containerPort`/`port` for ports, `mountPath` for
  volumeMounts, `type` for conditions), keeping fields that are not in the configuration. Field
  ownership is recorded per manager in metadata.managedFields (FieldsV1): a field the same
  manager applied before and no longer applies is removed unless another applier owns it; a
  field another write changed stops being the applier's; applying over another applier's
  different value without `force=true` is a 409 Conflict. An approximation: only appliers own
  fields (other writes record no managedFields entry), a missing fieldManager is accepted;
- watches that start at a resourceVersion skip the replayed objects that are not newer;
- equality-based `labelSelector` on lists and watches;
- bounded memory and constant speed however many requests it serves: kmock logs every request
  (and walks the log on every request to route it) and keeps every version of every object;
  here only requests being served stay in kmock's routing log, reactions' logs and accumulated
  errors keep the last few, objects keep their last versions only, and deleted objects are
  forgotten.

It has no controllers, garbage collection, admission or schema validation: tests validate what
the operator creates with kubernetes-validate and the CRD schemas instead.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime
import functools
import itertools
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal import apps, dicts, enums, k8s, parsing, rendering

from modelwarden.sandbox.loopserver import LoopServer

STATUS_SUBRESOURCE = "status"
NAMESPACES = kmock.resource("", "v1", "namespaces")
APPLY_PATCH = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}
_kmock_parse_path = parsing.parse_path

# Metadata only the server writes: restored from the stored object whatever a write says.
_SERVER_METADATA = ("uid", "name", "namespace", "creationTimestamp", "generation", "resourceVersion",
                    "deletionTimestamp", "managedFields")
_NOT_OWNED_METADATA = (*_SERVER_METADATA, "deletionGracePeriodSeconds", "selfLink")

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


def _now() -> str:
    return datetime.datetime.now(tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def _conflict(resource: kmock.resource, name: str, message: str) -> k8s.KubernetesError:
    """A 409 with the Status body a real API server sends."""
    qualified = f"{resource.plural}.{resource.group}" if resource.group else str(resource.plural)
    return k8s.KubernetesError(
        status=409, reason="Conflict", message=f'Operation cannot be fulfilled on {qualified} "{name}": {message}',
        details={"name": name, "group": resource.group, "kind": resource.plural},
    )


# --- Server-side apply -------------------------------------------------------------------------
# A field is a path of dict keys (str) and list items ((merge key, value) tuples). A manager owns
# leaves (scalars, atomic lists, empty maps) and the items of keyed lists as wholes, as in
# Kubernetes' FieldsV1 where `k:{"name":"x"}` names an item and `.` the item itself.

Field = tuple[Any, ...]
_MERGE_KEYS = {"ports": ("containerPort", "port"), "volumeMounts": ("mountPath",), "conditions": ("type",)}
_MISSING = object()


def _merge_key(field: str, *lists: list[Any]) -> str | None:
    """The key naming the items of the lists under `field`: every item has it, with values
    unique within each list; None for an atomic list (replaced as a whole)."""
    every = [item for items in lists for item in items]
    if not every:
        return None
    for key in _MERGE_KEYS.get(field, ("name",)):
        if all(isinstance(item, dict) and isinstance(item.get(key), (str, int)) for item in every) \
                and all(len({item[key] for item in items}) == len(items) for items in lists):
            return key
    return None


def _field_values(value: Mapping[str, Any], path: Field = (), out: dict[Field, Any] | None = None) -> dict[Field, Any]:
    """Every owned-able field of an object (or of an applied configuration) and its value."""
    out = {} if out is None else out
    for key, child in value.items():
        if child is None:
            continue
        here = (*path, key)
        if isinstance(child, dict) and child:
            _field_values(child, here, out)
        elif isinstance(child, list) and (merge_key := _merge_key(key, child)):
            for item in child:
                at = (*here, (merge_key, item[merge_key]))
                out[at] = True
                _field_values(item, at, out)
        else:
            out[here] = child
    return out


def _changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> set[Field]:
    before, after = _field_values(old), _field_values(new)
    return {path for path in before.keys() | after.keys() if before.get(path, _MISSING) != after.get(path, _MISSING)}


def _merge_applied(live: Any, config: Any) -> Any:
    """Merge an applied configuration into the live object: maps key by key (null removes a key),
    keyed lists item by item (items only in the live list stay), anything else replaced."""
    if not (isinstance(live, dict) and isinstance(config, dict)):
        return copy.deepcopy(config)
    merged = dict(live)
    for key, value in config.items():
        if value is None:
            merged.pop(key, None)
        elif key not in live:
            merged[key] = copy.deepcopy(value)
        elif isinstance(value, list) and isinstance(live[key], list) and (merge_key := _merge_key(key, live[key], value)):
            applied = {item[merge_key]: item for item in value}
            kept = [_merge_applied(item, applied[item[merge_key]]) if item[merge_key] in applied else item for item in live[key]]
            present = {item[merge_key] for item in live[key]}
            merged[key] = kept + [copy.deepcopy(item) for item in value if item[merge_key] not in present]
        else:
            merged[key] = _merge_applied(live[key], value)
    return merged


def _remove_field(obj: dict[str, Any], path: Field, others: set[Field]) -> None:
    """Remove a field its applier no longer applies (in place), and the maps and lists it leaves
    empty. An item goes as a whole unless another applier owns something in it; a map that grew
    fields since it was applied empty stays; an item keeps its own key."""

    def remove(node: Any, depth: int) -> bool:
        head, last = path[depth], depth == len(path) - 1
        if isinstance(head, tuple):
            for index, item in enumerate(node if isinstance(node, list) else ()):
                if isinstance(item, dict) and item.get(head[0]) == head[1]:
                    if not last:
                        return remove(item, depth + 1)
                    if any(owned[:len(path)] == path for owned in others):
                        return False
                    del node[index]
                    return True
            return False
        if not isinstance(node, dict) or head not in node:
            return False
        if last:
            if (depth and isinstance(path[depth - 1], tuple) and path[depth - 1][0] == head) \
                    or (isinstance(node[head], dict) and node[head]):
                return False
            del node[head]
            return True
        removed = remove(node[head], depth + 1)
        if removed and isinstance(node[head], (dict, list)) and not node[head]:
            del node[head]
        return removed

    if path:
        remove(obj, 0)


def _encode_fields(fields: Iterable[Field]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(fields, key=repr):
        node = tree
        for element in path:
            if isinstance(element, str):
                key = f"f:{element}"
            else:
                key = "k:" + json.dumps({element[0]: element[1]}, separators=(",", ":"))
            node = node.setdefault(key, {})
        if path and isinstance(path[-1], tuple):
            node["."] = {}
    return tree


def _decode_fields(tree: Mapping[str, Any], path: Field = ()) -> set[Field]:
    fields: set[Field] = set()
    for key, subtree in tree.items():
        if key == ".":
            fields.add(path)
            continue
        if key.startswith("f:"):
            element: Any = key[2:]
        elif key.startswith("k:"):
            element = next(iter(json.loads(key[2:]).items()))
        else:
            continue  # other FieldsV1 notations (v:, i:) are never written here
        if subtree:
            fields |= _decode_fields(subtree, (*path, element))
        else:
            fields.add((*path, element))
    return fields


def _format_field(path: Field) -> str:
    return "".join(f".{e}" if isinstance(e, str) else f"[{e[0]}={json.dumps(e[1])}]" for e in path)


def _ownable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an object fields can be owned in: no apiVersion/kind, no server metadata."""
    view = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    metadata = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _NOT_OWNED_METADATA}
    if metadata:
        view["metadata"] = metadata
    return view


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the API-server behaviour listed in the module docstring."""

    _versions: Iterable[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _current_version: int = attrs.field(default=0, init=False)
    _in_flight: set[rendering.Request] = attrs.field(factory=set, init=False)
    _answers: dict[rendering.Request, dict[str, Any]] = attrs.field(factory=dict, init=False)
    _answered: int = attrs.field(default=0, init=False)

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
        meta["creationTimestamp"] = _now()
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
                answer["metadata"]["deletionTimestamp"] = _now()
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

    # --- PATCH and PUT ----------------------------------------------------------------------------

    async def _update(self, request: rendering.Request) -> Any:
        assert request.resource is not None
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        data = request.data
        if data is None and request.text:
            try:
                data = yaml.safe_load(request.text)  # server-side apply bodies may be YAML
            except yaml.YAMLError as exc:
                raise k8s.KubernetesError(status=400, reason="BadRequest", message=f"cannot parse the body: {exc}") from exc
        if request.method == enums.method.PUT:
            kind = "replace"
        elif content_type == APPLY_PATCH:
            kind = "apply"
        elif content_type == JSON_PATCH or isinstance(data, list):
            kind = "json"
        else:
            kind = "merge"  # merge-patch+json and strategic-merge-patch+json alike
        if kind in ("replace", "apply") and not isinstance(data, dict):
            raise k8s.KubernetesError(status=400, reason="BadRequest", message=f"the {kind} body must be an object")
        if kind == "apply" and request.subresource is None:
            await self.ensure_namespace(request.namespace)  # apply may create the object
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            if key in self._objects and not self._objects[key].deleted:
                answer = await self._write(request, kind, data, self._objects[key])
            elif kind == "apply" and request.subresource is None:
                answer = await self._create_applied(request, data, key)
            else:
                raise k8s.KubernetesObjectNotFoundError()
        return await self._respond(request, answer)

    async def _create_applied(self, request: rendering.Request, config: dict[str, Any], key: Any) -> dict[str, Any]:
        new = copy.deepcopy(config)
        if self.has_status_subresource(request.resource):
            new.pop("status", None)
        self._fill_new_metadata(new, request.namespace)
        meta = new["metadata"]
        meta["name"] = request.name
        if request.namespace:
            meta["namespace"] = request.namespace
        meta.pop("managedFields", None)
        fields = set(_field_values(self._applied_part(request, config)))
        if fields:
            meta["managedFields"] = [self._apply_entry(request, config, new, fields)]
        self._objects[key] = new
        await self._buses[request.resource].put({"type": "ADDED", "object": new})
        return new

    async def _write(self, request: rendering.Request, kind: str, data: Any, obj: Any) -> dict[str, Any]:
        """Change a stored object (under the lock); the object as stored is the answer."""
        old = copy.deepcopy(obj.raw)
        applied: set[Field] = set()
        try:
            if kind == "replace":
                patched = {**{k: old[k] for k in ("apiVersion", "kind") if k in old}, **copy.deepcopy(data)}
            elif kind == "apply":
                patched, applied = self._merge_apply(request, old, data)
            else:
                patched = dict(dicts.patch_dict(old, data or {}))
        except jsonpatch.JsonPatchTestFailed as exc:
            raise k8s.KubernetesError(status=422, reason="Invalid", message=str(exc)) from exc
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, ValueError, TypeError) as exc:
            raise k8s.KubernetesError(status=422, reason="Invalid", message=f"invalid patch: {exc}") from exc

        if not isinstance(patched, dict):
            raise k8s.KubernetesError(status=422, reason="Invalid", message="the patched object is not an object")

        # Optimistic concurrency: a write naming a resourceVersion is made only on that version.
        wanted = (patched.get("metadata") or {}).get("resourceVersion")
        current = old.get("metadata", {}).get("resourceVersion")
        if wanted not in (None, "") and str(wanted) != str(current):
            raise _conflict(request.resource, request.name,
                            "the object has been modified; please apply your changes to the latest version and try again")

        new = self._apply_subresource_rules(request, old, patched)
        self._track_managers(request, kind, data, old, new, applied)
        if new == old:
            return old  # a no-op write keeps the version and tells no watcher
        new["metadata"]["resourceVersion"] = self.next_version()
        self._record(obj, new)
        meta = new["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._record(obj, None)
            await self._buses[request.resource].put({"type": "DELETED", "object": new})
        else:
            await self._buses[request.resource].put({"type": "MODIFIED", "object": new})
        return new

    def _apply_subresource_rules(
        self, request: rendering.Request, old: dict[str, Any], patched: dict[str, Any]
    ) -> dict[str, Any]:
        new = copy.deepcopy(patched)
        # Identity and server fields are the server's, whatever a write says.
        new_meta = new.setdefault("metadata", {})
        old_meta = old.get("metadata", {})
        for field in _SERVER_METADATA:
            if field in old_meta:
                new_meta[field] = copy.deepcopy(old_meta[field])
            else:
                new_meta.pop(field, None)
        if self.has_status_subresource(request.resource):
            if request.subresource == STATUS_SUBRESOURCE:
                new = {**copy.deepcopy(old), "status": new.get("status")}
                if new["status"] is None:
                    del new["status"]
            elif "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        spec_changed = {k: v for k, v in old.items() if k not in ("metadata", "status")} != {
            k: v for k, v in new.items() if k not in ("metadata", "status")
        }
        if spec_changed:
            new["metadata"]["generation"] = int(old.get("metadata", {}).get("generation", 1)) + 1
        return new

    # --- Server-side apply ------------------------------------------------------------------------

    def _applied_part(self, request: rendering.Request, config: Mapping[str, Any]) -> dict[str, Any]:
        """What an apply to this endpoint can set: the status alone through /status, all but the
        status through the main endpoint (of resources with a status subresource)."""
        part = _ownable(config)
        if self.has_status_subresource(request.resource):
            if request.subresource == STATUS_SUBRESOURCE:
                return {"status": part["status"]} if isinstance(part.get("status"), dict) else {}
            part.pop("status", None)
        return part

    @staticmethod
    def _is_entry_of(entry: Mapping[str, Any], request: rendering.Request) -> bool:
        return (entry.get("manager"), entry.get("operation"), entry.get("subresource")) == (
            request.params.get("fieldManager") or "unknown", "Apply", request.subresource)

    def _apply_entry(self, request: rendering.Request, config: Mapping[str, Any], obj: Mapping[str, Any],
                     fields: set[Field]) -> dict[str, Any]:
        entry = {"manager": request.params.get("fieldManager") or "unknown", "operation": "Apply",
                 "apiVersion": config.get("apiVersion") or obj.get("apiVersion"), "time": _now(),
                 "fieldsType": "FieldsV1", "fieldsV1": _encode_fields(fields)}
        if request.subresource:
            entry["subresource"] = request.subresource
        return entry

    def _merge_apply(self, request: rendering.Request, old: dict[str, Any], config: dict[str, Any]
                     ) -> tuple[dict[str, Any], set[Field]]:
        """The applied configuration merged into the object, minus what this manager applied
        before and applies no longer (unless another applier owns it); and the fields it applies."""
        config = copy.deepcopy(config)
        (config.get("metadata") or {}).pop("managedFields", None)
        applied = set(_field_values(self._applied_part(request, config)))
        before: set[Field] = set()
        others: set[Field] = set()
        for entry in (old.get("metadata") or {}).get("managedFields") or []:
            fields = _decode_fields(entry.get("fieldsV1") or {})
            if self._is_entry_of(entry, request):
                before |= fields
            elif entry.get("operation") == "Apply":
                others |= fields
        merged = _merge_applied(copy.deepcopy(old), config)
        for path in sorted(before - applied - others, key=len):
            _remove_field(merged, path, others)
        return merged, applied

    def _track_managers(self, request: rendering.Request, kind: str, config: Any, old: dict[str, Any],
                        new: dict[str, Any], applied: set[Field]) -> None:
        """Keep metadata.managedFields true (in `new`): the applier owns what it applied; a field
        another write changed is no longer its former owners'. Raises the 409 of an apply that
        would change another applier's field without force=true."""
        entries = (old.get("metadata") or {}).get("managedFields") or []
        if kind != "apply" and not entries:
            return
        changed = _changed_fields(_ownable(old), _ownable(new))
        force = request.params.get("force", "").lower() == "true"
        tracked: list[dict[str, Any] | None] = []  # None: where the applier's own entry goes
        mine: dict[str, Any] | None = None
        conflicts: list[str] = []
        for entry in entries:
            if kind == "apply" and self._is_entry_of(entry, request):
                mine = entry
                tracked.append(None)
                continue
            fields = _decode_fields(entry.get("fieldsV1") or {})
            if kind == "apply" and not force and entry.get("operation") == "Apply":
                conflicts += [f'conflict with "{entry.get("manager")}": {_format_field(path)}'
                              for path in sorted(fields & applied & changed, key=repr)]
            kept = fields - changed
            if kept == fields:
                tracked.append(entry)
            elif kept:
                tracked.append({**entry, "fieldsV1": _encode_fields(kept)})
        if conflicts:
            raise k8s.KubernetesError(
                status=409, reason="Conflict",
                message=f"Apply failed with {len(conflicts)} conflict{'s' if len(conflicts) > 1 else ''}: " + "; ".join(conflicts),
                details={"name": request.name, "group": request.resource.group, "kind": request.resource.plural,
                         "causes": [{"reason": "FieldManagerConflict", "message": c} for c in conflicts]},
            )
        own: dict[str, Any] | None = None
        if kind == "apply" and applied:
            if mine is not None and _decode_fields(mine.get("fieldsV1") or {}) == applied:
                own = mine  # the same fields: the entry (and its time) stays as it was
            else:
                own = self._apply_entry(request, config, new, applied)
            if mine is None:
                tracked.append(own)
        managed = [own if entry is None else entry for entry in tracked]
        managed = [entry for entry in managed if entry is not None]
        if managed:
            new["metadata"]["managedFields"] = managed
        else:
            new["metadata"].pop("managedFields", None)

    # --- Reading ----------------------------------------------------------------------------------

    async def _serve_list(self, request: rendering.Request) -> Any:
        listing = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        items = [i for i in listing["items"] if _label_selector_matches(selector, i.get("metadata", {}).get("labels", {}))]
        info = self.resources[request.resource] if request.resource in self.resources else None
        kind = info.kind if info and info.kind else request.resource.plural.capitalize()
        api_version = f"{request.resource.group}/{request.resource.version}".lstrip("/")
        return {"apiVersion": api_version, "kind": f"{kind}List", "items": items,
                "metadata": {"resourceVersion": str(self._current_version)}}

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


@functools.cache
def _crds_in(path: Path) -> tuple[dict[str, Any], ...]:
    """CRDs in one file, parsed once per process (third-party CRD files are large)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    docs = yaml.load_all(path.read_text(), Loader=loader)
    return tuple(d for d in docs if d and d.get("kind") == "CustomResourceDefinition")


def load_crds(emulator: ApiServerEmulator, crd_dir: Path) -> None:
    for path in sorted(crd_dir.glob("*.yaml")):
        for crd in _crds_in(path):
            emulator.register_crd(crd)


def default_crd_dir() -> Path:
    """crds/ of a source checkout; the packaged copy otherwise."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[3] / "crds", here.parent.parent / "api" / "crds"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no crds/ directory found beside the package")


class EmulatedApiServer(LoopServer):
    """Runs the emulator on a loopback port in a background thread with its own event loop."""

    thread_name = "api-emulator"

    def __init__(self, port: int = 0, crd_dir: Path | None = None, extra_crd_dirs: tuple[Path, ...] = ()) -> None:
        super().__init__()
        self.requested_port = port
        self.crd_dirs = (crd_dir or default_crd_dir(), *extra_crd_dirs)
        self.emulator: ApiServerEmulator | None = None

    async def _serve(self) -> None:
        emulator = ApiServerEmulator()
        emulator.resources.load_bundled()
        for crd_dir in self.crd_dirs:
            load_crds(emulator, crd_dir)
        async with emulator, kmock.Server(emulator, port=self.requested_port or None) as server:
            await emulator.ensure_namespace("default")
            self.emulator = emulator
            self.port = server.port
            self._ready.set()
            assert self._stopping is not None
            await self._stopping.wait()


def main(argv: list[str] | None = None) -> None:
    """Run the emulator in the foreground: `python -m modelwarden.sandbox.apiserver`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kubeconfig", type=Path, default=None, help="write a kubeconfig here")
    args = parser.parse_args(argv)
    server = EmulatedApiServer(port=args.port).start()
    if args.kubeconfig:
        server.write_kubeconfig(args.kubeconfig)
    print(json.dumps({"url": server.url}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
