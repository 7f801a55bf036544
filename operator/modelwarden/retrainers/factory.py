"""The Retrainer a policy's spec.actions.retrain names (exactly one backend is set)."""

from __future__ import annotations

from modelwarden.api.actions import RetrainSpec
from modelwarden.kube.api import KubeApi
from modelwarden.kube.secrets import SecretReader
from modelwarden.planning.egress import EgressRules
from modelwarden.planning.retraining import JobState
from modelwarden.retrainers.airflow import AirflowRetrainer
from modelwarden.retrainers.argo import ArgoRetrainer
from modelwarden.retrainers.base import BackendUnavailable, ResultSource, Retrainer
from modelwarden.retrainers.job import JobRetrainer
from modelwarden.retrainers.kubeflow import KubeflowRetrainer


def build(spec: RetrainSpec | None, kube: KubeApi, namespace: str, secret: SecretReader, egress: EgressRules, results: ResultSource,
          indexed_jobs: tuple[JobState, ...] = ()) -> Retrainer:
    """Airflow and Kubeflow URLs obey the operator's --allowed-alert-hosts (they receive a Secret of the
    policy's). Without spec.actions.retrain, a Job still running is followed as a Job."""
    if spec is None:
        return JobRetrainer(kube, None, namespace, indexed_jobs, results)
    if spec.argo_workflow is not None:
        return ArgoRetrainer(kube, spec.argo_workflow, namespace, results)
    remote = spec.airflow or spec.kubeflow
    if remote is not None and (refusal := egress.alert_refusal(remote.url)):
        return Refused(refusal, "Airflow DAG run" if spec.airflow else "Kubeflow run")
    if spec.airflow is not None:
        return AirflowRetrainer(spec.airflow, namespace, secret, results)
    if spec.kubeflow is not None:
        return KubeflowRetrainer(spec.kubeflow, namespace, secret, results)
    return JobRetrainer(kube, spec.job_template, namespace, indexed_jobs, results)


class Refused:
    """A backend the operator may not reach: nothing is launched or asked, and every attempt says why."""

    poll_seconds = None

    def __init__(self, why: str, noun: str) -> None:
        self.why, self.noun = why, noun

    def launch(self, run) -> None:
        raise RuntimeError(self.why)

    def runs(self, policy: str):
        raise BackendUnavailable(self.why)

    def observe(self, name: str):
        raise BackendUnavailable(self.why)

    def result(self, name: str):
        raise BackendUnavailable(self.why)
