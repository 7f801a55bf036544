"""Custom checks read only their policy's namespace (prometheus/scope.py, used by plan_queries)."""

from __future__ import annotations

import pytest

from modelwarden.api.driftpolicy import DriftPolicySpec
from modelwarden.prometheus.collect import Target, _Invalid, plan_queries
from modelwarden.analysis.judge import CustomPart
from modelwarden.prometheus.scope import foreign_selectors


@pytest.mark.parametrize("promql,outside", [
    ('sum(rate(x{namespace="ml"}[5m])) / sum(y{namespace="ml"})', []),
    ('histogram_quantile(0.9, sum by (le) (rate(b{namespace="ml"}[5m])))', []),
    ("vector(1)", []),
    ('sum(rate(x{namespace="ml"}[5m])) / sum(y)', ["y"]),
    ('sum(x{namespace=~"ml"})', ['x{namespace=~"ml"}']),  # a regex could match other namespaces
    ('avg_over_time(z{namespace="other"}[5m:1m])', ['z{namespace="other"}']),
    ('scalar(q{namespace="ml"}) * count_values("v", w)', ["w"]),
    ('x{namespace="ml" or a="b"}', ['x{namespace="ml" or a="b"}']),  # the second alternative is unlimited
    ('{__name__=~".+", namespace="ml"}', []),
    ('1 + absent(up{namespace="ml", job="x"})', []),
])
def test_every_selector_must_be_limited_to_the_namespace(promql, outside):
    assert foreign_selectors(promql, "ml", "namespace") == outside


def test_another_namespace_label_is_honoured_and_bad_promql_is_an_error():
    assert foreign_selectors('x{kubernetes_namespace="ml"}', "ml", "kubernetes_namespace") == []
    assert foreign_selectors('x{namespace="ml"}', "ml", "kubernetes_namespace") == ['x{namespace="ml"}']
    with pytest.raises(ValueError, match="not valid PromQL"):
        foreign_selectors("sum(rate(", "ml", "namespace")


def spec(query: str) -> DriftPolicySpec:
    return DriftPolicySpec.model_validate({"targetRef": {"name": "fraud"}, "track": "canary", "interval": "1m",
                                           "checks": [{"name": "c", "query": query, "max": 1}]})


def test_plan_queries_refuses_a_custom_check_outside_the_namespace_only_when_restricted():
    target = Target("fraud", "ml", {"canary": "2"}, namespace_label="namespace", restrict_custom_queries=True)
    allowed = plan_queries(spec('sum(errors{ {{ selector }} })'), target)[CustomPart("c")]
    assert not isinstance(allowed, _Invalid) and 'namespace="ml"' in allowed
    refused = plan_queries(spec('sum(errors{model="{{ model }}"})'), target)[CustomPart("c")]
    assert isinstance(refused, _Invalid) and 'errors{model="fraud"} has no namespace="ml" matcher' in refused
    unrestricted = Target("fraud", "ml", {"canary": "2"}, namespace_label="namespace")
    assert not isinstance(plan_queries(spec('sum(errors{model="{{ model }}"})'), unrestricted)[CustomPart("c")], _Invalid)
    no_label = Target("fraud", "ml", {"canary": "2"}, namespace_label=None, restrict_custom_queries=True)
    assert "no namespace label is configured" in plan_queries(spec('sum(errors{ {{ selector }} })'), no_label)[CustomPart("c")]
