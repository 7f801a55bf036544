"""MlflowRegistry against a real `mlflow server`: aliases, stages, versions and runs resolve to
what the registry holds at that moment, and every failure is one RegistryError line that names
the model (or run) and never carries the token.

The real server runs without authentication (MLflow's basic-auth app would cost a second server
start and speaks only Basic auth), so 401/403 answers come from a tiny loopback server that
refuses everything and echoes the Authorization header into its body.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest

from modelwarden.contract.modeluri import Resolution, parse
from modelwarden.registry.base import RegistryError
from modelwarden.registry.mlflow import MlflowRegistry
from modelwarden.sandbox.processes import free_port
from tests.mlflow_server import RefusingServer, client, register_sklearn_model, set_alias

# Starting mlflow server and logging models takes a while on a busy machine: the module's first
# test pays for it in its setup.
pytestmark = pytest.mark.timeout(600)
TOKEN = "tok-7f3a9c-not-for-your-eyes"
NAME = "churn"


@pytest.fixture(scope="module")
def churn(mlflow_server):
    """Versions 1 and 2 of `churn`, each logged with mlflow.sklearn.log_model in its own run."""
    return (register_sklearn_model(mlflow_server.url, NAME, seed=1),
            register_sklearn_model(mlflow_server.url, NAME, seed=2))


@pytest.fixture
def registry(mlflow_server):
    return MlflowRegistry(mlflow_server.url, token=TOKEN)


def resolve_error(registry: MlflowRegistry, uri: str) -> str:
    with pytest.raises(RegistryError) as caught:
        registry.resolve(parse(uri))
    message = str(caught.value)
    assert "\n" not in message and TOKEN not in message, message
    assert message.startswith(f"{uri}: "), message
    return message


def test_alias_resolves_to_the_version_it_names_now(mlflow_server, churn, registry):
    v1, v2 = churn
    set_alias(mlflow_server.url, NAME, "champion", v1.version)
    assert registry.resolve(parse("models:/churn@champion")) == Resolution(
        uri="models:/churn@champion", resolved_uri="models:/churn/1", model_version="1", run_id=v1.run_id)

    set_alias(mlflow_server.url, NAME, "champion", v2.version)
    assert registry.resolve(parse("models:/churn@champion")) == Resolution(
        uri="models:/churn@champion", resolved_uri="models:/churn/2", model_version="2", run_id=v2.run_id)


def test_a_concrete_version_is_checked_and_kept(churn, registry):
    v1, _ = churn
    assert registry.resolve(parse("models:/churn/1")) == Resolution(
        uri="models:/churn/1", resolved_uri="models:/churn/1", model_version="1", run_id=v1.run_id)


def test_stages_still_resolve_in_mlflow_3(mlflow_server, churn, registry):
    """Stages are deprecated since MLflow 2.9 but 3.17 still serves them; `latest` is the newest
    version of any stage, as in mlflow's own models:/NAME/latest."""
    v1, v2 = churn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated since 2.9, still served
        client(mlflow_server.url).transition_model_version_stage(NAME, v1.version, "Production")
    for uri in ("models:/churn/Production", "models:/churn/production"):
        assert registry.resolve(parse(uri)) == Resolution(uri=uri, resolved_uri="models:/churn/1", model_version="1", run_id=v1.run_id)
    assert registry.resolve(parse("models:/churn/latest")).resolved_uri == "models:/churn/2"
    assert "no version in stage 'Staging'" in resolve_error(registry, "models:/churn/Staging")
    assert "'Champion' is not a version, stage" in resolve_error(registry, "models:/churn/Champion")


def test_a_run_is_checked_and_kept(churn, registry):
    v1, _ = churn
    uri = f"runs:/{v1.run_id}/model"
    assert registry.resolve(parse(uri)) == Resolution(uri=uri, resolved_uri=uri, model_version=None, run_id=v1.run_id)


