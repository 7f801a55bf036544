"""modelwarden: a Kubernetes operator that keeps deployed ML models healthy."""

GROUP = "modelwarden.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

__version__ = "0.1.0"
