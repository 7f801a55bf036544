"""PromQL for the metrics contract (pure string building, no I/O).

Every histogram is fetched with ONE grouped query per window (``sum by (feature, le)``), never
one query per feature: a 1000-feature policy costs one round trip per side. A window's count is
the counter's difference between its edges (see ``_window``): exact integers, where
``increase()`` would extrapolate to the window's edges and inflate every count. An earlier window is
addressed with the PromQL ``offset`` modifier (not the ``time`` parameter), so that all queries
of one evaluation share the same evaluation time and a reference offset is visible in the query
text itself. Label values are always escaped: a resource name cannot inject PromQL.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta

from modelwarden.api.duration import format_duration
from modelwarden.contract import metrics, reasons

# The series these queries read, as the model server writes them (modelwarden.contract.metrics).
FEATURE_BUCKETS = metrics.FEATURE_VALUE + metrics.BUCKET
PREDICTION_BUCKETS = metrics.PREDICTION_VALUE + metrics.BUCKET
PREDICTED_CLASSES = metrics.PREDICTED_CLASS
LATENCY_BUCKETS = metrics.INFERENCE_LATENCY + metrics.BUCKET
LATENCY_COUNT = metrics.INFERENCE_LATENCY + metrics.COUNT
FEEDBACK = metrics.FEEDBACK
PAIRED = metrics.PAIRED_PREDICTIONS
PREDICTIONS = metrics.PREDICTIONS
# error_rate counts the server's failures only (5xx): a client can send any number of bad requests
# (4xx), and they must not push a canary over its maximum. Servers older than the server-error
# counter only have the all-errors counter, so its two 5xx reasons are the fallback.
ERRORS = metrics.SERVER_ERRORS
ALL_ERRORS = metrics.PREDICTION_ERRORS
SERVER_ERROR_REASONS = "|".join(reasons.SERVER_ERROR_REASONS)  # a regex alternation of plain words
OUTLIERS = metrics.PREDICTION_OUTLIERS
SQUARED_ERROR_SUM = metrics.FEEDBACK_SQUARED_ERROR_SUM
ABSOLUTE_ERROR_SUM = metrics.FEEDBACK_ABSOLUTE_ERROR_SUM
FEEDBACK_OBSERVATIONS = metrics.FEEDBACK_OBSERVATIONS
FOURTH_POWER_ERROR_SUM = metrics.FEEDBACK_FOURTH_POWER_ERROR_SUM

# quantity name -> counter, fetched together in one query (see counters()).
COUNTERS: dict[str, str] = {
    "predictions": PREDICTIONS,
    "requests": LATENCY_COUNT,  # successful requests: every one is timed
    "errors": ERRORS,  # requests the server failed (5xx); see _sum_of
    "outliers": OUTLIERS,
    "squared_error_sum": SQUARED_ERROR_SUM,
    "absolute_error_sum": ABSOLUTE_ERROR_SUM,
    "feedback_observations": FEEDBACK_OBSERVATIONS,
    "fourth_power_error_sum": FOURTH_POWER_ERROR_SUM,
}
QUANTITY_LABEL = "modelwarden_quantity"
_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")


def escape_label_value(value: str) -> str:
    """The inside of a double-quoted PromQL string for ``value`` (quotes, backslashes, control chars escaped)."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


@dataclass(frozen=True)
class Selector:
    """Which series belong to one track of one model.

    ``version`` None matches any version (an ``offset`` reference spans whatever version the
    track served then). ``namespace_label`` set (e.g. "namespace" with Kubernetes service
    discovery) also matches ``namespace``; unset, ``namespace`` only feeds custom templates.
    """

    model: str
    track: str
    version: str | None = None
    namespace: str = ""
    namespace_label: str | None = None

    def matchers(self) -> str:
        pairs = [(metrics.MODEL, self.model), (metrics.TRACK, self.track)]
        if self.version is not None:
            pairs.append((metrics.VERSION, self.version))
        if self.namespace_label:
            pairs.append((self.namespace_label, self.namespace))
        return ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs)


# How far back an instant selector finds a sample (Prometheus's default --query.lookback-delta):
# a reset between that sample and the window's first one must be seen as well.
LOOKBACK = timedelta(minutes=5)
PROCESS_START = "process_start_time_seconds"  # prometheus_client's process collector, on every model server


def _window(metric: str, selector: Selector, window: timedelta, offset: timedelta | None, extra: str = "") -> str:
    """Per series, how much a counter grew over the window, without extrapolation.

    ``increase()`` scales the growth it sees between the window's first and last samples up to
    the whole window: counts become fractional and inflated (2-minute windows on 30 s scrapes:
    by a third), and a chi-squared test on them finds drift that is not there. Instead, per series:

    1. present at both edges with no reset near the window (and no fall between them): the counter
       at the end minus the counter at the start — exactly the observations scraped in between;
    2. born inside the window with no reset: its value at the end. Born means absent at the
       window's start and either scraped at 0 (the model server exports a new series at 0 once) or
       from a process that started inside the window (its target's ``process_start_time_seconds``,
       joined on ``instance`` and ``job``: a new canary pod serves before its first scrape, so its
       first sample is rarely 0, but everything it counted is from inside the window);
    3. anything else (a reset, a series that ended, a gap): ``increase()``, PromQL's estimate.
    """
    series = f"{metric}{{{selector.matchers()}{extra}}}"
    end = f" offset {format_duration(offset)}" if offset else ""
    start = f" offset {format_duration((offset or timedelta()) + window)}"
    span = format_duration(window)
    near = format_duration(window + LOOKBACK)
    # ">= 0": a reset the resets() range cannot see (a longer --query.lookback-delta than LOOKBACK)
    # leaves a negative difference; that series falls back to increase() instead.
    both_edges = f"(({series}{end} - {series}{start}) >= 0 unless resets({series}[{near}]{end}) > 0)"
    back = ((offset or timedelta()) + window).total_seconds()
    namespace = (f'{{{selector.namespace_label}="{escape_label_value(selector.namespace)}"}}'
                 if selector.namespace_label else "")
    started = f"({series}{end} and on (instance, job) ({PROCESS_START}{namespace}{end} > (time() - {back:.3f})))"
    born = (f"((({series}{end} unless {series}{start}) and (min_over_time({series}[{span}]{end}) == 0 or {started}))"
            f" unless resets({series}[{span}]{end}) > 0)")
    return f"({both_edges} or {born} or increase({series}[{span}]{end}))"


