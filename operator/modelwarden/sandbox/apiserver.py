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

Modules: apiserver_emulator.py (the emulator's core: metadata, versions, routing, deletion, lists
and watches, memory bounds), apiserver_writes.py (PATCH, PUT, server-side apply),
apiserver_fields.py (server-side apply's field algebra), apiserver_objects.py (what they share).
This one runs the emulator on a loopback port and loads CRDs into it.
"""

from __future__ import annotations

import argparse
import functools
import json
import threading
from pathlib import Path
from typing import Any

import kmock
import yaml

from modelwarden.sandbox.apiserver_emulator import ApiServerEmulator
from modelwarden.sandbox.loopserver import LoopServer



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
