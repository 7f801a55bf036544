"""A spec-validated stand-in for the Kubeflow Pipelines v2beta1 Run REST API (the real server cannot run here).

Routes, query parameters, request bodies and every response (errors too) are checked against KFP's
published swagger, tests/fixtures/kfp/run.swagger.json (see the README there). What the swagger cannot
express mirrors the API server at kubeflow/pipelines@7b70c7b9 (== release 2.17.0 for these files):
  * bodies are decoded by grpc-gateway with protojson DiscardUnknown=false (apiserver/common/utils.go
    CustomMarshaler), so unknown fields are 400; responses use proto (snake_case) names and omit
    unset fields (EmitUnpopulated=false): a ListRuns with no match answers `{}`.
  * errors are google.rpc.Status: {"code": <grpc code>, "message": ..., "details": [{"@type":
    "type.googleapis.com/google.rpc.Status", "code", "message"}]} (common/util/error.go GRPCStatus).
  * an unknown path is 404 (code 5); a known path with another method is 501 (code 12, "Method Not
    Allowed") -- grpc-gateway runtime/mux.go + DefaultRoutingErrorHandler.
Deliberately stricter than the real server (each is recorded in `.invalid`): unknown or repeated query
parameters are 400 (grpc-gateway ignores unknown ones), camelCase field aliases, JSON null and numeric enum
values (protojson accepts them) are 400. Single-user mode: `namespace` is accepted and ignored, and
experiments and pipelines are not checked to exist (any ids are accepted).
"""

from __future__ import annotations

import base64
import copy
import json
import operator
import re
import threading
import urllib.parse
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema

SPEC = json.loads((Path(__file__).parent / "fixtures" / "kfp" / "run.swagger.json").read_text())
EPOCH = "1970-01-01T00:00:00Z"  # toApiRun always sets finished_at: an unfinished run reports the epoch
TERMINAL = {"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"}
HTTP_TO_GRPC = {400: 3, 401: 16, 403: 7, 404: 5, 409: 10, 429: 8, 500: 13, 501: 12, 503: 14, 504: 4}


def _schema(s: dict) -> dict:
    """Swagger 2.0 schema -> JSON Schema: $ref siblings dropped, message objects closed (unknown fields are 400)."""
    if "$ref" in s:
        return {"$ref": s["$ref"]}
    out = {k: v for k, v in s.items() if k not in ("description", "title", "default")}
    if "properties" in s:
        out["properties"] = {name: _schema(p) for name, p in s["properties"].items()}
        out.setdefault("additionalProperties", False)
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _schema(out["additionalProperties"])
    if "items" in s:
        out["items"] = _schema(s["items"])
    return out


DEFS = {name: _schema(s) for name, s in SPEC["definitions"].items()}
RUNTIME_STATES = DEFS["v2beta1RuntimeState"]["enum"]
FORMATS = jsonschema.FormatChecker(formats=())
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)\Z")


@FORMATS.checks("date-time")
def _date_time(v: Any) -> bool:
    if not isinstance(v, str):
        return True
    try:
        return bool(_RFC3339.match(v)) and bool(datetime.fromisoformat(re.sub(r"\.\d+", "", v)))
    except ValueError:
        return False


@FORMATS.checks("int64")
def _int64(v: Any) -> bool:
    return not isinstance(v, str) or bool(re.fullmatch(r"-?\d+", v)) and -2**63 <= int(v) < 2**63


@FORMATS.checks("int32")
def _int32(v: Any) -> bool:
    return not isinstance(v, int) or -2**31 <= v < 2**31


def validator(schema: dict) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator({**_schema(schema), "definitions": DEFS}, format_checker=FORMATS)


STATUS = validator({"$ref": "#/definitions/googleRpcStatus"})
# The `filter` query parameter: a JSON Filter message, transcribed from backend/api/v2beta1/filter.proto
# (names as in swagger/filter.swagger.json). server/list_request_util.go parseAPIFilter QueryUnescapes the
# (already URL-decoded) string once more, renames camelCase value keys, then protojson.Unmarshal's it
# (strict); filter/filter.go toPredicate/checkPredicate reject an empty key, a missing value, IN with a
# scalar, scalar operators with a list, IS_SUBSTRING with a non-string; model/run.go runAPIToModelFieldMap
# lists the keys a run filter or sort_by may name (others: "no support for filtering on unrecognized field").
OPS = ["OPERATION_UNSPECIFIED", "EQUALS", "NOT_EQUALS", "GREATER_THAN", "GREATER_THAN_EQUALS",
       "LESS_THAN", "LESS_THAN_EQUALS", "IN", "IS_SUBSTRING"]
