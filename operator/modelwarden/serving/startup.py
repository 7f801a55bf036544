"""Startup: load the model and its reference profile, check them against each other, build the service.

`modelwarden serve` (commands.serve) builds a :class:`~modelwarden.serving.service.ServeConfig`
and calls :func:`load_service` before anything listens, so every problem with the model, the
profile or the configuration is one :class:`~modelwarden.serving.service.StartupError` line
rather than a failing request. Kept apart from serving.service, which holds what the running
server shares between requests.
"""

from __future__ import annotations

from pathlib import Path

from modelwarden.contract.metrics import MODEL, TRACK, VERSION
from modelwarden.contract.profile import Profile
from modelwarden.serving.model import PROFILE_FILE, ModelArtifact, ModelLoadError, load_model
from modelwarden.serving.paired import NotPairable, PairedScoring, load_paired
from modelwarden.serving.profile import series_count
from modelwarden.serving.service import ModelService, ServeConfig, StartupError
from modelwarden.serving.tokens import read_keys


def profile_path(config: ServeConfig, artifact: ModelArtifact) -> Path:
    return config.profile or artifact.directory / PROFILE_FILE


def read_profile(config: ServeConfig, artifact: ModelArtifact) -> Profile | None:
    """The reference profile: ``--profile`` (must exist), else profile.json beside the model, which
    may be absent (None: served without drift metrics) but not unreadable or invalid."""
    path = profile_path(config, artifact)
    if config.profile is None and not path.exists() and not path.is_symlink():
        return None
    try:
        return Profile.from_json(path.read_bytes())
    except OSError as exc:
        raise StartupError(
            f"cannot read the profile {path}: {exc.strerror} (build one with `modelwarden profile`)"
        ) from exc
    except ValueError as exc:
        first = str(exc).splitlines()
        raise StartupError(f"invalid profile {path}: {' '.join(first[:3])}") from exc


def no_profile_warning(artifact: ModelArtifact) -> str:
    """The one startup line that says drift metrics are off, and how to turn them on."""
    return (
        f"no reference profile ({PROFILE_FILE} is not beside the model in {artifact.directory} and no --profile "
        "was given): serving without drift metrics (no feature or prediction histograms, no outlier counts; "
        f"modelwarden_profile_loaded is 0); put {PROFILE_FILE} beside the model or pass --profile / MODEL_PROFILE "
        "(build it with `modelwarden profile`)"
    )


def load_service(config: ServeConfig) -> ModelService:
    """Model + profile (and a paired model), checked against each other; any problem is a one-line StartupError."""
    try:
        runner, artifact = load_model(config.model_uri, config.trusted_skops_types)
    except ModelLoadError as exc:
        raise StartupError(str(exc)) from exc
    model_path = artifact.path
    profile = read_profile(config, artifact)
    feature_names: list[str] | None = None
    warnings: tuple[str, ...] = ()
    if profile is None:
        feature_names = runner.feature_names()
        if feature_names is None:
            raise StartupError(
                f"{model_path} does not say how many features it takes (no n_features_in_), and there is no "
                f"reference profile to say it: put {PROFILE_FILE} beside the model or pass --profile"
            )
        warnings = (no_profile_warning(artifact),)
    elif profile.prediction.task != runner.task:
        raise StartupError(
            f"the profile describes a {profile.prediction.task} model but {model_path} is a {runner.task} model"
        )
    elif runner.n_features is not None and runner.n_features != len(profile.features):
        raise StartupError(
            f"the model takes {runner.n_features} features but the profile lists {len(profile.features)}"
        )
    series = series_count(profile) if profile is not None and config.metrics else None
    spent = series.total if series is not None else 0  # the profile's series (a paired model's come on top)
    if series is not None and config.max_series:
        # Refused here rather than discovered by Prometheus: every pod of every track multiplies it.
        if series.total > config.max_series:
            raise StartupError(
                f"the profile {profile_path(config, artifact)} would export {series.total} series per server process "
                f"({series.details()}), more than --max-series {config.max_series}: build it with fewer --bins "
                "in `modelwarden profile` (or train on fewer features), or raise --max-series / "
                "MODELWARDEN_MAX_SERIES (0 disables the limit)"
            )
    if config.feedback_key_file is not None:
        try:
            read_keys(config.feedback_key_file)
        except (OSError, ValueError) as exc:
            raise StartupError(f"cannot use the feedback key file: {exc}") from exc
    if config.feedback_cache_bytes < 0 or config.feedback_cache_size < 0:
        raise StartupError("--feedback-cache-size and --feedback-cache-bytes must be 0 (no cache) or positive")
    if not config.value_range_factor >= 0:
        raise StartupError("--value-range-factor must be 0 (only non-finite and overflowing values refused) or positive")
    if config.feedback_token_max_age <= 0:
        raise StartupError("--feedback-token-max-age must be positive")
    paired = None
    if config.paired_model and config.metrics:  # without metrics nothing would export the counts
        n_features = runner.n_features if profile is None else len(profile.features)
        try:
            paired = load_paired(config, runner, n_features)
        except NotPairable as exc:
            warnings = (*warnings, str(exc))
    try:
        service = ModelService(config, runner, profile, feature_names, warnings, artifact.source)
    except OSError as exc:
        raise StartupError(f"cannot open the prediction log {config.prediction_log}: {exc.strerror}") from exc
    if paired is not None:
        pairs = PairedScoring.series(service.classes, paired)
        if config.max_series and spent + pairs > config.max_series:
            service.warnings = (*service.warnings, f"the paired model would add {pairs} series (classes × its classes) "
                                f"to {spent}, more than --max-series {config.max_series}: requests are not paired")
        else:
            labels = {MODEL: config.name, VERSION: str(config.version), TRACK: config.track}
            service.paired = PairedScoring(paired, config.paired_version, labels, service.classes, service.registry)
    return service
