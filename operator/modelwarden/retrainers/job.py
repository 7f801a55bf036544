"""The default backend: a batch/v1 Job (builders/jobs.py), followed through the watch's index, its
result in its container's termination message or, failing that, in MLflow."""

from __future__ import annotations

from typing import Any

from modelwarden.api.actions import JobTemplate
from modelwarden.builders.jobs import retrain_job
from modelwarden.contract.retraining import InvalidResult, parse_termination_message
from modelwarden.kube.api import KubeApi, describe_error
from modelwarden.planning.retraining import JobResult, JobState, RetrainRun, job_state
from modelwarden.retrainers.base import ResultSource
from modelwarden.retrainers.results import tagged_model_version


class JobRetrainer:
    noun = "Job"
    poll_seconds = None  # the Job watch wakes the policy

    def __init__(self, kube: KubeApi, template: JobTemplate | None, namespace: str, indexed: tuple[JobState, ...], results: ResultSource) -> None:
        self.kube, self.template, self.namespace, self.indexed, self.results = kube, template, namespace, indexed, results

    def launch(self, run: RetrainRun) -> None:
        if self.template is None:
            raise RuntimeError("spec.actions.retrain.jobTemplate is not set")
        self.kube.create(retrain_job(run.owner, self.template, run.name, run.trigger, run.context))  # 409: it exists, read back

    def runs(self, policy: str) -> tuple[JobState, ...]:
        return self.indexed  # the Job watch's index: free

    def observe(self, name: str) -> JobState | None:
        """From the index; by name only when the index has not seen it (yet)."""
        found = next((job for job in self.indexed if job.name == name), None)
        if found is None:
            body = self.kube.get("batch/v1", "Job", self.namespace, name)
            found = job_state(body) if body else None
        return found

    def result(self, name: str) -> JobResult:
        try:
            pods = self.kube.list("v1", "Pod", self.namespace, f"job-name={name}")
        except Exception as exc:
            return JobResult(unavailable=f"cannot list the Job's pods: {describe_error(exc)}")
        message = termination_message(pods)
        if message:
            try:
                return JobResult(model=parse_termination_message(message))
            except InvalidResult as exc:
                return JobResult(problem=str(exc))
        return tagged_model_version(self.results, self.namespace, name, "termination message")


def termination_message(pods: list[dict[str, Any]]) -> str:
    """The first non-empty termination message of a succeeded pod's containers, in spec order."""
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") != "Succeeded":
            continue
        by_name = {c.get("name"): c for c in status.get("containerStatuses") or []}
        for container in (pod.get("spec") or {}).get("containers") or []:
            terminated = ((by_name.get(container.get("name")) or {}).get("state") or {}).get("terminated") or {}
            if (terminated.get("message") or "").strip():
                return terminated["message"].strip()
    return ""
