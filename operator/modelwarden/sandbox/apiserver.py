"""An in-memory Kubernetes API server for the sandbox and the tests, built on kmock's emulator.

kmock's KubernetesEmulator stores objects and streams watch events but behaves like a plain
JSON store. This subclass adds what kopf and our operator rely on from a real API server:

- metadata on create: uid, namespace, resourceVersion, generation, creationTimestamp;
- a cluster-wide, monotonically increasing resourceVersion bumped on every write, returned by lists;
- `generation` bumped when anything outside metadata/status changes;
- the status subresource: writes to the main endpoint keep the old status, writes to /status
  change only the status;
- JSON-patch `test` failures answered with 422 (optimistic concurrency for kopf);
- server-side apply requests (`application/apply-patch+yaml`) create a missing object and
  otherwise merge (an approximation: no field ownership);
- watches that start at a resourceVersion skip the replayed objects that are not newer;
- equality-based `labelSelector` on lists and watches.

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

STATUS_SUBRESOURCE = "status"
NAMESPACES = kmock.resource("", "v1", "namespaces")
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}
_kmock_parse_path = parsing.parse_path


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


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the API-server behaviour listed in the module docstring."""

    _versions: Iterable[int] = attrs.field(factory=lambda: itertools.count(1), init=False)
    _current_version: int = attrs.field(default=0, init=False)

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

    async def _handle(self, request: rendering.Request) -> Any:
        if request.resource is None:
            return await super()._handle(request)
        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            self._fill_new_metadata(request.data, request.namespace)
            await self.ensure_namespace(request.data["metadata"].get("namespace"))
            return await super()._handle(request)
        if request.action == enums.action.UPDATE and request.name is not None:
            return await self._update(request)
        if request.action == enums.action.DELETE and request.name is not None:
            async with self._lock:
                key = (request.resource, request.namespace, request.name)
                obj = self._objects[key] if key in self._objects else None
                marks_only = (
                    obj is not None and not obj.deleted
                    and obj.get("metadata", {}).get("finalizers")
                    and not obj.get("metadata", {}).get("deletionTimestamp")
                )
                if marks_only:
                    current = copy.deepcopy(obj.raw)
                    current["metadata"]["deletionTimestamp"] = _now()
                    current["metadata"]["resourceVersion"] = self.next_version()
                    obj.history.append(current)
                    await self._buses[request.resource].put({"type": "MODIFIED", "object": current})
            if marks_only:
                return await apps.RawHandler._handle(self, request)
        return await super()._handle(request)

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

    async def _update(self, request: rendering.Request) -> Any:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        data = request.data
        if data is None and request.text:
            data = yaml.safe_load(request.text)  # server-side apply bodies may be YAML
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            exists = key in self._objects and not self._objects[key].deleted
            if not exists:
                if content_type != "application/apply-patch+yaml" or not isinstance(data, dict):
                    raise k8s.KubernetesObjectNotFoundError()
                new = copy.deepcopy(data)
                self._fill_new_metadata(new, request.namespace)
                new["metadata"]["name"] = request.name
                self._objects[key] = new
                await self._buses[request.resource].put({"type": "ADDED", "object": new})
            else:
                obj = self._objects[key]
                old = copy.deepcopy(obj.raw)
                try:
                    patched = dict(dicts.patch_dict(old, data or {}))
                except jsonpatch.JsonPatchTestFailed as exc:
                    raise k8s.KubernetesError(status=422, reason="Invalid", message=str(exc)) from exc
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, ValueError, TypeError) as exc:
                    raise k8s.KubernetesError(status=422, reason="Invalid", message=f"invalid patch: {exc}") from exc
                new = self._apply_subresource_rules(request, old, patched)
                if new == old:
                    return await apps.RawHandler._handle(self, request)  # a no-op write keeps the version
                new.setdefault("metadata", {})["resourceVersion"] = self.next_version()
                obj.history.append(new)
                meta = new["metadata"]
                if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                    obj.delete()
                    await self._buses[request.resource].put({"type": "DELETED", "object": new})
                else:
                    await self._buses[request.resource].put({"type": "MODIFIED", "object": new})
        return await apps.RawHandler._handle(self, request)

    def _apply_subresource_rules(
        self, request: rendering.Request, old: dict[str, Any], patched: dict[str, Any]
    ) -> dict[str, Any]:
        new = copy.deepcopy(patched)
        # Identity fields are the server's, whatever a patch says.
        for field in ("uid", "creationTimestamp", "namespace", "name", "generation", "resourceVersion"):
            if field in old.get("metadata", {}):
                new.setdefault("metadata", {})[field] = old["metadata"][field]
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


class EmulatedApiServer:
    """Runs the emulator on a loopback port in a background thread with its own event loop."""

    def __init__(self, port: int = 0, crd_dir: Path | None = None, extra_crd_dirs: tuple[Path, ...] = ()) -> None:
        self.requested_port = port
        self.crd_dirs = (crd_dir or default_crd_dir(), *extra_crd_dirs)
        self.emulator: ApiServerEmulator | None = None
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> "EmulatedApiServer":
        self._thread = threading.Thread(target=self._run, name="api-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("API emulator did not start")
        if self._error:
            raise RuntimeError("API emulator failed to start") from self._error
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # surfaced to start()
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        emulator = ApiServerEmulator()
        emulator.resources.load_bundled()
        for crd_dir in self.crd_dirs:
            load_crds(emulator, crd_dir)
        async with emulator, kmock.Server(emulator, port=self.requested_port or None) as server:
            await emulator.ensure_namespace("default")
            self.emulator = emulator
            self.port = server.port
            self._ready.set()
            await self._stopping.wait()

    def stop(self) -> None:
        if self._loop and self._stopping and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread:
            self._thread.join(10)

    def kubeconfig(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": "emulator"}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "emulator", "namespace": "default"}}],
            "current-context": "emulator",
        }

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump(self.kubeconfig()))
        return path

    def __enter__(self) -> "EmulatedApiServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
