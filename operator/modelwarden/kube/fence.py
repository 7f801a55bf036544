"""The write fence: no decision is made from a view older than the operator's own last write.

kopf hands handlers the object as last seen through the watch. Right after the operator writes
status, that view can still be the one before the write (the watch event is on its way), and a
decision made from it would undo the write (a promotion reverted, a step redone). The fence
remembers the resourceVersion each of our writes produced; a view below it is stale and waits.

resourceVersions are etcd revisions: integers that only grow, which is what makes "older than"
decidable. A version that is not an integer is never called stale here: the conditional write
(`KubeApi.patch_status`) still refuses to persist a decision computed from an outdated view.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelwarden.kube.api import KubeApi


def _revision(resource_version: str | None) -> int | None:
    try:
        return int(resource_version) if resource_version is not None else None
    except ValueError:
        return None


class WriteFence:
    """Per object (uid): the resourceVersion of the operator's last write. Thread-safe."""

    def __init__(self) -> None:
        self._written: dict[str, int] = {}
        self._lock = threading.Lock()

    def record(self, uid: str, resource_version: str | None) -> None:
        revision = _revision(resource_version)
        if revision is None:
            return
        with self._lock:
            self._written[uid] = max(revision, self._written.get(uid, 0))

    def is_stale(self, uid: str, resource_version: str | None) -> bool:
        """Whether a view at `resource_version` predates our last write to the object."""
        revision = _revision(resource_version)
        with self._lock:
            written = self._written.get(uid)
        return revision is not None and written is not None and revision < written

    def forget(self, uid: str) -> None:
        with self._lock:
            self._written.pop(uid, None)


def write_status(api: "KubeApi", fence: WriteFence, view: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Persist status `changes` only if the object is still at the view's resourceVersion; the
    write is recorded in the fence. Raises `StaleView` when the object moved on (re-read, decide again)."""
    meta = view["metadata"]
    written = api.patch_status(view["apiVersion"], view["kind"], meta.get("namespace"), meta["name"], changes,
                               meta["resourceVersion"])
    fence.record(meta["uid"], (written.get("metadata") or {}).get("resourceVersion"))
    return written
