"""Which policies' retraining runs must be listed from their backend before a tick decides.

Runs outside batch/v1 have no watch (the Job watch's index does this for Jobs), so a run launched
while the status write recording it was lost (refused, the API failing, the operator dying) would
be unknown to the next decision, which could launch another. A policy's runs are therefore listed,
and an unrecorded one adopted, on the policy's first tick in this process and whenever a tick that
launched (or tried to) or adopted has not been persisted. A failed listing is retried after the
backend's poll interval, and until a listing succeeds nothing is launched.
"""

from __future__ import annotations

import threading
import time


class RunLedger:
    """Shared by the ticks of all policies (one tick per policy at a time); keyed by policy uid."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listed: set[str] = set()  # listed since the operator started
        self._unrecorded: set[str] = set()  # a launch or an adoption that status may not hold
        self._retry_at: dict[str, float] = {}  # a failed listing: not asked again before

    def must_list(self, uid: str) -> bool:
        with self._lock:
            return uid not in self._listed or uid in self._unrecorded

    def may_list_now(self, uid: str) -> bool:
        with self._lock:
            return time.monotonic() >= self._retry_at.get(uid, 0.0)

    def listed(self, uid: str) -> None:
        with self._lock:
            self._listed.add(uid)
            self._retry_at.pop(uid, None)

    def listing_failed(self, uid: str, retry_in: float) -> None:
        with self._lock:
            self._retry_at[uid] = time.monotonic() + retry_in

    def unrecorded(self, uid: str) -> None:
        """Before a status write that records a launch or an adoption (cleared by `recorded`)."""
        with self._lock:
            self._unrecorded.add(uid)

    def recorded(self, uid: str) -> None:
        with self._lock:
            self._unrecorded.discard(uid)

    def forget(self, uid: str) -> None:
        """The policy is gone, or no longer this process's."""
        with self._lock:
            self._listed.discard(uid)
            self._unrecorded.discard(uid)
            self._retry_at.pop(uid, None)


LEDGER = RunLedger()
