"""The `fetch-model` init container of a model pod, run as a local process, and the Pod status a
kubelet reports for it: shared by the sandbox's kubelet (sandbox/kubelet.py) and the tests'
(tests/realcluster.py).

Neither has a node, yet what the operator learns about a fetched model (condition
ModelFetchFailed, read from the Pod status) must come from the real command with the real
credentials. So the container's environment is built the way a kubelet builds it (`envFrom`
Secrets and ConfigMaps, then `env` values and `valueFrom` keys, read from the API), its args run
with this interpreter (`python -m modelwarden fetch-model ...`) with DEST, the pod's emptyDir,
replaced by a local directory, and a failure becomes the init container's terminated state with
the termination message, as the kubelet writes it.
"""

from __future__ import annotations

import base64
import datetime
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from modelwarden.builders.workloads import FETCH_CONTAINER

# commands/fetch_model.py's variable (commands sit above the sandbox in the layers: not imported).
TERMINATION_LOG_VARIABLE = "MODELWARDEN_TERMINATION_LOG"
# The machine's store settings are not the pod's: a pod has only what its spec gives it.
HOST_ONLY_PREFIXES = ("AWS_", "MLFLOW_", "GOOGLE_", "CLOUDSDK_", "MODEL_", "MODELWARDEN_")
POD_DEFAULTS = {  # no ~/.aws and no instance metadata service in a pod of the sandbox
    "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
}
FETCH_TIMEOUT_SECONDS = 300.0
CONFIG_ERROR = "CreateContainerConfigError"

# (plural, name) -> the Secret or ConfigMap in the pod's namespace, None when it does not exist.
Reader = Callable[[str, str], "Mapping[str, Any] | None"]


class ContainerConfigError(Exception):
    """A Secret, ConfigMap or key the environment names is missing: the container never starts
    (the kubelet's CreateContainerConfigError)."""


def fetch_container(pod_spec: Mapping[str, Any], name: str = FETCH_CONTAINER) -> dict[str, Any] | None:
    """The operator's storage initializer in a pod spec (or the one of the paired model), if the pod has one."""
    return next((c for c in pod_spec.get("initContainers") or [] if c.get("name") == name), None)


def destination(container: Mapping[str, Any]) -> str:
    """DEST in the container's args (`fetch-model URI DEST ...`): the model volume's mount path."""
    args = container.get("args") or []
    if len(args) < 3 or args[0] != "fetch-model":
        raise ValueError(f"not a fetch-model container: args {args!r}")
    return str(args[2])


def local_path(in_pod: str, container: Mapping[str, Any], dest: Path) -> Path:
    """A path the server reads in the pod (MODEL_PATH) mapped into the local `dest` that stands for DEST."""
    path, mount = PurePosixPath(in_pod), PurePosixPath(destination(container))
    return dest.joinpath(*path.relative_to(mount).parts) if path == mount or mount in path.parents else dest


def _values(obj: Mapping[str, Any], plural: str) -> dict[str, str]:
    if plural == "configmaps":
        return dict(obj.get("data") or {})
    values = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    return {**values, **(obj.get("stringData") or {})}  # an emulator keeps stringData as written


def _field(path: str, namespace: str, pod_name: str) -> str:
    return {"metadata.namespace": namespace, "metadata.name": pod_name}.get(path, "")


def container_env(container: Mapping[str, Any], read: Reader, namespace: str, pod_name: str = "") -> dict[str, str]:
    """The container's environment as the kubelet makes it: `envFrom` first, `env` over it.
    Raises ContainerConfigError for a missing, non-optional Secret, ConfigMap or key."""
    env: dict[str, str] = {}
    cache: dict[tuple[str, str], dict[str, str] | None] = {}

    def values(plural: str, name: str) -> dict[str, str] | None:
        if (plural, name) not in cache:
            obj = read(plural, name)
            cache[(plural, name)] = None if obj is None else _values(obj, plural)
        return cache[(plural, name)]

    for source in container.get("envFrom") or []:
        for field, plural in (("secretRef", "secrets"), ("configMapRef", "configmaps")):
            ref = source.get(field)
            if ref is None:
                continue
            found = values(plural, ref["name"])
            if found is None:
                if not ref.get("optional"):
                    raise ContainerConfigError(f'{plural[:-1]} "{ref["name"]}" not found')
                continue
            env.update({source.get("prefix", "") + k: v for k, v in found.items()})
    for var in container.get("env") or []:
        source = var.get("valueFrom")
        if source is None:
            env[var["name"]] = var.get("value", "")
            continue
        if "fieldRef" in source:
            env[var["name"]] = _field(source["fieldRef"].get("fieldPath", ""), namespace, pod_name)
            continue
        for field, plural in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            ref = source.get(field)
            if ref is None:
                continue
            found = values(plural, ref["name"])
            if found is None or ref["key"] not in found:
                if not ref.get("optional"):
                    what = f'{plural[:-1]} "{ref["name"]}" not found' if found is None else \
                        f'couldn\'t find key {ref["key"]} in {plural[:-1].capitalize()} {namespace}/{ref["name"]}'
                    raise ContainerConfigError(what)
                continue
            env[var["name"]] = found[ref["key"]]
    return env


