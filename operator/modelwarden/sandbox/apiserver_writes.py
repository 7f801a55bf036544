"""The API emulator's write path: PATCH (merge, JSON patch, server-side apply) and PUT.

ApiServerEmulator (apiserver_emulator.py) mixes this in; it is apart because it is the largest
single responsibility of the emulator: how a write turns the stored object into the new one
(server-owned metadata, the status subresource, generation, optimistic concurrency) and how
server-side apply merges configurations and keeps metadata.managedFields (the field algebra is in
apiserver_fields.py). It uses the emulator's lock, store, watch buses and versioning through
`self`, and adds no state of its own.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonpatch
import yaml
from kmock._internal import dicts, enums, k8s, rendering

from modelwarden.sandbox.apiserver_fields import (
    Field,
    changed_fields,
    decode_fields,
    encode_fields,
    field_values,
    format_field,
    merge_applied,
    ownable,
    remove_field,
)
from modelwarden.sandbox.apiserver_objects import (
    APPLY_PATCH,
    JSON_PATCH,
    SERVER_METADATA,
    STATUS_SUBRESOURCE,
    conflict,
    now,
)


class ObjectWrites:
    """PATCH and PUT of stored objects, for ApiServerEmulator (writes run under its lock)."""

    __slots__ = ()  # the emulator is a slotted attrs class: no instance __dict__ from here

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
        fields = set(field_values(self._applied_part(request, config)))
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
            raise conflict(request.resource, request.name,
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
        for field in SERVER_METADATA:
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
        part = ownable(config)
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
                 "apiVersion": config.get("apiVersion") or obj.get("apiVersion"), "time": now(),
                 "fieldsType": "FieldsV1", "fieldsV1": encode_fields(fields)}
        if request.subresource:
            entry["subresource"] = request.subresource
        return entry

    def _merge_apply(self, request: rendering.Request, old: dict[str, Any], config: dict[str, Any]
                     ) -> tuple[dict[str, Any], set[Field]]:
        """The applied configuration merged into the object, minus what this manager applied
        before and applies no longer (unless another applier owns it); and the fields it applies."""
        config = copy.deepcopy(config)
        (config.get("metadata") or {}).pop("managedFields", None)
        applied = set(field_values(self._applied_part(request, config)))
        before: set[Field] = set()
        others: set[Field] = set()
        for entry in (old.get("metadata") or {}).get("managedFields") or []:
            fields = decode_fields(entry.get("fieldsV1") or {})
            if self._is_entry_of(entry, request):
                before |= fields
            elif entry.get("operation") == "Apply":
                others |= fields
        merged = merge_applied(copy.deepcopy(old), config)
        for path in sorted(before - applied - others, key=len):
            remove_field(merged, path, others)
        return merged, applied

    def _track_managers(self, request: rendering.Request, kind: str, config: Any, old: dict[str, Any],
                        new: dict[str, Any], applied: set[Field]) -> None:
        """Keep metadata.managedFields true (in `new`): the applier owns what it applied; a field
        another write changed is no longer its former owners'. Raises the 409 of an apply that
        would change another applier's field without force=true."""
        entries = (old.get("metadata") or {}).get("managedFields") or []
        if kind != "apply" and not entries:
            return
        changed = changed_fields(ownable(old), ownable(new))
        force = request.params.get("force", "").lower() == "true"
        tracked: list[dict[str, Any] | None] = []  # None: where the applier's own entry goes
        mine: dict[str, Any] | None = None
        conflicts: list[str] = []
        for entry in entries:
            if kind == "apply" and self._is_entry_of(entry, request):
                mine = entry
                tracked.append(None)
                continue
            fields = decode_fields(entry.get("fieldsV1") or {})
            if kind == "apply" and not force and entry.get("operation") == "Apply":
                conflicts += [f'conflict with "{entry.get("manager")}": {format_field(path)}'
                              for path in sorted(fields & applied & changed, key=repr)]
            kept = fields - changed
            if kept == fields:
                tracked.append(entry)
            elif kept:
                tracked.append({**entry, "fieldsV1": encode_fields(kept)})
        if conflicts:
            raise k8s.KubernetesError(
                status=409, reason="Conflict",
                message=f"Apply failed with {len(conflicts)} conflict{'s' if len(conflicts) > 1 else ''}: " + "; ".join(conflicts),
                details={"name": request.name, "group": request.resource.group, "kind": request.resource.plural,
                         "causes": [{"reason": "FieldManagerConflict", "message": c} for c in conflicts]},
            )
        own: dict[str, Any] | None = None
        if kind == "apply" and applied:
            if mine is not None and decode_fields(mine.get("fieldsV1") or {}) == applied:
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
