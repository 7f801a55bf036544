"""Resolving registry model URIs (`models:/`, `runs:/`) to the concrete version a track deploys:
the operator's side of an MLflow registry, with per-call credentials (registry/mlflow.py)."""
