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
"""

from __future__ import annotations

import base64
import os
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
import yaml

from modelwarden.processes import free_port, terminate

ADMIN_USER = "modelwarden-admin"
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_CLUSTER_IP = "10.0.0.1"

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


class ControlPlaneNotInstalled(RuntimeError):
    """kube-apiserver, kube-controller-manager or etcd is missing (run `make control-plane`)."""


class ControlPlaneError(RuntimeError):
    """A process of the control plane exited or did not become ready in time."""


def find_binaries(bin_dir: Path | str | None) -> dict[str, str]:
    """Absolute paths of the three binaries: from ``bin_dir`` first, else PATH (/usr/bin/etcd
    is Debian's etcd-server)."""
    found: dict[str, str] = {}
    directory = Path(bin_dir) if bin_dir else None
    for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
        candidates = [directory / name] if directory else []
        which = shutil.which(name)
        candidates += [Path(which)] if which else []
        if name == "etcd":
            candidates.append(Path("/usr/bin/etcd"))
        path = next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)
        if path is None:
            where = f" in {directory}" if directory else " on PATH"
            raise ControlPlaneNotInstalled(f"{name} not found{where}; run `make control-plane`")
        found[name] = str(path.resolve())
    return found


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


@dataclass
class Certificates:
    """A throw-away PKI made with the openssl command line: EC P-256 keys, valid for a week."""

    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    def generate(self, client_users: dict[str, tuple[str, ...]]) -> None:
        """The CA, the API server's serving certificate, one client certificate per
        ``{common name: organizations}`` entry, and the service-account RSA key pair."""
        self.directory.mkdir(parents=True, exist_ok=True)
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "7")
        _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt",
                 "-subj", "/CN=modelwarden-test-ca",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=self.directory)
        names = ("DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
                 "DNS:kubernetes.default.svc.cluster.local", "IP:127.0.0.1", f"IP:{SERVICE_CLUSTER_IP}")
        self._leaf("apiserver", "/CN=kube-apiserver", "serverAuth", ec, f"subjectAltName={','.join(names)}")
        for index, (user, organizations) in enumerate(client_users.items()):
            subject = "".join(f"/O={o}" for o in organizations) + f"/CN={user}"
            self._leaf(f"client-{index}", subject, "clientAuth", ec)
        # Service-account tokens are signed with RS256 by default: an RSA pair.
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key",
                 cwd=self.directory)
        _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=self.directory)
        for key in self.directory.glob("*.key"):
            key.chmod(0o600)

    def _leaf(self, name: str, subject: str, usage: str, ec: tuple[str, ...], *extensions: str) -> None:
        extra = [arg for extension in extensions for arg in ("-addext", extension)]
        _openssl("req", "-x509", *ec, "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", subject,
                 "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-addext", "basicConstraints=critical,CA:FALSE",
                 "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
                 "-addext", f"extendedKeyUsage={usage}", *extra, cwd=self.directory)


