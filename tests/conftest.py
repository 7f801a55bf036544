"""Test tiers and shared fixtures.

Tiers follow the directory a test lives in (tests/unit, tests/emulator, tests/component,
tests/integration, tests/controlplane, tests/cluster) and become pytest markers, so `pytest -m
unit` runs only pure tests. The component and integration tiers run the operator against a real
control plane per test (``cluster``: tests/realcluster.py); the emulator tier tests the API
emulator that `make demo` uses.
"""

from __future__ import annotations

import itertools
import os
import re
import pathlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
TIERS = ("unit", "emulator", "component", "integration", "controlplane", "cluster")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--kube-config", default=None, help="kubeconfig of a real cluster for the cluster tier")


def pytest_ignore_collect(collection_path: pathlib.Path, config: pytest.Config) -> bool | None:
    """The cluster tier is collected only with --kube-config (no real cluster can run here)."""
    if not config.getoption("--kube-config") and (ROOT / "tests" / "cluster") in (collection_path, *collection_path.parents):
        return True
    return None


def pytest_report_header(config: pytest.Config) -> list[str]:
    from tests.controlplane.support import KUBE_BIN

    kube_config = config.getoption("--kube-config")
    binary = KUBE_BIN / "kube-apiserver"
    if binary.exists():
        try:
            version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError) as error:
            version = f"unknown ({error})"
        plane = f"component, integration and controlplane tiers: against kube-apiserver {version} from {KUBE_BIN}"
    else:
        plane = f"component, integration and controlplane tiers: kube-apiserver not built in {KUBE_BIN} (make control-plane)"
    return [plane, f"cluster tier: {'against ' + kube_config if kube_config else 'not collected (no --kube-config)'}"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = pathlib.Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        tier = parts[0] if parts and parts[0] in TIERS else None
        if tier:
            item.add_marker(getattr(pytest.mark, tier))


def require_binary(name: str) -> str:
    """The path of a Debian-installed binary; missing is a failure in CI and a skip elsewhere."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if path:
        return path
    message = f"{name} is not installed (make test installs it from Debian)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def prometheus():
    """One real Prometheus for the session: free loopback port, temp data dir, 1 s scrapes."""
    from modelwarden.sandbox.prometheus import PrometheusServer

    require_binary("prometheus")
    server = PrometheusServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@contextmanager
def prometheus_servers(workdir: Callable[[], pathlib.Path]) -> Iterator[Callable[..., Any]]:
    """A factory of started real Prometheus servers, each optionally backfilled first (OpenMetrics
    text for promtool) and each in a directory from ``workdir()``; all cleaned up on exit."""
    from modelwarden.sandbox.prometheus import PrometheusServer

    require_binary("prometheus")
    require_binary("promtool")
    started: list[PrometheusServer] = []

    def make(backfill: str | None = None, **kwargs: Any) -> PrometheusServer:
        server = PrometheusServer(workdir=workdir(), **kwargs)
        if backfill is not None:
            server.backfill(backfill)
        server.start()
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.cleanup()


@pytest.fixture
def prometheus_factory(tmp_path):
    """Fresh Prometheus servers (e.g. with backfilled history), each stopped at teardown."""
    numbers = itertools.count()
    with prometheus_servers(lambda: tmp_path / f"prometheus-{next(numbers)}") as make:
        yield make


@pytest.fixture
def api_server(tmp_path):
    """A fresh API emulator (kmock + API-server semantics) with our CRDs and the built-in kinds:
    the emulator tier's server (and `make demo`'s); the operator tiers use ``cluster``."""
    from modelwarden.sandbox.apiserver import EmulatedApiServer

    server = EmulatedApiServer(crd_dir=ROOT / "crds", extra_crd_dirs=(SHARED / "schemas",)).start()
    server.kubeconfig_path = server.write_kubeconfig(tmp_path / "kubeconfig")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(request, tmp_path):
    """A real control plane of its own for this test, with our CRDs and the chart's RBAC
    (tests/realcluster.py); its logs are kept when the test failed."""
    from tests.realcluster import Cluster

    failed_before = request.session.testsfailed
    started = Cluster(tmp_path / "cluster").start()
    try:
        yield started
    finally:
        started.stop(keep=request.session.testsfailed > failed_before)


@pytest.fixture
def kube(cluster):
    """A tiny REST client as the cluster's admin (tests never import the kubernetes package)."""
    return cluster.kube


@pytest.fixture
def kubelet(kube):
    """Runs the Pods of Deployments (Running, Ready) and of Jobs (as told) in place of a node."""
    from tests.realcluster import PodKubelet

    simulator = PodKubelet(kube).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def operator_factory(cluster, tmp_path):
    """Start real `modelwarden run` processes as the chart's ServiceAccount (only the chart's
    RBAC); all are stopped at teardown."""
    from tests.processes import OperatorProcess

    started: list[OperatorProcess] = []

    def start(*extra_args: str, env: dict[str, str] | None = None, verbose: bool = True) -> OperatorProcess:
        process = OperatorProcess(
            kubeconfig=cluster.operator_kubeconfig,
            log_path=tmp_path / f"operator-{len(started)}.log",
            extra_args=extra_args,
            env=env or {},
            verbose=verbose,
        )
        process.start(timeout=60)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
    # The chart's RBAC is enough: the API server never refused the operator anything.
    refused = [line for process in started if not process.expects_forbidden
               for line in process.log().splitlines() if FORBIDDEN.search(line)]
    assert not refused, f"the API server refused the chart's ServiceAccount: {refused[:3]}"


# The API server speaks https; a webhook gate's plain-http receiver answering 403 is no RBAC refusal.
FORBIDDEN = re.compile(r'Forbidden|https://\S+ "[A-Z]+ \S+ HTTP/1\.1" 403 ')
