"""Argo Workflows: the operator creates a Workflow (builders/retrainruns.py) named like the Job
would be, so a repeat is a 409 and one breach is one Workflow; followed by its phase. Its result is
the output parameter `modelwarden-result` (the termination message's JSON) or, failing that, MLflow."""

from __future__ import annotations

import dataclasses

from modelwarden.api.retrainers import ArgoWorkflowRetrain
from modelwarden.builders.retrainruns import ARGO_API_VERSION, argo_workflow
from modelwarden.contract.kubernetes import MANAGED_BY, POLICY_LABEL
from modelwarden.contract.retraining import InvalidResult, parse_termination_message
from modelwarden.kube.api import KubeApi, RouteApiUnavailable, describe_error
from modelwarden.planning.retraining import JobResult, JobState, RetrainRun
from modelwarden.planning.runstates import workflow_result_parameter, workflow_state
from modelwarden.retrainers.base import BackendUnavailable, ResultSource
from modelwarden.retrainers.results import tagged_model_version

RESULT_PARAMETER = "modelwarden-result"
MANAGED_BY_SELECTOR = ",".join(f"{key}={value}" for key, value in MANAGED_BY.items())


class ArgoRetrainer:
    noun = "Workflow"

    def __init__(self, kube: KubeApi, argo: ArgoWorkflowRetrain, namespace: str, results: ResultSource) -> None:
        self.kube, self.argo, self.namespace, self.results = kube, argo, namespace, results
        self.poll_seconds = argo.poll_interval.total_seconds()

    def launch(self, run: RetrainRun) -> None:
        try:
            self.kube.create(argo_workflow(run.owner, self.argo, run.name, run.trigger, run.context))
        except RouteApiUnavailable as exc:
            raise RuntimeError(f"{exc}: is Argo Workflows installed?") from None

    def _get(self, name: str) -> dict | None:
        try:
            return self.kube.get(ARGO_API_VERSION, "Workflow", self.namespace, name)
        except Exception as exc:
            raise BackendUnavailable(f"cannot read Workflow {name}: {describe_error(exc)}") from exc

    def runs(self, policy: str) -> tuple[JobState, ...]:
        selector = f"{POLICY_LABEL}={policy},{MANAGED_BY_SELECTOR}"
        try:
            found = self.kube.list(ARGO_API_VERSION, "Workflow", self.namespace, selector)
        except Exception as exc:
            raise BackendUnavailable(f"cannot list Workflows: {describe_error(exc)}") from exc
        return tuple(workflow_state(w["metadata"]["name"], w) for w in found)

    def observe(self, name: str) -> JobState | None:
        workflow = self._get(name)
        return workflow_state(name, workflow) if workflow is not None else None

    def result(self, name: str) -> JobResult:
        try:
            workflow = self._get(name)
        except BackendUnavailable as exc:
            return JobResult(unavailable=str(exc))
        reported = workflow_result_parameter(workflow or {}, RESULT_PARAMETER)
        if reported:
            try:
                return JobResult(model=dataclasses.replace(parse_termination_message(reported), reported_by="workflowOutput"))
            except InvalidResult as exc:
                return JobResult(problem=f"output parameter {RESULT_PARAMETER} (read as a termination message): {exc}")
        return tagged_model_version(self.results, self.namespace, name, f"output parameter {RESULT_PARAMETER}")
