"""DriftPolicy evaluations as MLflow runs, over the tracking server's REST API (as registry.mlflow).

Endpoints (MLflow REST API 2.0): experiments/get-by-name and experiments/create, runs/search (the
run of a (namespace, policy, model, version) by its tags) and runs/create, runs/log-batch (the
metrics and tags of one evaluation; the params too while the run has none). The operator logs one
policy's evaluations one after another (controller.tracking), so only two operators racing to
create the same run can make two; the older is used from then on.
"""

from __future__ import annotations

from typing import Any

from modelwarden.planning.tracking import TrackingRecord
from modelwarden.registry.base import RegistryError
from modelwarden.registry.mlflow import MlflowRegistry


class MlflowTracker:
    """Records evaluations on one MLflow tracking server; holds no state (safe to share)."""

    def __init__(self, server: MlflowRegistry):
        self.server = server

    def log(self, record: TrackingRecord) -> str:
        try:
            return self._log(record)
        except (KeyError, TypeError, ValueError) as exc:  # a 200 without what the API promises
            raise RegistryError(f"MLflow at {self.server.site} answered without the expected fields "
                                f"({type(exc).__name__}: {exc}) while recording {record.run_name!r}") from None

    def _log(self, record: TrackingRecord) -> str:
        experiment = self._experiment(record.experiment)
        run, has_params = self._run(experiment, record)
        batch: dict[str, Any] = {
            "run_id": run,
            "metrics": [{"key": key, "value": value, "timestamp": record.timestamp_ms, "step": record.step}
                        for key, value in sorted(record.metrics.items())],
            "tags": [{"key": key, "value": value} for key, value in sorted(record.tags.items())],
        }
        if not has_params:  # a new run, or one whose first batch never arrived
            batch["params"] = [{"key": key, "value": value} for key, value in sorted(record.params.items())]
        what = f"the evaluation of {record.run_name!r}"
        self.server.check(*self.server.call("POST", "runs/log-batch", what, body=batch), what)
        return run

    def _experiment(self, name: str) -> str:
        what = f"experiment {name!r}"
        status, body = self.server.call("GET", "experiments/get-by-name", what, params={"experiment_name": name})
        if status == 200:
            return str(body["experiment"]["experiment_id"])
        if body.get("error_code") != "RESOURCE_DOES_NOT_EXIST":
            self.server.check(status, body, what)
        status, body = self.server.call("POST", "experiments/create", what, body={"name": name})
        if status == 200:
            return str(body["experiment_id"])
        if body.get("error_code") == "RESOURCE_ALREADY_EXISTS":  # created meanwhile by another caller
            return self._experiment(name)
        self.server.check(status, body, what)
        raise RegistryError(f"MLflow at {self.server.site} did not create {what}")

    def _run(self, experiment: str, record: TrackingRecord) -> tuple[str, bool]:
        """The run of the record's identity (the oldest, should a race have made two), created when
        missing, and whether it has its params already."""
        what = f"the run of {record.run_name!r}"
        found = self._find(experiment, record, what)
        if found:
            return found
        tags = [{"key": key, "value": value} for key, value in sorted(record.identity.items())]
        tags.append({"key": "mlflow.runName", "value": record.run_name})
        status, body = self.server.call("POST", "runs/create", what, body={
            "experiment_id": experiment, "run_name": record.run_name, "start_time": record.timestamp_ms, "tags": tags})
        self.server.check(status, body, what)
        return str(body["run"]["info"]["run_id"]), False

    def _find(self, experiment: str, record: TrackingRecord, what: str) -> tuple[str, bool] | None:
        # planning.tracking keeps quotes and backslashes out of identity values, so they sit in '...' as they are.
        matches = " and ".join(f"tags.`{key}` = '{value}'" for key, value in sorted(record.identity.items()))
        status, body = self.server.call("POST", "runs/search", what, body={
            "experiment_ids": [experiment], "filter": matches, "max_results": 10, "order_by": ["attributes.start_time ASC"]})
        self.server.check(status, body, what)
        runs = [r for r in body.get("runs") or [] if r.get("info", {}).get("lifecycle_stage") != "deleted"]
        if not runs:
            return None
        return str(runs[0]["info"]["run_id"]), bool((runs[0].get("data") or {}).get("params"))

