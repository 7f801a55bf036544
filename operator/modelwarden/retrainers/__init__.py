"""Where retraining runs: one Retrainer per backend (Job, Argo Workflow, Airflow, Kubeflow Pipelines)."""
