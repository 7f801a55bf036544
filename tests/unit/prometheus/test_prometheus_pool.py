"""ProviderPool: one kept provider per backend configuration, bounded, least recently used closed first."""

from __future__ import annotations

from modelwarden.prometheus.client import PrometheusConfig, ProviderPool


def test_the_same_configuration_gets_the_same_provider_and_the_pool_is_bounded():
    pool = ProviderPool(size=2)
    a = pool.get(PrometheusConfig(url="http://a:9090", headers={"X-Scope-OrgID": "t1"}))
    assert pool.get(PrometheusConfig(url="http://a:9090", headers={"X-Scope-OrgID": "t1"})) is a
    other_tenant = pool.get(PrometheusConfig(url="http://a:9090", headers={"X-Scope-OrgID": "t2"}))
    assert other_tenant is not a  # headers (tenants, tokens) never share a client
    pool.get(PrometheusConfig(url="http://a:9090"))  # a was used least recently: closed and dropped
    assert pool.get(PrometheusConfig(url="http://a:9090", headers={"X-Scope-OrgID": "t1"})) is not a
    pool.close()
