"""The environment the operator gives a model-server container and `modelwarden serve` reads:
which model, version and track it serves, and where the feedback-token keys are mounted."""

MODEL_NAME = "MODEL_NAME"
MODEL_VERSION = "MODEL_VERSION"
MODEL_TRACK = "MODEL_TRACK"
MODEL_URI = "MODEL_URI"
FEEDBACK_KEY_FILE = "MODELWARDEN_FEEDBACK_KEY_FILE"  # keys for feedback tokens, one per line (a mounted Secret)
NAMESPACE = "MODELWARDEN_NAMESPACE"  # the pod's namespace (downward API), named in feedback tokens