_values_of = lambda item: {"type": "object", "properties": {"values": {"type": "array", "items": item}}}  # noqa: E731
VALUES = {"int_value": {"type": "integer", "format": "int32"}, "long_value": {"type": ["string", "integer"], "format": "int64"},
          "string_value": {"type": "string"}, "timestamp_value": {"type": "string", "format": "date-time"},
          "int_values": _values_of({"type": "integer", "format": "int32"}),
          "long_values": _values_of({"type": ["string", "integer"], "format": "int64"}), "string_values": _values_of({"type": "string"})}
FILTER = validator({"type": "object", "properties": {"predicates": {"type": "array", "items": {
    "type": "object", "properties": {"operation": {"type": "string", "enum": OPS}, "key": {"type": "string"}, **VALUES}}}}})
STR_KEYS = {"run_id": "run_id", "id": "run_id", "display_name": "display_name", "name": "display_name",
            "description": "description", "experiment_id": "experiment_id", "state": "state",
            "storage_state": "storage_state", "recurring_run_id": "recurring_run_id", "namespace": "namespace"}
TIME_KEYS = {"created_at", "finished_at", "scheduled_at"}
RUN_KEYS = set(STR_KEYS) | TIME_KEYS | {"status", "state_history", "runtime_details"}
COMPARE = {"EQUALS": operator.eq, "NOT_EQUALS": operator.ne, "GREATER_THAN": operator.gt, "GREATER_THAN_EQUALS": operator.ge,
           "LESS_THAN": operator.lt, "LESS_THAN_EQUALS": operator.le, "IN": lambda f, v: f in v,
           "IS_SUBSTRING": lambda f, v: v in f}


class ApiError(Exception):
    def __init__(self, status: int, message: str, invalid: bool = True, detail: str | None = None):
        super().__init__(message)
        self.status, self.message, self.invalid, self.detail = status, message, invalid, detail


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # the server keeps whole seconds


def _seconds(ts: str) -> int:
    return int(datetime.fromisoformat(ts).timestamp())


def _check(v: jsonschema.Draft7Validator, instance: Any, what: str) -> None:
    error = jsonschema.exceptions.best_match(v.iter_errors(instance))
    if error is not None:
        raise ApiError(400, f"{what} does not match the KFP spec at {error.json_path}: {error.message}")


