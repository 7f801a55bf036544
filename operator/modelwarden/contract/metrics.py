"""Metric and label names of the contract, and how values become label strings.

The model server writes these series (``serving.monitor``/``serving.exposition``) and the
operator reads them (``metrics.queries``); a name spelled differently on one side would not fail,
it would silently find no data. So both sides import the names from here. The table with types
and meanings is docs/metrics.md.

Names here are what Prometheus stores. A histogram's name is its family name; its samples are
that name plus ``BUCKET``/``COUNT``/``SUM``. Counters are named with their ``_total`` sample
name, and the three regression ``…_error_sum`` series (untyped, see docs/metrics.md) with theirs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from prometheus_client.utils import floatToGoString

# -- metric names ---------------------------------------------------------------------------------

PREDICTIONS = "modelwarden_predictions_total"  # rows predicted, not requests
PREDICTION_ERRORS = "modelwarden_prediction_errors_total"  # by REASON (contract.reasons): 4xx and 5xx together
CLIENT_ERRORS = "modelwarden_client_errors_total"  # by REASON: requests answered 4xx (any route)
SERVER_ERRORS = "modelwarden_server_errors_total"  # by REASON: requests answered 5xx; the operator's error_rate
REJECTED_VALUES = "modelwarden_rejected_values_total"  # by INPUT, REASON: requests refused for a poisonous value
FEEDBACK_CACHE_EVICTIONS = "modelwarden_feedback_cache_evictions_total"  # request ids dropped to stay in budget
FEEDBACK_CACHE_BYTES = "modelwarden_feedback_cache_bytes"  # gauge: estimated bytes the feedback cache holds
INFERENCE_LATENCY = "modelwarden_inference_latency_seconds"  # histogram, per successful request
FEATURE_VALUE = "modelwarden_feature_value"  # histogram by FEATURE, edges from the profile
PREDICTION_VALUE = "modelwarden_prediction_value"  # histogram: regression output or classifier score
PREDICTED_CLASS = "modelwarden_predicted_class_total"  # by CLASS
PREDICTION_OUTLIERS = "modelwarden_prediction_outliers_total"  # rows beyond the profile's z-score
PROFILE_LOADED = "modelwarden_profile_loaded"  # gauge: 1 with a reference profile, 0 without (no drift histograms)
FEEDBACK = "modelwarden_feedback_total"  # classification confusion counts by PREDICTED, ACTUAL
# A classifier served with a paired model (a shadow beside the stable's model): every row scored by
# both, by PREDICTED (this server's model), PAIRED_PREDICTED and PAIRED_VERSION. Agreement = the diagonal.
PAIRED_PREDICTIONS = "modelwarden_paired_predictions_total"
PAIRED_PREDICTION_ERRORS = "modelwarden_paired_prediction_errors_total"  # requests whose paired scoring failed
FEEDBACK_SQUARED_ERROR_SUM = "modelwarden_feedback_squared_error_sum"  # regression
FEEDBACK_ABSOLUTE_ERROR_SUM = "modelwarden_feedback_absolute_error_sum"  # regression
FEEDBACK_OBSERVATIONS = "modelwarden_feedback_observations_total"  # regression
# Σ error⁴: the spread of the squared errors, without which an MSE has no confidence bound.
FEEDBACK_FOURTH_POWER_ERROR_SUM = "modelwarden_feedback_fourth_power_error_sum"  # regression

# The regression feedback series, in the order (squared error, absolute error, observations, fourth power).
REGRESSION_FEEDBACK = (FEEDBACK_SQUARED_ERROR_SUM, FEEDBACK_ABSOLUTE_ERROR_SUM, FEEDBACK_OBSERVATIONS,
                       FEEDBACK_FOURTH_POWER_ERROR_SUM)

# Sample suffixes of a histogram family.
BUCKET = "_bucket"
COUNT = "_count"
SUM = "_sum"

# -- label names ----------------------------------------------------------------------------------

MODEL = "model"
VERSION = "version"
TRACK = "track"
TARGET_LABELS = (MODEL, VERSION, TRACK)  # on every series
FEATURE = "feature"
LE = "le"  # a histogram bucket's upper bound, formatted by format_le
REASON = "reason"
CLASS = "class"
PREDICTED = "predicted"
ACTUAL = "actual"
PAIRED_PREDICTED = "paired_predicted"  # the paired model's class for the same row
PAIRED_VERSION = "paired_version"  # the paired model's version
INPUT = "input"  # which part of a request held a rejected value: one of REJECTED_INPUTS

REJECTED_INPUTS = ("features", "feedback")  # the values of INPUT

TRACKS = ("stable", "canary", "shadow")  # the values of TRACK

# Upper bounds (seconds) of INFERENCE_LATENCY's buckets; +Inf follows.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INF_LE = "+Inf"  # the last bucket of every histogram

# -- label values ---------------------------------------------------------------------------------


def format_le(edge: float) -> str:
    """The ``le`` label value of a bucket upper bound.

    prometheus_client's float formatting: Python ``repr`` of the float (``0.5``, ``12.0``,
    ``-3.25``), Go's exponent form from 1e6 up (``1e+07``). Profile edges keep 6 significant
    digits, so a reader may also parse ``le`` with ``float()`` and get the very same edge back.
    """
    return floatToGoString(edge)


def level_key(value: Any) -> str:
    """The canonical string of a categorical value or class label (1, 1.0 and "1" agree).

    It spells the ``class``, ``predicted`` and ``actual`` label values and the profile's
    ``levels``, so a label written by the server matches the level the profile names.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if math.isfinite(number) and number == int(number):
            return str(int(number))
        return repr(number)
    return str(value)
