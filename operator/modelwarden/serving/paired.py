"""A paired model: the stable's model scored beside the served one, to count how often they agree.

A shadow's accuracy needs ground truth, which may come weeks later; whether it predicts what the
stable predicts for the very same rows is known at once. ``modelwarden serve --paired-model``
loads that second model (serving.startup), and after every answered prediction request
(serving.routes) the rows are handed to it. :class:`PairedScoring` counts rows per (predicted,
paired_predicted) class pair; the operator reads the diagonal's share as the agreement rate.

The paired model runs off the request's path, in a thread of its own: the served model's
latency, throughput and answers are what they would be without it (a shadow's latency is judged
against stable's). When it falls more than ``MAX_PENDING`` requests behind, a request is left
unpaired and counted (reason ``behind``): dropping depends on load, not on what the rows hold,
so the pairs that are counted stay a fair sample. Classifiers only: two regression
outputs "agree" only within a tolerance nobody has chosen, so a regression model is served
unpaired, with a startup warning.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from modelwarden.contract import metrics
from modelwarden.contract.metrics import level_key
from modelwarden.serving.exposition import counter
from modelwarden.serving.model import ModelLoadError, ModelRunner, load_model
from modelwarden.serving.service import ServeConfig, StartupError

log = logging.getLogger(__name__)
MAX_PENDING = 32  # requests waiting for the paired model before one is left unpaired
UNPAIRED_REASONS = ("behind", "model_error")  # why a request's rows are in no pair


class NotPairable(Exception):
    """The paired model cannot be compared with the served one: served unpaired, with this warning."""


def load_paired(config: ServeConfig, served: ModelRunner, n_features: int | None) -> ModelRunner:
    """The paired model (``config.paired_model``). A model that does not load, or takes other inputs,
    is a StartupError (the pod is misconfigured); a pair that is not two classifiers is NotPairable."""
    try:
        runner, artifact = load_model(str(config.paired_model), config.trusted_skops_types)
    except ModelLoadError as exc:
        raise StartupError(f"cannot load the paired model (--paired-model): {exc}") from exc
    where = f"the paired model {artifact.path}"
    if runner.n_features is not None and n_features is not None and runner.n_features != n_features:
        raise StartupError(f"{where} takes {runner.n_features} features but the served model takes {n_features}")
    if runner.task != "classification" or served.task != "classification":
        raise NotPairable(f"{where} is a {runner.task} model and the served model a {served.task} model: agreement "
                          "is defined for two classifiers only, so requests are not paired (an agreement check sees "
                          "no paired predictions)")
    return runner


class PairedScoring:
    """Rows per (served class, paired class): a prometheus_client collector on the server's registry.

    Every pair of the two models' known classes is exported at 0 from the start, because
    ``increase()`` takes a series' first sample as its start and would miss counts a series is
    born with; a pair outside them (a model without ``classes_``) is added when first seen.
    """

    def __init__(self, runner: ModelRunner, version: str, labels: dict[str, str], classes: list[str],
                 registry: CollectorRegistry | None = None, max_pending: int = MAX_PENDING):
        self.runner = runner
        self.version = version
        self.labels = {**labels, metrics.PAIRED_VERSION: version}  # model, version, track: this server's
        paired_classes = [level_key(c) for c in runner.classes or []]
        self._counts: dict[tuple[str, str], int] = {(p, q): 0 for p in classes for q in paired_classes}
        self._unpaired = dict.fromkeys(UNPAIRED_REASONS, 0)
        self._lock = threading.Lock()  # the scoring thread counts while a scrape copies
        self._pending = 0
        self._max_pending = max_pending
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="paired-model")
        if registry is not None:
            registry.register(self)

    @staticmethod
    def series(classes: list[str], runner: ModelRunner) -> int:
        """The series it exports from the start (for the server's --max-series budget)."""
        return len(classes) * len(runner.classes or []) + len(UNPAIRED_REASONS)

    def submit(self, rows: np.ndarray, predicted: np.ndarray) -> None:
        """Queue one answered request's rows for the paired model; never blocks, never raises."""
        with self._lock:
            if self._pending >= self._max_pending:
                self._unpaired["behind"] += 1
                return
            self._pending += 1
        self._executor.submit(self._score, rows, predicted)

    def _score(self, rows: np.ndarray, predicted: np.ndarray) -> None:
        try:
            self.count(predicted, self.runner.predict(rows).predicted)
        except Exception:  # noqa: BLE001 - whatever the paired model does, the user's request stood
            with self._lock:
                self._unpaired["model_error"] += 1
                first = self._unpaired["model_error"] == 1
            if first:
                log.warning("the paired model (version %s) failed to predict; further failures are only counted in %s",
                            self.version, metrics.PAIRED_PREDICTION_ERRORS, exc_info=True)
        finally:
            with self._lock:
                self._pending -= 1

    def count(self, predicted: np.ndarray, paired: np.ndarray) -> None:
        """Add one batch: ``predicted[i]`` (served model) and ``paired[i]`` (paired model) for every row."""
        predicted, paired = np.asarray(predicted), np.asarray(paired)
        if predicted.shape != paired.shape or predicted.ndim != 1:
            raise ValueError(f"the paired model gave {paired.shape} predictions for {predicted.shape}")
        tally: Counter[tuple[str, str]] = Counter()
        for (p, q), n in Counter(zip(predicted.tolist(), paired.tolist())).items():
            tally[level_key(p), level_key(q)] += n  # distinct pairs only: a batch costs one zip, not a call per row
        with self._lock:
            for key, n in tally.items():
                self._counts[key] = self._counts.get(key, 0) + n

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued request is scored (tests, shutdown); False on timeout."""
        done = threading.Event()
        self._executor.submit(done.set)
        return done.wait(timeout)

    def snapshot(self) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
        """The counts by (predicted, paired_predicted) and the unpaired requests by reason, copied under the lock."""
        with self._lock:
            return dict(self._counts), dict(self._unpaired)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def collect(self) -> Iterator[Metric]:
        counts, unpaired = self.snapshot()
        pairs = counter(metrics.PAIRED_PREDICTIONS, "Rows scored by both this server's model and the paired model, "
                        "by both predicted classes (agreement: predicted == paired_predicted).")
        for (predicted, paired), n in counts.items():
            pairs.add_sample(metrics.PAIRED_PREDICTIONS, {
                **self.labels, metrics.PREDICTED: predicted, metrics.PAIRED_PREDICTED: paired}, float(n))
        yield pairs
        errors = counter(metrics.PAIRED_PREDICTION_ERRORS, "Answered prediction requests whose rows are in no pair, by "
                         "reason: behind (the paired model was too far behind) or model_error (it failed).")
        for reason, n in unpaired.items():
            errors.add_sample(metrics.PAIRED_PREDICTION_ERRORS, {**self.labels, metrics.REASON: reason}, float(n))
        yield errors
