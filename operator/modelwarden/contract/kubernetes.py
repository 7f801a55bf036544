"""Our API group, and the labels and annotations by which the operator finds its own objects
again and users talk to it (kubectl annotate ...)."""

GROUP = "modelwarden.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
MODELDEPLOYMENTS = (GROUP, VERSION, "modeldeployments")  # as kopf names resources
DRIFTPOLICIES = (GROUP, VERSION, "driftpolicies")
DEFAULT_IMAGE = "ghcr.io/modelwarden/modelwarden:0.1.0"  # the model-server image when spec.template names none

MANAGED_BY = {"app.kubernetes.io/managed-by": "modelwarden"}  # on every child: the watches select by it
INSTANCE_LABEL = f"{GROUP}/deployment"  # the owning ModelDeployment's name, on every child
SERVING_LABEL = f"{GROUP}/serving"
POLICY_LABEL = f"{GROUP}/policy"  # the DriftPolicy that launched a retraining Job or CronJob
TRIGGER_LABEL = f"{GROUP}/trigger"  # breach, manual or schedule

# A Secret a DriftPolicy may read (Prometheus credentials, alert webhooks, SMTP login) carries this
# label set to "true": the operator reads Secrets with its own permissions, so a Secret is only
# used when its owner opted it in, never because a policy author named it.
SECRET_OPT_IN_LABEL = f"{GROUP}/policy-use"

RETRAIN_ANNOTATION = f"{GROUP}/retrain"  # on a DriftPolicy: a new value launches one retraining Job
RETRY_ANNOTATION = f"{GROUP}/retry"  # on a ModelDeployment: a new value retries an aborted canary
# Day-2 requests on a ModelDeployment (kubectl modelwarden): a new value is one request, acted on
# once and acknowledged in status.requests; `paused` is a state ("true" holds the canary's steps).
PROMOTE_ANNOTATION = f"{GROUP}/promote"  # the canary's current step is done: advance now
PROMOTE_FULL_ANNOTATION = f"{GROUP}/promote-full"  # promote the canary to stable now, skipping its steps
ABORT_ANNOTATION = f"{GROUP}/abort"  # roll the canary back now
APPROVE_ANNOTATION = f"{GROUP}/approve"  # approve the current step (approval: required)
PAUSED_ANNOTATION = f"{GROUP}/paused"
EVALUATE_ANNOTATION = f"{GROUP}/evaluate-now"  # on a DriftPolicy: a new value evaluates at once
