"""The emulator tier: the kmock-based API emulator of `make demo` (sandbox/apiserver.py) and the
contention proxy, tested on their own. Operator tests run against a real control plane instead."""

from __future__ import annotations

import pytest


@pytest.fixture
def kube(api_server):
    """A tiny REST client for the emulator (plain HTTP, no credentials)."""
    from tests.kubeclient import KubeClient

    return KubeClient(api_server.url)
