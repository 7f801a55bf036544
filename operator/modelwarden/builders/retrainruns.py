"""Pure builders for retraining runs outside batch/v1: an Argo Workflow, the body that triggers an
Airflow DAG run, the body that creates a Kubeflow Pipelines run. Each carries the same context as a
Job's environment (builders/jobs.py), in the form its system passes on to the training code."""

from __future__ import annotations

import copy
import json
from typing import Any

from modelwarden.api.retrainers import AirflowRetrain, ArgoWorkflowRetrain, KubeflowRetrain
from modelwarden.builders.jobs import PolicyOwner, RetrainContext
from modelwarden.contract.kubernetes import MANAGED_BY, POLICY_LABEL, TRIGGER_LABEL
from modelwarden.contract.retraining import CONTEXT_ANNOTATION

ARGO_API_VERSION = "argoproj.io/v1alpha1"
CONTEXT_PARAMETER = "MODELWARDEN_CONTEXT"  # the whole context as one JSON argument of a Workflow


def external_run_name(namespace: str, name: str) -> str:
    """The run's identity in a system outside the cluster (Airflow's dag_run_id, Kubeflow's display
    name): the namespace is part of it, so two namespaces' policies of one name never share a run.
    A dot cannot occur in a namespace, so the two parts never run together."""
    return f"modelwarden.{namespace}.{name}"


def _typed(context: RetrainContext, trigger: str) -> dict[str, Any]:
    """The context as values (lists and objects as JSON, not strings): the context file's content."""
    return {**json.loads(context.document()), "MODELWARDEN_TRIGGER": trigger}


def argo_workflow(owner: PolicyOwner, argo: ArgoWorkflowRetrain, name: str, trigger: str, context: RetrainContext) -> dict[str, Any]:
    """A Workflow named like the Job would be (creating it twice is a no-op: 409), owned by the
    policy, its arguments the context (ours win over same-named template arguments)."""
    given = argo.metadata or {}
    labels = {**(given.get("labels") or {}), **MANAGED_BY, POLICY_LABEL: owner.name, TRIGGER_LABEL: trigger.lower()}
    annotations = {**(given.get("annotations") or {}), CONTEXT_ANNOTATION: context.document()}
    ours = {**context.values(), "MODELWARDEN_TRIGGER": trigger, CONTEXT_PARAMETER: context.document()}
    arguments = [{"name": key, "value": value} for key, value in {**argo.parameters, **ours}.items()]
    if argo.workflow_template_ref is not None:
        ref = argo.workflow_template_ref
        spec: dict[str, Any] = {"workflowTemplateRef": {"name": ref.name, **({"clusterScope": True} if ref.cluster_scope else {})}}
    else:
        spec = copy.deepcopy(argo.workflow_spec or {})
        kept = [p for p in (spec.get("arguments") or {}).get("parameters") or [] if p.get("name") not in {a["name"] for a in arguments}]
        arguments = [*kept, *arguments]
    spec["arguments"] = {**(spec.get("arguments") or {}), "parameters": arguments}
    return {
        "apiVersion": ARGO_API_VERSION,
        "kind": "Workflow",
        "metadata": {"name": name, "namespace": owner.namespace, "labels": labels, "annotations": annotations,
                     "ownerReferences": [owner.reference()]},
        "spec": spec,
    }


def airflow_dag_run(airflow: AirflowRetrain, run_id: str, trigger: str, context: RetrainContext) -> dict[str, Any]:
    """POST /api/v2/dags/{dag_id}/dagRuns: the deterministic dag_run_id makes a repeat a 409; the
    context is the run's conf (its MODELWARDEN_* keys win over spec conf)."""
    return {"dag_run_id": run_id, "logical_date": None, "conf": {**airflow.conf, **_typed(context, trigger)},
            "note": f"modelwarden: {context.reason}"[:1000]}


def kubeflow_run(kubeflow: KubeflowRetrain, display_name: str, trigger: str, context: RetrainContext) -> dict[str, Any]:
    """POST /apis/v2beta1/runs: a run of one pipeline version, the context as one JSON string
    parameter (a pipeline declares it like any other input)."""
    parameters = dict(kubeflow.parameters)
    if kubeflow.context_parameter:
        parameters[kubeflow.context_parameter] = json.dumps(_typed(context, trigger), separators=(",", ":"), sort_keys=True)
    body: dict[str, Any] = {
        "display_name": display_name,
        "description": f"modelwarden {trigger.lower()} retraining of {context.model} ({context.namespace}/{context.policy}): "
                       f"{context.reason}"[:1000],
        "pipeline_version_reference": {"pipeline_id": kubeflow.pipeline_id, "pipeline_version_id": kubeflow.pipeline_version_id},
        "runtime_config": {"parameters": parameters},
    }
    if kubeflow.experiment_id:
        body["experiment_id"] = kubeflow.experiment_id
    if kubeflow.service_account:
        body["service_account"] = kubeflow.service_account
    return body
