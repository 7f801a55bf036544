"""Kubeflow Pipelines (REST API v2beta1): a run of one pipeline version per retraining run. KFP
names runs itself, so the run's deterministic display name is its identity: launching first looks
for a run of that name in the experiment and creates one only when there is none, so a restart
finds the run it created. Followed by its state; its result is the MLflow model version tagged
with the breach id."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from modelwarden.api.retrainers import KubeflowRetrain
from modelwarden.builders.retrainruns import external_run_name, kubeflow_run
from modelwarden.kube.secrets import SecretReader
from modelwarden.planning.retraining import JobResult, JobState, RetrainRun
from modelwarden.planning.runstates import kubeflow_state
from modelwarden.retrainers.base import BackendUnavailable, ResultSource
from modelwarden.retrainers.http import call, json_body, reason
from modelwarden.retrainers.results import tagged_model_version


class KubeflowRetrainer:
    noun = "Kubeflow run"

    def __init__(self, kubeflow: KubeflowRetrain, namespace: str, secret: SecretReader, results: ResultSource) -> None:
        self.kubeflow, self.namespace, self.secret, self.results = kubeflow, namespace, secret, results
        self.poll_seconds = kubeflow.poll_interval.total_seconds()
        self.endpoint = f"{kubeflow.url.rstrip('/')}/apis/v2beta1/runs"
        self.timeout = kubeflow.timeout.total_seconds()

    def _headers(self) -> dict[str, str]:
        ref = self.kubeflow.token_secret_ref
        if ref is None:
            return {}
        try:
            return {"Authorization": f"Bearer {self.secret(ref.name, ref.key).strip()}"}
        except LookupError as exc:
            raise BackendUnavailable(f"Kubeflow token: {exc}") from None

    def _list(self, display_name: str, operation: str) -> list[dict[str, Any]]:
        """Runs whose display name EQUALS (or has as a substring: IS_SUBSTRING) `display_name`, in the experiment when one is set."""
        predicate = {"key": "display_name", "operation": operation, "string_value": display_name}
        # KFP unescapes `filter` once more after the query string's own decoding: escape it twice.
        params: dict[str, Any] = {"filter": quote(json.dumps({"predicates": [predicate]}), safe=""), "page_size": 10,
                                  "sort_by": "created_at desc"}
        if self.kubeflow.experiment_id:
            params["experiment_id"] = self.kubeflow.experiment_id
        response = call("GET", self.endpoint, self.timeout, f"list Kubeflow runs named {display_name}", params=params, headers=self._headers())
        if response.status_code != 200:
            raise BackendUnavailable(f"cannot list Kubeflow runs: {reason(response)}")
        listed = json_body(response, "Kubeflow ListRuns")
        return [r for r in (listed.get("runs") if isinstance(listed, dict) else None) or []
                if isinstance(r, dict) and isinstance(r.get("display_name"), str)]

    def _find(self, display_name: str) -> dict[str, Any] | None:
        """The newest run of this display name."""
        runs = [r for r in self._list(display_name, "EQUALS") if r["display_name"] == display_name]
        return max(runs, key=lambda r: str(r.get("created_at") or ""), default=None)

    def runs(self, policy: str) -> tuple[JobState, ...]:
        prefix, ours = external_run_name(self.namespace, f"{policy}-retrain-"), external_run_name(self.namespace, "")
        return tuple(kubeflow_state(r["display_name"][len(ours):], r, self.kubeflow.context_parameter)
                     for r in self._list(prefix, "IS_SUBSTRING") if r["display_name"].startswith(prefix))

    def launch(self, run: RetrainRun) -> None:
        display_name = external_run_name(self.namespace, run.name)
        if self._find(display_name) is not None:
            return  # launched before a restart or a lost status write
        body = kubeflow_run(self.kubeflow, display_name, run.trigger, run.context)
        response = call("POST", self.endpoint, self.timeout, f"create Kubeflow run {display_name}", json=body, headers=self._headers())
        if response.status_code != 200:
            raise RuntimeError(f"Kubeflow refused to create run {display_name}: {reason(response)}")

    def observe(self, name: str) -> JobState | None:
        found = self._find(external_run_name(self.namespace, name))
        return kubeflow_state(name, found, self.kubeflow.context_parameter) if found is not None else None

    def result(self, name: str) -> JobResult:
        return tagged_model_version(self.results, self.namespace, name, "result from the Kubeflow run")