def feature_buckets(selector: Selector, window: timedelta, offset: timedelta | None = None) -> str:
    """All feature histograms of a track in one query: one series per (feature, le)."""
    return f"sum by ({metrics.FEATURE}, {metrics.LE}) ({_window(FEATURE_BUCKETS, selector, window, offset)})"


def prediction_buckets(selector: Selector, window: timedelta, offset: timedelta | None = None) -> str:
    return f"sum by ({metrics.LE}) ({_window(PREDICTION_BUCKETS, selector, window, offset)})"


def predicted_classes(selector: Selector, window: timedelta, offset: timedelta | None = None) -> str:
    """Predictions per predicted class: the prediction check of a classifier without scores."""
    return f"sum by ({metrics.CLASS}) ({_window(PREDICTED_CLASSES, selector, window, offset)})"


def latency_buckets(selector: Selector, window: timedelta) -> str:
    return f"sum by ({metrics.LE}) ({_window(LATENCY_BUCKETS, selector, window, None)})"


def confusion(selector: Selector, window: timedelta) -> str:
    """Feedback confusion counts by (predicted, actual)."""
    return f"sum by ({metrics.PREDICTED}, {metrics.ACTUAL}) ({_window(FEEDBACK, selector, window, None)})"


def paired(selector: Selector, window: timedelta, paired_version: str | None = None) -> str:
    """Rows scored by the served and the paired (stable's) model, by their two classes; with
    ``paired_version``, only pairs with that stable version (not an earlier stable's, mid-rollout)."""
    extra = f',{metrics.PAIRED_VERSION}="{escape_label_value(paired_version)}"' if paired_version is not None else ""
    return f"sum by ({metrics.PREDICTED}, {metrics.PAIRED_PREDICTED}) ({_window(PAIRED, selector, window, None, extra)})"


def counters(selector: Selector, window: timedelta, quantities: list[str], feedback_window: timedelta | None = None) -> str:
    """Several counters' window increases in one round trip, each tagged with its quantity name.

    ``label_replace`` on an empty-regex match adds the label to every series; ``or`` keeps the
    union. A counter with no series is simply absent from the result. Feedback quantities look
    back ``feedback_window`` (default ``window``): labels arrive later than predictions.
    """
    parts = [
        f'label_replace({_sum_of(quantity, selector, _span(quantity, window, feedback_window))}, '
        f'"{QUANTITY_LABEL}", "{quantity}", "", "")'
        for quantity in quantities
    ]
    return " or ".join(parts)


def _sum_of(quantity: str, selector: Selector, span: timedelta) -> str:
    """One quantity's increase summed over the track's series. ``errors`` falls back to the
    all-errors counter's 5xx reasons where no server exports the server-error counter yet."""
    total = f"sum({_window(COUNTERS[quantity], selector, span, None)})"
    if quantity != "errors":
        return total
    legacy = _window(ALL_ERRORS, selector, span, None, f',{metrics.REASON}=~"{SERVER_ERROR_REASONS}"')
    return f"({total} or sum({legacy}))"


FEEDBACK_QUANTITIES = frozenset({"squared_error_sum", "absolute_error_sum", "feedback_observations", "fourth_power_error_sum"})


def _span(quantity: str, window: timedelta, feedback_window: timedelta | None) -> timedelta:
    return feedback_window if feedback_window is not None and quantity in FEEDBACK_QUANTITIES else window


def render_template(template: str, selector: Selector, window: timedelta) -> str:
    """Substitute {{ model }}, {{ track }}, {{ version }}, {{ namespace }}, {{ window }} and
    {{ selector }}.

    Label values are escaped for use inside double quotes, e.g. ``{model="{{ model }}"}``;
    ``{{ window }}`` is a PromQL duration such as ``30m``; ``{{ selector }}`` is every matcher a
    built-in query uses (model, track, version when known, and the namespace label), so
    ``sum(rate(my_metric{ {{ selector }} }[5m]))`` stays inside the policy's namespace. An
    unknown variable is an error.
    """
    values = {
        "selector": selector.matchers(),
        "model": escape_label_value(selector.model),
        "track": escape_label_value(selector.track),
        "version": escape_label_value(selector.version or ""),
        "namespace": escape_label_value(selector.namespace),
        "window": format_duration(window),
    }

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(f"unknown template variable {{{{ {name} }}}}; known: {', '.join(sorted(values))}")
        return values[name]

    return _VARIABLE.sub(substitute, template)
