"""A paired model: the stable's model scored beside the served one, to count how often they agree.

A shadow's accuracy needs ground truth, which may come weeks later; whether it predicts what the
stable predicts for the very same rows is known at once. ``modelwarden serve --paired-model``
loads that second model (serving.startup), and after every answered prediction request
(serving.routes, after ``ModelService.record``, so the served model's latency excludes it) the
rows are scored by it too. :class:`PairedScoring` counts rows per (predicted, paired_predicted)
class pair; the operator reads the diagonal's share as the agreement rate. Classifiers only: two
regression outputs "agree" only within a tolerance nobody has chosen.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Executor

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from modelwarden.contract import metrics
from modelwarden.contract.metrics import level_key
from modelwarden.serving.exposition import counter, single_counter
from modelwarden.serving.model import ModelLoadError, ModelRunner, load_model
from modelwarden.serving.service import ServeConfig, StartupError

log = logging.getLogger(__name__)


def load_paired(config: ServeConfig, served: ModelRunner, n_features: int | None) -> ModelRunner:
    """The paired model (``config.paired_model``), refused at startup unless it is a classifier
    beside a classifier that takes the served model's ``n_features`` inputs (None: unknown)."""
    try:
        runner, artifact = load_model(str(config.paired_model), config.trusted_skops_types)
    except ModelLoadError as exc:
        raise StartupError(f"cannot load the paired model (--paired-model): {exc}") from exc
    where = f"the paired model {artifact.path}"
    if runner.task != served.task:
        raise StartupError(
            f"{where} is a {runner.task} model but the served model is a {served.task} model: agreement is "
            "defined for classifiers only, so both must be classifiers (or serve without --paired-model)"
        )
    if runner.task != "classification":
        raise StartupError(
            f"{where} and the served model are regression models: agreement is defined for classifiers only "
            "(serve without --paired-model)"
        )
    if runner.n_features is not None and n_features is not None and runner.n_features != n_features:
        raise StartupError(f"{where} takes {runner.n_features} features but the served model takes {n_features}")
    return runner


class PairedScoring:
    """Rows per (served class, paired class): a prometheus_client collector on the server's registry.

    Every pair of the two models' known classes is exported at 0 from the start, because
    ``increase()`` takes a series' first sample as its start and would miss counts a series is
    born with; a pair outside them (a model without ``classes_``) is added when first seen.
    """

    def __init__(self, runner: ModelRunner, version: str, labels: dict[str, str], classes: list[str],
                 registry: CollectorRegistry | None = None):
        self.runner = runner
        self.version = version
        self.labels = {**labels, metrics.PAIRED_VERSION: version}  # model, version, track: this server's
        paired_classes = [level_key(c) for c in runner.classes or []]
        self._counts: dict[tuple[str, str], int] = {(p, q): 0 for p in classes for q in paired_classes}
        self._errors = 0
        self._lock = threading.Lock()  # scoring may run in the inference threads while a scrape copies
        if registry is not None:
            registry.register(self)

    async def score(self, rows: np.ndarray, predicted: np.ndarray, executor: Executor | None = None) -> None:
        """Score ``rows`` with the paired model and count each row's pair. Never raises: the request
        was already answered by the served model, so a failure is only counted (and logged once)."""
        try:
            if executor is None:
                outputs = self.runner.predict(rows)
            else:
                outputs = await asyncio.get_running_loop().run_in_executor(executor, self.runner.predict, rows)
            self.count(predicted, outputs.predicted)
        except Exception:  # noqa: BLE001 - whatever the paired model does, the user's request stands
            with self._lock:
                self._errors += 1
                first = self._errors == 1
            if first:
                log.warning("the paired model (version %s) failed to predict; further failures are only counted in %s",
                            self.version, metrics.PAIRED_PREDICTION_ERRORS, exc_info=True)

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

    def snapshot(self) -> tuple[dict[tuple[str, str], int], int]:
        """The counts by (predicted, paired_predicted) and the failed requests, copied under the lock."""
        with self._lock:
            return dict(self._counts), self._errors

    def collect(self) -> Iterator[Metric]:
        counts, errors = self.snapshot()
        pairs = counter(metrics.PAIRED_PREDICTIONS, "Rows scored by both this server's model and the paired model, "
                        "by both predicted classes (agreement: predicted == paired_predicted).")
        for (predicted, paired), n in counts.items():
            pairs.add_sample(metrics.PAIRED_PREDICTIONS, {
                **self.labels, metrics.PREDICTED: predicted, metrics.PAIRED_PREDICTED: paired}, float(n))
        yield pairs
        yield single_counter(metrics.PAIRED_PREDICTION_ERRORS,
                             "Prediction requests the paired model failed to score (their rows are in no pair).",
                             self.labels, errors)