@pytest.mark.parametrize("uri, expected", [
    ("models:/churn@nope", "no alias 'nope' on registered model 'churn'"),
    ("models:/absent@champion", "registered model 'absent' not found"),
    ("models:/absent/3", "version 3 of registered model 'absent' not found"),
    ("models:/churn/99", "version 99 of registered model 'churn' not found"),
    ("models:/absent/latest", "registered model 'absent' not found"),
    ("runs:/0123456789abcdef/model", "run 0123456789abcdef not found"),
])
def test_missing_things_are_one_line_naming_them(churn, registry, uri, expected):
    assert expected in resolve_error(registry, uri)


def test_deleted_versions_aliases_and_runs(mlflow_server, churn, registry):
    """A deleted version is gone, and so is the alias that named it; a deleted run is refused."""
    v1, _ = churn
    tracker = client(mlflow_server.url)
    tracker.create_registered_model("retired")
    for _ in range(2):
        tracker.create_model_version("retired", source=v1.model_uri, run_id=v1.run_id,
                                     model_id=v1.model_uri.removeprefix("models:/"))
    set_alias(mlflow_server.url, "retired", "old", "1")
    assert registry.resolve(parse("models:/retired@old")).resolved_uri == "models:/retired/1"

    tracker.delete_model_version("retired", "1")
    assert "version 1 of registered model 'retired' not found" in resolve_error(registry, "models:/retired/1")
    assert "no alias 'old' on registered model 'retired'" in resolve_error(registry, "models:/retired@old")
    assert registry.resolve(parse("models:/retired/latest")).resolved_uri == "models:/retired/2"

    run = tracker.create_run(tracker.get_experiment_by_name("modelwarden-tests").experiment_id)
    tracker.delete_run(run.info.run_id)
    assert f"run {run.info.run_id} is deleted" in resolve_error(registry, f"runs:/{run.info.run_id}/model")


def test_unreachable_server():
    registry = MlflowRegistry(f"http://127.0.0.1:{free_port()}", token=TOKEN)
    message = resolve_error(registry, "models:/churn@champion")
    assert "is unreachable" in message and "alias 'champion' of registered model 'churn'" in message


@pytest.mark.parametrize("status", [401, 403])
def test_refused_token_is_reported_never_echoed(status):
    server = RefusingServer(status)
    try:
        message = resolve_error(MlflowRegistry(server.url, token=TOKEN), "models:/churn@champion")
        assert "not authorised to read alias 'champion' of registered model 'churn'" in message
        assert f"(HTTP {status}): check the token" in message
        assert server.requests[0][1]["Authorization"] == f"Bearer {TOKEN}"

        no_token = resolve_error(MlflowRegistry(server.url), "models:/churn/1")
        assert "no token was set (MLFLOW_TRACKING_TOKEN)" in no_token
        assert "Authorization" not in server.requests[-1][1]
    finally:
        server.stop()


def test_from_env_and_repr(mlflow_server, churn):
    registry = MlflowRegistry.from_env({"MLFLOW_TRACKING_URI": mlflow_server.url, "MLFLOW_TRACKING_TOKEN": TOKEN})
    assert registry.resolve(parse("models:/churn/2")).model_version == "2"
    assert TOKEN not in repr(registry)
    with pytest.raises(RegistryError, match="MLFLOW_TRACKING_URI is not set"):
        MlflowRegistry.from_env({"MLFLOW_TRACKING_TOKEN": TOKEN})


def test_concurrent_registries_keep_their_own_tokens():
    """One instance per namespace, used from many threads: each request carries its own token."""
    server = RefusingServer(401)
    try:
        registries = {"a": MlflowRegistry(server.url, token="token-a"), "b": MlflowRegistry(server.url, token="token-b")}

        def resolve(i: int) -> str:
            team = "ab"[i % 2]
            with pytest.raises(RegistryError) as caught:
                registries[team].resolve(parse(f"models:/{team}-model-{i}/1"))
            return str(caught.value)

        with ThreadPoolExecutor(8) as pool:
            messages = list(pool.map(resolve, range(40)))
        assert all("token-" not in m for m in messages)
        assert len(server.requests) == 40  # a 401 is final: no second attempt
        seen = {(headers["Authorization"], parse_qs(urlsplit(path).query)["name"][0][0]) for path, headers in server.requests}
        assert seen == {("Bearer token-a", "a"), ("Bearer token-b", "b")}
    finally:
        server.stop()
