"""Fetching model artifacts into a pod: one ArtifactStore per URI scheme (storage/base.py)."""