@dataclass(frozen=True)
class FetchOutcome:
    """How the init container ended: its exit code (None: it never ran) and its message — the
    summary line on success, the termination message (or the log's last line) on failure."""

    ok: bool
    message: str
    exit_code: int | None = 0
    reason: str = "Completed"
    container: str = FETCH_CONTAINER  # which storage initializer (the paired model's has its own)

    @classmethod
    def config_error(cls, error: ContainerConfigError) -> "FetchOutcome":
        return cls(False, str(error), None, CONFIG_ERROR)


def run_fetch(container: Mapping[str, Any], env: Mapping[str, str], dest: Path, log_file: Path | None = None,
              timeout: float = FETCH_TIMEOUT_SECONDS, cancelled: Callable[[], bool] = lambda: False) -> FetchOutcome:
    """Run the container's `fetch-model` args into `dest` (created empty, like the emptyDir), in an
    environment of the machine's basics plus `env`, with the termination-message file beside it."""
    args = list(container.get("args") or [])
    destination(container)
    args[2] = str(dest)
    dest.mkdir(parents=True, exist_ok=True)
    termination = dest.parent / f"{dest.name}.termination-log"
    output = dest.parent / f"{dest.name}.output"
    termination.unlink(missing_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(HOST_ONLY_PREFIXES)}
    full_env = {**base, **POD_DEFAULTS, **env, TERMINATION_LOG_VARIABLE: str(termination)}
    with output.open("w+b") as out:
        process = subprocess.Popen([sys.executable, "-m", "modelwarden", *args], env=full_env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while process.poll() is None:
            if cancelled() or time.monotonic() > deadline:
                process.kill()
                process.wait()
                return FetchOutcome(False, f"fetch-model: stopped after {timeout:.0f}s" if not cancelled() else "stopped",
                                    137, "DeadlineExceeded" if not cancelled() else "Error")
            try:
                process.wait(0.1)
            except subprocess.TimeoutExpired:
                pass
        out.seek(0)
        lines = out.read().decode(errors="replace").splitlines()
    output.unlink(missing_ok=True)
    if log_file is not None:
        with log_file.open("a") as log:
            log.write("".join(f"{line}\n" for line in lines))
    if process.returncode == 0:
        return FetchOutcome(True, lines[-1] if lines else "")
    # terminationMessagePolicy FallbackToLogsOnError: the log's tail when the file is empty.
    message = termination.read_text().strip() if termination.is_file() else ""
    return FetchOutcome(False, message or (lines[-1] if lines else f"exit code {process.returncode}"), process.returncode, "Error")


# --- Pod status, as a kubelet writes it -------------------------------------------------------------

def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _container_status(container: Mapping[str, Any], state: dict[str, Any], ready: bool = False,
                      restarts: int = 0) -> dict[str, Any]:
    return {"name": container["name"], "image": container.get("image", ""), "imageID": "", "ready": ready,
            "restartCount": restarts, "started": "running" in state, "state": state}


def init_statuses_completed(pod_spec: Mapping[str, Any], at: str | None = None) -> list[dict[str, Any]]:
    """Every init container ended with exit code 0 (what a Running pod's status shows)."""
    at = at or now()
    done = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": at, "finishedAt": at}}
    return [_container_status(c, done) for c in pod_spec.get("initContainers") or []]


def fetch_failed_status(pod_spec: Mapping[str, Any], outcome: FetchOutcome, restarts: int = 0,
                        at: str | None = None) -> dict[str, Any]:
    """A Pending pod whose storage initializer failed (terminated, exit code and termination
    message) or could not start (waiting, CreateContainerConfigError): the other init containers
    and the containers wait, none is ready."""
    at = at or now()
    if outcome.exit_code is None:
        state = {"waiting": {"reason": outcome.reason, "message": outcome.message}}
    else:
        state = {"terminated": {"exitCode": outcome.exit_code, "reason": outcome.reason, "message": outcome.message,
                                "startedAt": at, "finishedAt": at}}
    initializing = {"waiting": {"reason": "PodInitializing"}}
    done = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": at, "finishedAt": at}}
    names = [c["name"] for c in pod_spec.get("initContainers") or []]
    failed = names.index(outcome.container) if outcome.container in names else len(names)
    init = [_container_status(c, done if i < failed else state if i == failed else initializing,
                              restarts=restarts if i == failed else 0)
            for i, c in enumerate(pod_spec.get("initContainers") or [])]  # those before it ran, those after wait
    conditions = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": at},
        {"type": "Initialized", "status": "False", "lastTransitionTime": at, "reason": "ContainersNotInitialized",
         "message": f"containers with incomplete status: [{outcome.container}]"},
        {"type": "ContainersReady", "status": "False", "lastTransitionTime": at, "reason": "ContainersNotReady"},
        {"type": "Ready", "status": "False", "lastTransitionTime": at, "reason": "ContainersNotReady"},
    ]
    return {"phase": "Pending", "conditions": conditions, "startTime": at, "initContainerStatuses": init,
            "containerStatuses": [_container_status(c, initializing) for c in pod_spec.get("containers") or []]}


def shows_failure(pod: Mapping[str, Any], outcome: FetchOutcome, restarts: int = 0) -> bool:
    """Whether the pod's status already shows this outcome of its storage initializer (after
    `restarts` earlier attempts)."""
    for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if status.get("name") == outcome.container:
            state = status.get("state") or {}
            shown = state.get("terminated") or state.get("waiting") or {}
            return (shown.get("message"), shown.get("reason"), status.get("restartCount", 0)) == (
                outcome.message, outcome.reason, restarts)
    return False
