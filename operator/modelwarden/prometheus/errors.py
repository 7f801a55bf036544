"""Why a metrics query failed; each kind leads to a different verdict or retry decision."""

from __future__ import annotations


class MetricsError(Exception):
    """Base of every metrics provider error."""


class Unreachable(MetricsError):
    """The backend could not be reached or kept failing (connection error, timeout, 5xx after retries).

    Transient: the evaluation is Error and will be retried at the next interval.
    """


class MalformedAnswer(Unreachable):
    """The backend answered with something that is not a Prometheus API answer (invalid JSON,
    `data: null`, a series without `metric`, a value that is not a number)."""


class QueryError(MetricsError):
    """The backend rejected the query (bad PromQL, 4xx, or an error status in the body).

    Not transient: retrying the same query cannot help; the policy needs fixing.
    """


class NoData(MetricsError):
    """The query ran but returned no series: nothing was observed (yet) for these labels."""
