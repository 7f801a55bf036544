"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager.

The test suite's ``tests/controlplane`` tier runs against it: real admission (OpenAPI schema,
CEL rules, strict field validation), real RBAC, real garbage collection and the Deployment,
ReplicaSet and Job controllers, without a kubelet or scheduler (pods are created, never run).
``make control-plane`` builds kube-apiserver and kube-controller-manager of one pinned release
into ``.tools/kubernetes/bin`` and installs Debian's etcd.

Everything lives in one temp directory: etcd's data, the generated certificates (a CA, the
serving certificate, client certificates for the admin and the controller manager), the
service-account signing key pair, kubeconfigs and one log per process. ``stop()`` removes the
directory unless a process failed or ``keep=True`` is given (the logs stay for the post mortem).

The garbage collector discovers resources when it starts and then every 30 s (fixed upstream):
dependents of a custom resource whose CRD was created after the controller manager started are
collected only after that rediscovery. Install CRDs first (``with_controller_manager=False``,
then ``start_controller_manager()``) for prompt garbage collection.

etcd 3.4 (Debian's) works; the API server logs that it lacks RequestWatchProgress and then serves
consistent lists from etcd instead of its watch cache.

Certificates come from the ``openssl`` command line (the ``cryptography`` package is not a
dependency of the project). HTTP goes through ``requests`` with the admin's client certificate.

Modules: controlplane_binaries.py (finding the binaries; the errors), controlplane_pki.py (the
certificates), controlplane_admin.py (CRDs, namespaces, kubeconfigs and tokens over HTTP). This
one starts, watches and stops the three processes.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import urllib3

from modelwarden.sandbox.controlplane_admin import ControlPlaneAdmin
from modelwarden.sandbox.controlplane_binaries import ControlPlaneError, find_binaries
from modelwarden.sandbox.controlplane_pki import ADMIN_USER, CONTROLLER_MANAGER_USER, Certificates
from modelwarden.sandbox.processes import free_port, terminate


PORT_ATTEMPTS = 3
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/16"  # room for thousands of Services (a /24 runs out at ~120 ModelDeployments)

# What the operator needs from a cluster besides the API server: garbage collection of owned
# objects, Deployments -> ReplicaSets -> Pods, Jobs -> Pods, the per-namespace "default"
# ServiceAccount (the ServiceAccount admission plugin refuses pods without it) and namespace
# deletion.
DEFAULT_CONTROLLERS = (
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "job-controller",
    "serviceaccount-controller",
    "namespace-controller",
)


@dataclass
class ControlPlane(ControlPlaneAdmin):
    """etcd + kube-apiserver + kube-controller-manager on free loopback ports.

    ``with ControlPlane(bin_dir) as cp:`` starts it and waits until /readyz is ok; ``cp.url``,
    ``cp.kubeconfig_path`` (the admin, in group system:masters), ``cp.version`` (gitVersion),
    ``cp.session()`` (a requests session as the admin), ``cp.service_account_kubeconfig(ns,
    name)`` (a TokenRequest token: only what RBAC grants that ServiceAccount).
    """

    bin_dir: Path | str | None = None
    workdir: Path | None = None  # default: a new temp directory
    controllers: tuple[str, ...] = DEFAULT_CONTROLLERS
    etcd_data_dir: Path | None = None  # default: workdir/etcd (e.g. a /dev/shm path for speed)
    apiserver_args: tuple[str, ...] = ()
    controller_manager_args: tuple[str, ...] = ()
    # False: start() stops after the API server; call start_controller_manager() later, e.g.
    # once CRDs are installed (the garbage collector rediscovers resources only every 30 s).
    with_controller_manager: bool = True
    version: str = ""
    startup_seconds: float = 0.0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    failed: bool = False

    def __post_init__(self) -> None:
        self.binaries = find_binaries(self.bin_dir)
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="mw-controlplane-"))
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.certs = Certificates(self.workdir / "pki")
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.port = free_port()
        self.controller_manager_port = free_port()

    # -- addresses and credentials ------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def ca_path(self) -> Path:
        return self.certs.path("ca.crt")

    @property
    def admin_cert(self) -> tuple[str, str]:
        return str(self.certs.path("client-0.crt")), str(self.certs.path("client-0.key"))

    @property
    def kubeconfig_path(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @staticmethod
    def _answers_ok(url: str, **kwargs: Any) -> bool:
        """GET `url` ignoring the environment (loopback: no proxies, no CA bundle override)."""
        with requests.Session() as session:
            session.trust_env = False
            return session.get(url, timeout=2, **kwargs).status_code == 200

    def session(self) -> requests.Session:
        """A requests session authenticated as the admin (client certificate, group system:masters)."""
        session = requests.Session()
        # Not the environment's CA bundle (REQUESTS_CA_BUNDLE would override `verify`) or proxies.
        session.trust_env = False
        session.cert = self.admin_cert
        session.verify = str(self.ca_path)
        return session

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> "ControlPlane":
        """Start the processes. A port taken between choosing it and binding it (another process
        on a busy machine) costs a retry with fresh ports, not a failed start; `url` then changes."""
        started = time.monotonic()
        deadline = started + timeout
        try:
            self.certs.generate({ADMIN_USER: ("system:masters",), CONTROLLER_MANAGER_USER: ()})
            for attempt in range(PORT_ATTEMPTS):
                try:
                    self._start_processes(deadline)
                    break
                except ControlPlaneError as error:
                    if "address already in use" not in str(error) or attempt == PORT_ATTEMPTS - 1:
                        raise
                    self.stop(keep=True)
                    self.failed = False
                    self._fresh_ports()
        except BaseException:
            self.failed = True
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _start_processes(self, deadline: float) -> None:
        self.write_kubeconfig(self.kubeconfig_path, user=ADMIN_USER, client_index=0)
        self.write_kubeconfig(self.workdir / "controller-manager.kubeconfig", user=CONTROLLER_MANAGER_USER, client_index=1)
        self._start_etcd(deadline)
        self._start_apiserver(deadline)
        if self.with_controller_manager:
            self._start_controller_manager(deadline)

    def _fresh_ports(self) -> None:
        self.etcd_port, self.etcd_peer_port, self.port, self.controller_manager_port = (free_port() for _ in range(4))
        data_dir = self.etcd_data_dir or self.workdir / "etcd"
        shutil.rmtree(data_dir, ignore_errors=True)  # a member that never started: begin anew
        data_dir.mkdir(parents=True, exist_ok=True)

    def start_controller_manager(self, timeout: float = 60.0) -> None:
        """Start kube-controller-manager after start() with ``with_controller_manager=False``."""
        if "kube-controller-manager" in self.processes:
            return
        started = time.monotonic()
        try:
            self._start_controller_manager(started + timeout)
        except BaseException:
            self.failed = True
            self.stop()
            raise
        self.startup_seconds += time.monotonic() - started

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = self.log_path(name).open("ab")
        try:
            process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=self.workdir, start_new_session=True)
        finally:
            log.close()
        self.processes[name] = process
        return process

    def _wait(self, name: str, check, deadline: float, what: str) -> Any:
        """Poll ``check()`` (exceptions count as not yet) until it returns a truthy value."""
        last: object = None
        while time.monotonic() < deadline:
            process = self.processes[name]
            if process.poll() is not None:
                raise ControlPlaneError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")
            try:
                result = check()
                if result:
                    return result
                last = result
            except requests.RequestException as error:
                last = error
            time.sleep(0.1)
        raise ControlPlaneError(f"{name}: {what} not within the timeout (last: {last}):\n{self.log_tail(name)}")

    def _start_etcd(self, deadline: float) -> None:
        data_dir = self.etcd_data_dir or self.workdir / "etcd"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._spawn("etcd", [
            self.binaries["etcd"],
            "--name=default",
            f"--data-dir={data_dir}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--initial-cluster-state=new",
            "--logger=zap",
            "--log-level=warn",
            "--quota-backend-bytes=1073741824",
            "--snapshot-count=10000",
        ])
        self._wait("etcd", lambda: self._answers_ok(f"{self.etcd_url}/health"), deadline, "/health ok")

    def _start_apiserver(self, deadline: float) -> None:
        certs = self.certs
        self._spawn("kube-apiserver", [
            self.binaries["kube-apiserver"],
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={certs.path('apiserver.crt')}",
            f"--tls-private-key-file={certs.path('apiserver.key')}",
            f"--client-ca-file={certs.path('ca.crt')}",
            f"--service-account-key-file={certs.path('sa.pub')}",
            f"--service-account-signing-key-file={certs.path('sa.key')}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # The front-proxy CA the delegated authentication of the controller manager (and any
            # aggregated API server) reads from kube-system/extension-apiserver-authentication;
            # without it that component logs an error every few seconds. Only a certificate
            # named front-proxy-client may assert identities, and none is ever issued.
            f"--requestheader-client-ca-file={certs.path('ca.crt')}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            # The reconciler refuses a loopback advertise address; there are no endpoints to keep.
            "--endpoint-reconciler-type=none",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            *self.apiserver_args,
        ])
        session = self.session()

        def ready() -> bool:
            response = session.get(f"{self.url}/readyz", timeout=2)
            return response.status_code == 200

        self._wait("kube-apiserver", ready, deadline, "/readyz ok")
        self.version = session.get(f"{self.url}/version", timeout=5).json()["gitVersion"]

    def _start_controller_manager(self, deadline: float) -> None:
        kubeconfig = self.workdir / "controller-manager.kubeconfig"
        self._spawn("kube-controller-manager", [
            self.binaries["kube-controller-manager"],
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.controller_manager_port}",
            f"--cert-dir={self.workdir / 'controller-manager-certs'}",
            "--leader-elect=false",
            # Each controller acts as its own ServiceAccount in kube-system (tokens from the
            # TokenRequest API) with the bootstrap RBAC roles, as in a kubeadm cluster.
            "--use-service-account-credentials=true",
            f"--root-ca-file={self.ca_path}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--controllers={','.join(self.controllers)}",
            *self.controller_manager_args,
        ])

        def healthy() -> bool:
            # Its serving certificate is self-signed in --cert-dir; only liveness matters here.
            url = f"https://127.0.0.1:{self.controller_manager_port}/healthz"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                return self._answers_ok(url, verify=False)

        self._wait("kube-controller-manager", healthy, deadline, "/healthz ok")

    def stop(self, keep: bool = False, timeout: float = 10.0) -> None:
        """Terminate every process (controller manager first, etcd last). The work directory
        with the logs is removed unless ``keep`` is given or a process had failed; then its path
        is printed so the logs can be read."""
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            process = self.processes.get(name)
            if process is None:
                continue
            if process.poll() is not None and process.returncode != 0:
                self.failed = True
            terminate(process, timeout)
        self.processes.clear()
        if keep or self.failed:
            print(f"control plane logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self.etcd_data_dir and not (keep or self.failed):
            shutil.rmtree(self.etcd_data_dir, ignore_errors=True)

    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.stop(keep=exc_type is not None)

    def memory_usage(self) -> dict[str, float]:
        """Resident memory (VmRSS) of each running process in MiB (Linux /proc)."""
        usage = {}
        for name, process in self.processes.items():
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    usage[name] = int(line.split()[1]) / 1024
        return usage
