"""The sandbox's kubelet for retraining Jobs: each Job pod runs as a local process.

A pod's first container's command (with its args) runs with the pod's environment, as a kubelet
would start it: `value`, `secretKeyRef` and `fieldRef` (metadata.name/namespace) variables; the
downward-API context file (contract/retraining.py) written from the pod's annotation; and a
termination-message file, which becomes the container's terminated `message` in Pod status when
the process exits. The two paths of the contract (MODELWARDEN_CONTEXT_FILE, MODELWARDEN_RESULT_FILE)
point into the pod's own directory, as a kubelet's mounts would. `python`/`python3` as the command
is this interpreter (the sandbox has no image to run).

With the real control plane the job controller makes the pods and marks the Job Complete or
Failed from their phase (`job_controller=False`). The API emulator runs no controllers: then this
runner also makes one pod per Job (`<job>-run`, owned by it) and writes the Job's status itself.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from modelwarden.contract.retraining import CONTEXT_ANNOTATION, MAX_RESULT_BYTES
from modelwarden.sandbox.fetcher import now

log = logging.getLogger(__name__)
MANAGED = "app.kubernetes.io/managed-by=modelwarden"
JOB_NAME_LABEL = "job-name"
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
_PYTHON = ("python", "python3")


@dataclass(frozen=True)
class JobRun:
    """One Job pod the runner ran, in order of finishing (the demo's summary and the tests read them)."""

    namespace: str
    job: str
    pod: str
    exit_code: int
    message: str


class JobRunner:
    def __init__(self, api_url: str, log_dir: Path, session: requests.Session | None = None, interval: float = 0.5,
                 job_controller: bool = False, extra_env: dict[str, str] | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self.log_dir = log_dir
        self.interval = interval
        self.job_controller = job_controller  # no controller runs: make the pods and write Job status here
        self.extra_env = dict(extra_env or {})  # e.g. the sandbox's PYTHONPATH
        self.runs: list[JobRun] = []
        self._running: dict[tuple[str, str], tuple[subprocess.Popen[bytes], Path, str, dict[str, Any]]] = {}
        self._started: set[tuple[str, str]] = set()
        self._session = session or requests.Session()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-jobs", daemon=True)

    def start(self) -> "JobRunner":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(15)
        for process, *_ in self._running.values():
            process.kill()
            process.wait(10)
        self._running.clear()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
            except requests.RequestException as exc:
                log.debug("job runner sync failed: %s", exc)

    def sync(self) -> None:
        if self.job_controller:
            for job in self._list("/apis/batch/v1/jobs", MANAGED):
                if not _finished(job) and not job["metadata"].get("deletionTimestamp"):
                    self._own_pod(job)
        for pod in self._list("/api/v1/pods", JOB_NAME_LABEL):
            meta = pod["metadata"]
            key = (meta["namespace"], meta["name"])
            phase = (pod.get("status") or {}).get("phase")
            if key in self._started or phase in ("Succeeded", "Failed") or meta.get("deletionTimestamp"):
                continue
            self._start(pod)
        for key, (process, directory, job, container) in list(self._running.items()):
            if process.poll() is None:
                continue
            del self._running[key]
            self._finish(key, process.returncode, directory, job, container)

    # -- running a pod ---------------------------------------------------------------------------
    def _start(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        key = (meta["namespace"], meta["name"])
        self._started.add(key)
        container = (spec.get("containers") or [{}])[0]
        directory = self.log_dir / "jobs" / meta["namespace"] / meta["name"]
        directory.mkdir(parents=True, exist_ok=True)
        context, result = directory / "context.json", directory / "termination-log"
        context.write_text((meta.get("annotations") or {}).get(CONTEXT_ANNOTATION, "{}"))
        result.write_text("")
        command = [*(container.get("command") or []), *(container.get("args") or [])]
        if not command:
            self._finish(key, 128, directory, meta["labels"][JOB_NAME_LABEL], container,
                         "the sandbox runs a container's command: the Job template names none")
            return
        if command[0] in _PYTHON:
            command[0] = sys.executable
        env = {**os.environ, **self.extra_env, **self._env(container, meta)}
        env.update(MODELWARDEN_CONTEXT_FILE=str(context), MODELWARDEN_RESULT_FILE=str(result))
        log_file = (directory / "output.log").open("ab")
        process = subprocess.Popen(command, env=env, cwd=directory, stdout=log_file, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        log_file.close()
        self._running[key] = (process, directory, meta["labels"][JOB_NAME_LABEL], container)
        self._patch(f"/api/v1/namespaces/{key[0]}/pods/{key[1]}/status", {"status": {
            "phase": "Running", "startTime": now(), "containerStatuses": [_container(container, {"running": {"startedAt": now()}})]}})

    def _env(self, container: dict[str, Any], meta: dict[str, Any]) -> dict[str, str]:
        values: dict[str, str] = {}
        for item in container.get("env") or []:
            source = item.get("valueFrom") or {}
            if "value" in item:
                values[item["name"]] = str(item["value"])
            elif field := (source.get("fieldRef") or {}).get("fieldPath"):
                values[item["name"]] = str(meta.get(field.removeprefix("metadata."), ""))
            elif secret := source.get("secretKeyRef"):
                found = self._get(f"/api/v1/namespaces/{meta['namespace']}/secrets/{secret['name']}") or {}
                data = (found.get("data") or {}).get(secret["key"])
                if data is not None:
                    values[item["name"]] = base64.b64decode(data).decode()
        return values

    def _finish(self, key: tuple[str, str], exit_code: int, directory: Path, job: str, container: dict[str, Any],
                message: str = "") -> None:
        message = message or (directory / "termination-log").read_bytes()[:MAX_RESULT_BYTES].decode(errors="replace")
        self.runs.append(JobRun(key[0], job, key[1], exit_code, message))
        terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error", "startedAt": now(),
                      "finishedAt": now(), **({"message": message} if message else {})}
        phase = "Succeeded" if exit_code == 0 else "Failed"
        self._patch(f"/api/v1/namespaces/{key[0]}/pods/{key[1]}/status",
                    {"status": {"phase": phase, "containerStatuses": [_container(container, {"terminated": terminated})]}})
        if not self.job_controller:
            return
        if exit_code == 0:
            status = {"succeeded": 1, "completionTime": now(),
                      "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": now()}]}
        else:
            status = {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "lastTransitionTime": now(),
                                                   "reason": "BackoffLimitExceeded", "message": f"the pod exited with code {exit_code}"}]}
        self._patch(f"/apis/batch/v1/namespaces/{key[0]}/jobs/{job}/status", {"status": status})

    def _own_pod(self, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        name, namespace = f"{meta['name']}-run", meta["namespace"]
        if self._get(f"/api/v1/namespaces/{namespace}/pods/{name}") is not None:
            return
        template = job["spec"]["template"]
        labels = {**(template.get("metadata") or {}).get("labels", {}), JOB_NAME_LABEL: meta["name"]}
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": namespace, "labels": labels,
                            "annotations": (template.get("metadata") or {}).get("annotations") or {},
                            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"],
                                                 "controller": True}]},
               "spec": template["spec"]}
        response = self._session.post(f"{self.api_url}/api/v1/namespaces/{namespace}/pods", json=pod, timeout=5)
        if not response.ok:
            log.debug("pod %s: %s %s", name, response.status_code, response.text[:300])

    # -- HTTP --------------------------------------------------------------------------------------
    def _list(self, path: str, selector: str) -> list[dict[str, Any]]:
        response = self._session.get(f"{self.api_url}{path}", params={"labelSelector": selector}, timeout=5)
        response.raise_for_status()
        return response.json().get("items") or []

    def _get(self, path: str) -> dict[str, Any] | None:
        response = self._session.get(f"{self.api_url}{path}", timeout=5)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    def _patch(self, path: str, body: dict[str, Any]) -> None:
        response = self._session.patch(f"{self.api_url}{path}", json=body, headers=MERGE_PATCH, timeout=5)
        if not response.ok:
            log.warning("%s: %s %s", path, response.status_code, response.text[:300])


def _finished(job: dict[str, Any]) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def _container(container: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    return {"name": container.get("name", ""), "image": container.get("image", ""), "imageID": "", "ready": False, "restartCount": 0, "started": "running" in state,
            "state": state}