class KfpStandIn:
    def __init__(self, token: str | None = None):
        self.token = token
        self.runs: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict, Any]] = []
        self.invalid: list[dict] = []  # requests a real server would refuse (or that the stand-in refuses, stricter)
        self.bugs: list[str] = []  # responses that failed their own schema: raised again by stop()
        self.default_experiment_id = str(uuid.uuid4())  # what the server gives runs created without one
        self._fail: list[int] = []
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        routes = [(path, re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/:]+)", re.escape(path)) + "$"), ops)
                  for path, ops in SPEC["paths"].items()]  # most literal first: ".../{run_id}:archive" before ".../{run_id}"
        self._routes = sorted(routes, key=lambda r: -len(re.sub(r"\{\w+\}", "", r[0])))
        self._impl = {"RunService_CreateRun": self._create, "RunService_GetRun": self._get, "RunService_ListRuns": self._list}

    # lifecycle
    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> KfpStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, payload = standin._handle(self.command, self.path, self.headers, raw)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self, check: bool = True) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if check and self.bugs:
            raise AssertionError("KFP stand-in sent responses that violate the spec: " + "; ".join(self.bugs))

    def __enter__(self) -> KfpStandIn:
        return self.start()

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.stop(check=exc_type is None)

    # test hooks
    def set_state(self, run_id: str, state: str, error: dict | None = None) -> None:
        """Move a run to `state` (a V2beta1RuntimeState), as the persistence agent would; `error` is a
        google.rpc.Status put on the new state_history entry (where the spec says a FAILED run's error goes)."""
        if state not in RUNTIME_STATES:
            raise ValueError(f"{state!r} is not a v2beta1RuntimeState: {RUNTIME_STATES}")
        entry = {"update_time": _now(), "state": state, **({"error": error} if error else {})}
        if state == "RUNTIME_STATE_UNSPECIFIED":  # the zero enum value is never marshalled
            del entry["state"]
        if error and (problem := jsonschema.exceptions.best_match(STATUS.iter_errors(error))):
            raise ValueError(f"error is not a googleRpcStatus: {problem.message}")
        with self._lock:
            run = self.runs[run_id]
            run["state"] = state
            if "state" not in entry:
                del run["state"]
            run["state_history"].append(entry)
            if state in TERMINAL:
                run["finished_at"] = entry["update_time"]

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._fail += [status] * n

    # request handling
    def _handle(self, method: str, target: str, headers: Any, raw: bytes) -> tuple[int, dict]:
        parts = urllib.parse.urlsplit(target)
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = raw.decode(errors="replace")
        with self._lock:
            self.requests.append((method, parts.path, {k: v[0] if len(v) == 1 else v for k, v in query.items()}, body))
            try:
                if self._fail:
                    status = self._fail.pop(0)
                    raise ApiError(status, f"stand-in: injected failure {status}", invalid=False)
                op, params = self._route(method, parts.path)
                if self.token is not None and headers.get("Authorization") != f"Bearer {self.token}":
                    raise ApiError(401, "Unauthenticated: no valid `Authorization: Bearer <token>` header")
                if op["operationId"] not in self._impl:
                    raise ApiError(501, f"stand-in: {op['operationId']} is in the spec but not implemented here")
                qp = self._query(op, query)
                if any(p["in"] == "body" for p in op["parameters"]):
                    if isinstance(body, str):
                        raise ApiError(400, f"request body is not JSON: {body[:200]!r}")
                    body = {} if body is None else body  # grpc-gateway treats an empty body as an empty message
                    _check(validator(next(p for p in op["parameters"] if p["in"] == "body")["schema"]), body, "request body")
                result = self._impl[op["operationId"]](qp, body, **params)
                problem = jsonschema.exceptions.best_match(validator(op["responses"]["200"]["schema"]).iter_errors(result))
                if problem is not None:
                    self.bugs.append(f"{op['operationId']} response at {problem.json_path}: {problem.message}")
                    raise ApiError(500, f"STAND-IN BUG: {self.bugs[-1]}", invalid=False)
                return 200, result
            except ApiError as e:
                code = HTTP_TO_GRPC.get(e.status, 2)
                payload: dict = {"code": code, "message": e.message}
                if e.detail:  # a KFP UserError also carries its external message as a google.rpc.Status detail
                    payload["details"] = [{"@type": "type.googleapis.com/google.rpc.Status", "code": code, "message": e.detail}]
                if e.invalid:
                    self.invalid.append({"method": method, "path": parts.path, "status": e.status, "message": e.message})
                if not STATUS.is_valid(payload):
                    self.bugs.append(f"error body is not a googleRpcStatus: {payload}")
                return e.status, payload
            except Exception as e:  # a stand-in bug: answer 500 and fail the test at stop()
                self.bugs.append(f"{method} {target}: {e!r}")
                return 500, {"code": 13, "message": f"STAND-IN BUG: {e!r}"}

    def _route(self, method: str, path: str) -> tuple[dict, dict]:
        for _, pattern, ops in self._routes:
            if m := pattern.match(path):
                if method.lower() not in ops:
                    raise ApiError(501, "Method Not Allowed")
                return ops[method.lower()], {k: urllib.parse.unquote(v) for k, v in m.groupdict().items()}
        raise ApiError(404, "Not Found")

    def _query(self, op: dict, query: dict[str, list[str]]) -> dict:
        spec = {p["name"]: p for p in op["parameters"] if p["in"] == "query"}
        out: dict[str, Any] = {}
        for name, values in query.items():
            if name not in spec:
                raise ApiError(400, f"stand-in: query parameter {name!r} is not in the spec (known: {sorted(spec)})")
            if len(values) > 1:
                raise ApiError(400, f"too many values for query parameter {name!r}: {values}")
            value: Any = values[0]
            if spec[name]["type"] == "integer":
                if not re.fullmatch(r"-?\d+", value) or not -2**31 <= int(value) < 2**31:
                    raise ApiError(400, f"query parameter {name!r}: {value!r} is not an int32")
                value = int(value)
            if "enum" in spec[name] and value not in spec[name]["enum"]:
                raise ApiError(400, f"query parameter {name!r}: {value!r} is not one of {spec[name]['enum']}")
            out[name] = value
        return out

    # operations (the stand-in's own output is validated by _handle)
    def _create(self, q: dict, body: dict) -> dict:
        # run.proto: pipeline_version_id (deprecated), pipeline_spec and pipeline_version_reference are a oneof.
        if len([k for k in ("pipeline_version_id", "pipeline_spec", "pipeline_version_reference") if k in body]) > 1:
            raise ApiError(400, "proto: oneof kubeflow.pipelines.backend.api.v2beta1.Run.pipeline_source is already set")
        if "plugins_output" in body:  # server/run_server.go CreateRun: util.NewBadRequestError -> codes.Aborted
            raise ApiError(409, "BadRequestError: plugins_output is server-owned", detail="plugins_output is server-owned "
                           "and populated exclusively via plugin lifecycle hooks")
        # server/api_converter.go toModelRun wraps the empty-name error in NewInternalServerError: HTTP 500, code 13.
        if not body.get("display_name"):
            raise ApiError(500, "Failed to create a new run: InternalServerError: Failed to convert a API run detail to its "
                           "internal representation: Invalid input error: Run name cannot be empty", detail="Internal Server Error")
        # resource/resource_manager.go fetchTemplateFromPipelineSpec: no pipeline_version_reference ids and no
        # pipeline_spec -> "empty pipeline spec manifest", also wrapped as InternalServerError. toModelRun ignores
        # the deprecated top-level pipeline_version_id, so it alone is no pipeline source either.
        ref = body.get("pipeline_version_reference") or {}
        if not (ref.get("pipeline_id") or ref.get("pipeline_version_id") or body.get("pipeline_spec")):
            raise ApiError(500, "Failed to create a new run: InternalServerError: Failed to create a run due to error fetching "
                           "manifest: Invalid input error: Failed to fetch a template with an empty pipeline spec manifest",
                           detail="Internal Server Error")
        run_id = body.get("run_id") or str(uuid.uuid4())  # toModelRun keeps a client-supplied run_id
        if run_id in self.runs:
            raise ApiError(409, f"stand-in: run {run_id} already exists")
        now = _now()
        run = {"run_id": run_id, "experiment_id": body.get("experiment_id") or self.default_experiment_id,
               "display_name": body["display_name"], "storage_state": "AVAILABLE", "created_at": now,
               "scheduled_at": now, "finished_at": EPOCH, "state": "PENDING",
               "state_history": [{"update_time": now, "state": "PENDING"}]}
        run.update({k: body[k] for k in ("description", "service_account", "recurring_run_id", "plugins_input") if body.get(k)})
        if config := {k: v for k, v in (body.get("runtime_config") or {}).items() if v}:
            run["runtime_config"] = config  # toApiRun drops a runtime_config with no parameters and no pipeline_root
        if ref:  # the server resolves a missing version to the pipeline's latest; the stand-in invents a stable id
            version = ref.get("pipeline_version_id") or str(uuid.uuid5(uuid.NAMESPACE_URL, "latest/" + ref["pipeline_id"]))
            run["pipeline_version_reference"] = {**({"pipeline_id": ref["pipeline_id"]} if ref.get("pipeline_id") else {}),
                                                 "pipeline_version_id": version}
        else:
            run["pipeline_spec"] = body["pipeline_spec"]
        self.runs[run_id] = run
        return copy.deepcopy(run)

    def _get(self, q: dict, body: Any, run_id: str) -> dict:
        if run_id not in self.runs:
            raise ApiError(404, f"Failed to get a run: Failed to fetch run {run_id}: ResourceNotFoundError: Run {run_id} not found",
                           invalid=False, detail=f"Run {run_id} not found")
        return copy.deepcopy(self.runs[run_id])

    def _list(self, q: dict, body: Any) -> dict:
        if q.get("page_size", 0) < 0:  # list/list.go validatePageSize: 0 -> 20, above 200 -> 200
            raise ApiError(400, f"The page size should be greater than 0. Got {q['page_size']}")
        size = min(q.get("page_size") or 20, 200)
        sort_by, raw_filter, offset = q.get("sort_by", ""), q.get("filter", ""), 0
        if q.get("page_token"):
            try:
                token = json.loads(base64.b64decode(q["page_token"], validate=True))
                given, (sort_by, raw_filter, offset) = (sort_by, raw_filter), (token["sort_by"], token["filter"], int(token["offset"]))
            except (ValueError, KeyError, TypeError):
                raise ApiError(400, "Invalid page token") from None
            if any(given) and given != (sort_by, raw_filter):
                raise ApiError(400, "page token does not match the supplied sort by and/or filtering criteria")
        predicates = self._predicates(raw_filter)
        words = sort_by.lower().split()
        if len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise ApiError(400, f"Received invalid sort by format {sort_by!r}")
        key = words[0] if words else "created_at"
        if key.startswith("metric:"):
            raise ApiError(501, "stand-in: sorting on run metrics is not implemented")
        if key not in RUN_KEYS:
            raise ApiError(400, f"Invalid sorting field: {key!r} on listable type Run")
        runs = [r for r in self.runs.values() if q.get("experiment_id") in ("", None, r["experiment_id"])
                and all(COMPARE[op](self._field(r, k), v) for k, op, v in predicates)]
        runs.sort(key=lambda r: (self._field(r, key), r["run_id"]), reverse=words[1:] == ["desc"])
        page, more = runs[offset:offset + size], len(runs) > offset + size
        token = base64.b64encode(json.dumps({"sort_by": sort_by, "filter": raw_filter, "offset": offset + size}).encode())
        out = {"runs": copy.deepcopy(page), "total_size": len(runs), "next_page_token": token.decode() if more else ""}
        return {k: v for k, v in out.items() if v}  # EmitUnpopulated=false

    def _predicates(self, raw: str) -> list[tuple[str, str, Any]]:
        if not raw:
            return []
        if re.search(r"%(?![0-9A-Fa-f]{2})", raw):  # Go url.QueryUnescape refuses a bad escape
            raise ApiError(400, f"failed to parse valid filter from {raw!r}: invalid URL escape")
        text = urllib.parse.unquote_plus(raw)  # the second decode: '+' becomes ' ', '%2B' becomes '+'
        for camel in ("intValue", "longValue", "stringValue", "timestampValue", "intValues", "longValues", "stringValues"):
            text = text.replace(f'"{camel}":', '"' + re.sub(r"([A-Z])", lambda m: "_" + m[1].lower(), camel) + '":')
        try:
            parsed = json.loads(text)
        except ValueError as e:
            raise ApiError(400, f"failed to parse valid filter from {raw!r}: {e}") from None
        _check(FILTER, parsed, "filter")
        out = []
        for p in parsed.get("predicates", []):
            values = [k for k in VALUES if k in p]
            op = p.get("operation", "OPERATION_UNSPECIFIED")
            if len(values) != 1 or op == "OPERATION_UNSPECIFIED" or not p.get("key"):
                raise ApiError(400, f"invalid predicate {p}: needs a key, an operation and exactly one value")
            if p["key"] not in RUN_KEYS:
                raise ApiError(400, f"no support for filtering on unrecognized field {p['key']!r}")
            value = p[values[0]]
            value = value["values"] if isinstance(value, dict) else value
            if (op == "IN") != isinstance(value, list) or (op == "IS_SUBSTRING" and not isinstance(value, str)):
                raise ApiError(400, f"cannot use operator {op} with {values[0]}")
            if p["key"] in TIME_KEYS and op != "IS_SUBSTRING" and values[0] != "string_value":
                value = [int(v) for v in value] if isinstance(value, list) else \
                    _seconds(value) if values[0] == "timestamp_value" else int(value)
            elif p["key"] in TIME_KEYS or p["key"] not in STR_KEYS or op not in ("EQUALS", "NOT_EQUALS", "IN", "IS_SUBSTRING"):
                raise ApiError(501, f"stand-in: filtering on {p['key']!r} with {op} is not implemented")
            out.append((p["key"], op, value))
        return out

    @staticmethod
    def _field(run: dict, key: str) -> Any:
        if key in TIME_KEYS:
            return _seconds(run[key])
        if key not in STR_KEYS:
            raise ApiError(501, f"stand-in: sorting on {key!r} is not implemented")
        return run.get(STR_KEYS[key], "")
