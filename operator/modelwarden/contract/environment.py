"""The environment the operator gives a model-server container and `modelwarden serve` reads:
which model, version and track it serves, and where the feedback-token keys are mounted."""

MODEL_NAME = "MODEL_NAME"
MODEL_VERSION = "MODEL_VERSION"
MODEL_TRACK = "MODEL_TRACK"
MODEL_URI = "MODEL_URI"
FEEDBACK_KEY_FILE = "MODELWARDEN_FEEDBACK_KEY_FILE"  # keys for feedback tokens, one per line (a mounted Secret)
NAMESPACE = "MODELWARDEN_NAMESPACE"  # the pod's namespace (downward API), named in feedback tokens
# A paired model (spec.shadow.pairWithStable): the stable's model, scored beside the served one on
# every request so the agreement of their predictions is measured request by request.
PAIRED_MODEL_PATH = "MODELWARDEN_PAIRED_MODEL_PATH"  # where the pod has it (fetched, or on a claim)
PAIRED_MODEL_URI = "MODELWARDEN_PAIRED_MODEL_URI"  # a local path or file:// URI when nothing fetches it
PAIRED_MODEL_VERSION = "MODELWARDEN_PAIRED_MODEL_VERSION"
