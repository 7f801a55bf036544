"""planning.egress: where a DriftPolicy may make the operator connect (the cluster admin's rules)."""

from __future__ import annotations

import pytest

from modelwarden.api.actions import AlertSpec
from modelwarden.notifiers import factory
from modelwarden.notifiers.base import NotifyError
from modelwarden.planning.egress import EgressRules

OPERATOR = "http://prometheus-operated.monitoring.svc:9090"


@pytest.mark.parametrize("url,allowed", [
    (OPERATOR, True),
    (OPERATOR + "/", True),
    ("http://prometheus-operated.monitoring.svc:9090/api/v1", True),
    ("HTTP://Prometheus-Operated.monitoring.svc:9090", True),
    ("https://prometheus-operated.monitoring.svc:9090", False),  # another scheme
    ("http://prometheus-operated.monitoring.svc:9091", False),  # another port
    ("http://prometheus-operated.monitoring.svc", False),  # port 80
    ("http://evil.example:9090", False),
    ("http://prometheus-operated.monitoring.svc:9090@evil.example:9090", False),  # userinfo trick: the host is evil.example
    ("http://user:pw@prometheus-operated.monitoring.svc:9090", False),  # credentials in the URL
    ("http://prometheus-operated.monitoring.svc.evil.example:9090", False),
    ("http://prometheus-operated.monitoring.svc:notaport", False),
])
def test_by_default_only_the_operators_own_prometheus(url, allowed):
    refusal = EgressRules().prometheus_refusal(url, OPERATOR)
    assert (refusal is None) is allowed, refusal
    if refusal:
        assert "not allowed" in refusal and "--allowed-prometheus-urls" in refusal and "@" not in refusal


def test_listed_prefixes_match_on_path_segments_and_star_allows_any():
    rules = EgressRules(prometheus_urls=("https://mimir.example.com/prometheus", "http://thanos:10902"))
    assert rules.prometheus_refusal("https://mimir.example.com/prometheus", OPERATOR) is None
    assert rules.prometheus_refusal("https://mimir.example.com/prometheus/tenant-a", OPERATOR) is None
    assert rules.prometheus_refusal("https://mimir.example.com/prometheus-other", OPERATOR) is not None
    assert rules.prometheus_refusal("http://thanos:10902/anything", OPERATOR) is None
    assert rules.prometheus_refusal(OPERATOR, OPERATOR) is not None  # a list replaces the default
    assert EgressRules(prometheus_urls=("*",)).prometheus_refusal("http://anywhere:1", OPERATOR) is None


@pytest.mark.parametrize("destination,allowed", [
    ("https://hooks.slack.com/services/T/B/X", True),
    ("hooks.slack.com", True),
    ("https://alerts.example.com/hook", True),
    ("smtp.example.com", True),
    ("https://example.com/hook", False),  # *.example.com covers subdomains only
    ("https://evil.example/hook", False),
    ("https://hooks.slack.com.evil.example/x", False),
])
def test_alert_hosts(destination, allowed):
    rules = EgressRules(alert_hosts=("hooks.slack.com", "*.example.com"))
    assert (rules.alert_refusal(destination) is None) is allowed
    assert EgressRules().alert_refusal(destination) is None  # default: any host


def test_a_refused_destination_reads_no_secret_except_the_slack_url_that_names_it():
    spec = AlertSpec.model_validate({
        "slack": {"webhookSecretRef": {"name": "s", "key": "url"}},
        "webhook": {"url": "https://evil.example/hook", "hmacSecretRef": {"name": "w", "key": "k"}},
        "email": {"host": "smtp.evil.example", "from": "mw@example.com", "to": ["a@example.com"], "authSecretRef": {"secretName": "smtp"}},
    })
    read: list[str] = []

    def secret(name: str, key: str) -> str:
        read.append(name)
        return "https://hooks.evil.example/x" if name == "s" else "value"

    refusal = EgressRules(alert_hosts=("hooks.slack.com",)).alert_refusal
    for channel in ("webhook", "email"):
        with pytest.raises(NotifyError, match="not allowed"):
            factory.build(channel, spec, secret, refusal)
    assert read == []  # neither the HMAC key nor the SMTP login was read, let alone sent
    with pytest.raises(NotifyError, match="hooks.evil.example is not allowed"):
        factory.build("slack", spec, secret, refusal)
