"""Sandbox traffic: requests split across the tracks by the ModelDeployment's applied weights,
each answered prediction followed by its ground truth (stateless feedback), clean or drifted."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import requests

from modelwarden.sandbox import datagen
from modelwarden.sandbox.modelserver import ModelServerProcess


@dataclass
class TrafficStats:
    requests: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    mirrored: int = 0  # requests copied to a mirror (answered, not counted in `requests`)


class TrafficGenerator:
    """Every tick, sends `rate * tick` rows per second in batches, split by `weights()`.

    `servers()` maps track -> the running server (absent tracks get no traffic); `weights()`
    returns the percent per track; either failing with a request error skips the tick. `drift[track]` switches that track's data to drifted rows
    and noisier labels, which is how the sandbox injects drift. `mirrors()` maps track -> the percent of
    requests copied to it (a shadow): the same rows, after the primary answered, the copy's answer
    discarded and never given feedback, as a mesh's mirroring does.
    """

    def __init__(self, name: str, servers: Callable[[], dict[str, ModelServerProcess]],
                 weights: Callable[[], dict[str, int]], rows_per_second: int = 200, batch: int = 10,
                 tick: float = 0.5, seed: int = 11, mirrors: Callable[[], dict[str, int]] = dict) -> None:
        self.name, self.servers, self.weights, self.mirrors = name, servers, weights, mirrors
        self.rows_per_second, self.batch, self.tick = rows_per_second, batch, tick
        self.drift: dict[str, datagen.Drift] = {}
        self.stats = TrafficStats()
        self._seed = seed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-traffic", daemon=True)
        self._session = requests.Session()

    def start(self) -> "TrafficGenerator":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        rng = np.random.default_rng(self._seed)
        while not self._stop.wait(self.tick):
            try:  # the API server or a model server slow to answer costs a tick, never the thread
                servers, weights, mirrors = self.servers(), self.weights(), self.mirrors()
            except (requests.RequestException, KeyError, ValueError):
                self.stats.errors += 1
                continue
            live = {track: w for track, w in weights.items() if w > 0 and track in servers}
            total = sum(live.values())
            if not total:
                continue
            batches = max(1, round(self.rows_per_second * self.tick / self.batch))
            tracks = rng.choice(list(live), size=batches, p=[w / total for w in live.values()])
            copies = [(servers[t], p) for t, p in mirrors.items() if p > 0 and t in servers]
            for track in tracks:
                copy_to = [server for server, percent in copies if rng.random() * 100 < percent]
                self._send(servers[track], str(track), int(rng.integers(1 << 30)), copy_to)

    def _send(self, server: ModelServerProcess, track: str, seed: int, copy_to: Sequence[ModelServerProcess] = ()) -> None:
        drift = self.drift.get(track, datagen.Drift())
        rows, labels = datagen.classification(self.batch, seed, drift)
        try:
            answer = self._session.post(f"{server.url}/v1/models/{self.name}:predict",
                                        json={"instances": rows.tolist()}, timeout=5)
            answer.raise_for_status()
            feedback = [{"predicted": p, "actual": int(a)} for p, a in zip(answer.json()["predictions"], labels)]
            self._session.post(f"{server.url}/v1/models/{self.name}/feedback", json=feedback, timeout=5).raise_for_status()
            self.stats.requests[track] = self.stats.requests.get(track, 0) + 1
        except (requests.RequestException, KeyError, ValueError):
            self.stats.errors += 1
            return
        for mirror in copy_to:
            try:
                self._session.post(f"{mirror.url}/v1/models/{self.name}:predict", json={"instances": rows.tolist()},
                                   timeout=5).raise_for_status()
                self.stats.mirrored += 1
            except requests.RequestException:
                self.stats.errors += 1