def crd_documents(*directories: Path) -> list[dict[str, Any]]:
    """The CustomResourceDefinitions in the YAML files of some directories, in file-name order."""
    return [doc for directory in directories for path in sorted(Path(directory).glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc and doc.get("kind") == "CustomResourceDefinition"]


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@dataclass
class ControlPlane:
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
        started = time.monotonic()
        deadline = started + timeout
        try:
            self.certs.generate({ADMIN_USER: ("system:masters",), CONTROLLER_MANAGER_USER: ()})
            self.write_kubeconfig(self.kubeconfig_path, user=ADMIN_USER, client_index=0)
            self.write_kubeconfig(self.workdir / "controller-manager.kubeconfig",
                                  user=CONTROLLER_MANAGER_USER, client_index=1)
            self._start_etcd(deadline)
            self._start_apiserver(deadline)
            if self.with_controller_manager:
                self._start_controller_manager(deadline)
        except BaseException:
            self.failed = True
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

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

    # -- setting up -----------------------------------------------------------------------------

    def install_crds(self, crds: list[dict[str, Any]], timeout: float = 60.0) -> list[str]:
        """Create CustomResourceDefinitions (as the admin) and wait until all are Established."""
        session = self.session()
        api = f"{self.url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        names = []
        deadline = time.monotonic() + timeout
        for crd in crds:
            while True:  # a just-ready API server may still answer 5xx/429 for a moment
                try:
                    response = session.post(api, json=crd, timeout=30)
                except requests.RequestException as error:
                    response, problem = None, str(error)
                else:
                    problem = f"{response.status_code} {response.text[:300]}"
                if response is not None and (response.ok or response.status_code == 409):
                    break
                if (response is not None and response.status_code < 500 and response.status_code != 429) \
                        or time.monotonic() > deadline:
                    raise ControlPlaneError(f"CRD {crd['metadata']['name']}: {problem}")
                time.sleep(0.2)
            names.append(crd["metadata"]["name"])
        for name in names:
            while not any(c["type"] == "Established" and c["status"] == "True"
                          for c in self._crd_conditions(session, f"{api}/{name}")):
                if time.monotonic() > deadline:
                    raise ControlPlaneError(f"CRD {name} not Established within {timeout}s")
                time.sleep(0.05)
        return names

    @staticmethod
    def _crd_conditions(session: requests.Session, url: str) -> list[dict[str, Any]]:
        response = session.get(url, timeout=10)
        if not response.ok:
            return []  # not there yet (or a transient error): asked again until the deadline
        return (response.json().get("status") or {}).get("conditions", [])

    def create_namespace(self, name: str) -> None:
        response = self.session().post(f"{self.url}/api/v1/namespaces", timeout=30,
                                       json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        if not response.ok and response.status_code != 409:
            raise ControlPlaneError(f"namespace {name}: {response.status_code} {response.text[:300]}")

    # -- kubeconfigs and ServiceAccount tokens -------------------------------------------------

    def _kubeconfig(self, user: str, credentials: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "modelwarden-test", "cluster": {
                "server": self.url, "certificate-authority-data": _b64(self.ca_path)}}],
            "users": [{"name": user, "user": credentials}],
            "contexts": [{"name": user, "context": {"cluster": "modelwarden-test", "user": user}}],
            "current-context": user,
        }

    def write_kubeconfig(self, path: Path, user: str = ADMIN_USER, client_index: int = 0) -> Path:
        """A kubeconfig with one of the generated client certificates embedded."""
        credentials = {
            "client-certificate-data": _b64(self.certs.path(f"client-{client_index}.crt")),
            "client-key-data": _b64(self.certs.path(f"client-{client_index}.key")),
        }
        return self._write(path, self._kubeconfig(user, credentials))

    @staticmethod
    def _write(path: Path, config: dict[str, Any]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def service_account_token(self, namespace: str, name: str, expiration_seconds: int = 3600,
                              audiences: list[str] | None = None) -> str:
        """A bound token for an existing ServiceAccount (TokenRequest API, as the admin)."""
        spec: dict[str, Any] = {"expirationSeconds": expiration_seconds}
        if audiences:
            spec["audiences"] = audiences
        response = self.session().post(
            f"{self.url}/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
            timeout=10,
        )
        if not response.ok:
            raise ControlPlaneError(f"TokenRequest for {namespace}/{name}: {response.status_code} {response.text}")
        return response.json()["status"]["token"]

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path | None = None,
                                   expiration_seconds: int = 3600) -> Path:
        """A kubeconfig that authenticates as ``system:serviceaccount:NAMESPACE:NAME`` (the
        ServiceAccount must exist), so a process gets only the RBAC that account has."""
        token = self.service_account_token(namespace, name, expiration_seconds)
        user = f"system:serviceaccount:{namespace}:{name}"
        path = path or self.workdir / f"sa-{namespace}-{name}.kubeconfig"
        config = self._kubeconfig(user, {"token": token})
        config["contexts"][0]["context"]["namespace"] = namespace
        return self._write(path, config)
