"""A retraining Job's program for the sandbox and the tests, written as a team would write theirs
against the contract (docs/driftpolicy.md, "The retraining Job contract"):

1. read the context (MODELWARDEN_CONTEXT_FILE): the model, the breach id, the stable version;
2. train on fresh data: here generated rows from the world as it is now (`--shift`, the drift the
   sandbox injects), with labels from the same true function; `--shuffle-labels` trains a bad model
   on purpose (the tests' second scenario);
3. report the result: with MODELWARDEN_MLFLOW_TRACKING_URI, log the model to MLflow as the next
   version of the registered model, its profile as a run artifact, and tag the version with the
   breach id (modelwarden.io/breach-id); without it, write the model directory under `--output`
   and {"modelUri": "file://...", "version": ...} to the termination message (MODELWARDEN_RESULT_FILE).

Run as `python -m modelwarden.sandbox.retrain [--rows N] [--shift FEATURE=SIGMAS,...] [--shuffle-labels]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from modelwarden.contract.profile import Profile
from modelwarden.contract.retraining import BREACH_ID_TAG
from modelwarden.sandbox import datagen
from modelwarden.sandbox.examples import write_csv
from modelwarden.serving.model import MODEL_FILE, PROFILE_FILE
from modelwarden.serving.profile import build_profile_from_csv
from modelwarden.serving.sharededges import on_edges_of


def _shift(text: str) -> dict[str, float]:
    pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
    return {name.strip(): float(value) for name, value in pairs}


def _next_version(parent: str, breach: str) -> str:
    return str(int(parent) + 1) if parent.isdigit() else f"{parent or 'v'}-r{hashlib.sha256(breach.encode()).hexdigest()[:6]}"


def stable_profile(uri: str, tracking_uri: str) -> Profile | None:
    """The stable model's profile (MODELWARDEN_STABLE_MODEL_URI): a file:// model directory's, or the
    profile.json of the MLflow run behind models:/NAME/N."""
    if uri.startswith("file://"):
        path = Path(uri.removeprefix("file://"))
        candidate = (path if path.is_dir() else path.parent) / PROFILE_FILE
        return Profile.from_json(candidate.read_text()) if candidate.exists() else None
    if uri.startswith("models:/") and tracking_uri:
        from mlflow import MlflowClient

        name, _, number = uri.removeprefix("models:/").partition("/")
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        run_id = client.get_model_version(name, number).run_id
        with tempfile.TemporaryDirectory() as scratch:
            return Profile.from_json(Path(client.download_artifacts(run_id, PROFILE_FILE, scratch)).read_text())
    return None


def train(directory: Path, rows: int, seed: int, shift: dict[str, float], shuffle: bool, edges_from: Profile | None) -> None:
    """The example classifier's recipe (scaler + logistic regression) on fresh rows, with its profile
    counted on the stable's bucket edges (so the shadow gate compares the two bin for bin)."""
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = datagen.classification(rows, seed, datagen.Drift(shift=shift))
    if shuffle:
        y = np.random.default_rng(seed).permutation(y)
    estimator = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, directory / MODEL_FILE)
    write_csv(directory / "train.csv", x, y)
    profile = build_profile_from_csv(directory / "train.csv", datagen.TARGET, bins=20, model=str(directory / MODEL_FILE))
    if edges_from is not None:
        profile = on_edges_of(profile, edges_from, directory / "train.csv", str(directory / MODEL_FILE))
    (directory / PROFILE_FILE).write_text(profile.to_json() + "\n")


def report_to_mlflow(directory: Path, tracking_uri: str, model: str, breach: str) -> str:
    import joblib
    import mlflow
    import mlflow.sklearn
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    experiment = client.get_experiment_by_name(f"{model}-retraining")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(f"{model}-retraining")
    with mlflow.start_run(experiment_id=experiment_id, tags={BREACH_ID_TAG: breach}) as run:
        info = mlflow.sklearn.log_model(joblib.load(directory / MODEL_FILE), name="model", registered_model_name=model,
                                        pip_requirements=["scikit-learn"])
        client.log_text(run.info.run_id, (directory / PROFILE_FILE).read_text(), PROFILE_FILE)
    version = str(info.registered_model_version)
    client.set_model_version_tag(model, version, BREACH_ID_TAG, breach)
    return version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelwarden.sandbox.retrain", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--shift", type=_shift, default={}, help="the world now: FEATURE=SIGMAS,...")
    parser.add_argument("--shuffle-labels", action="store_true", help="train a bad model on purpose")
    parser.add_argument("--output", type=Path, default=Path("models"), help="where models go without MLflow")
    args = parser.parse_args(argv)
    context = json.loads(Path(os.environ["MODELWARDEN_CONTEXT_FILE"]).read_text())
    breach, model = context["MODELWARDEN_BREACH_ID"], context["MODELWARDEN_MODEL"]
    print(f"retraining {model} (stable {context['MODELWARDEN_STABLE_VERSION']}) for {breach}: "
          f"checks {[c.get('check') for c in context['MODELWARDEN_FAILING_CHECKS']]}", flush=True)
    version = _next_version(context["MODELWARDEN_STABLE_VERSION"], breach)
    directory = (args.output / version).resolve()
    tracking = context.get("MODELWARDEN_MLFLOW_TRACKING_URI") or ""
    train(directory, args.rows, args.seed, args.shift, args.shuffle_labels,
          stable_profile(context["MODELWARDEN_STABLE_MODEL_URI"], tracking))
    if tracking:
        registered = report_to_mlflow(directory, tracking, model, breach)
        print(f"registered {model} version {registered} in MLflow, tagged {BREACH_ID_TAG}={breach}", flush=True)
        return 0
    result = {"modelUri": directory.as_uri(), "version": version}
    Path(os.environ["MODELWARDEN_RESULT_FILE"]).write_text(json.dumps(result))
    print(f"wrote {result}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
