"""The HTTP routes: KServe V1, the Open Inference Protocol (V2), feedback, health and /metrics.

Handlers are thin: parse the request (serving.payload), ask the :class:`ModelService`
(serving.service) and answer JSON. The middleware gives every response a request id and the
model's version and track headers, and turns every failure into a JSON error whose reason is
counted (contract.reasons). See docs/serving.md for the protocol.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from modelwarden import __version__
from modelwarden.contract.reasons import ErrorReason
from modelwarden.serving.payload import (
    PayloadError,
    RejectedValue,
    parse_feedback,
    parse_json,
    parse_v1,
)
from modelwarden.serving.service import ModelError, ModelService
from modelwarden.serving.v2 import parse_v2

REQUEST_ID_HEADER = "X-Request-Id"
FEEDBACK_TOKEN_HEADER = "X-Modelwarden-Feedback-Token"
MAX_TOKEN_HEADER_BYTES = 4096
_VALID_REQUEST_ID = re.compile(r"^[\w.:@/+=-]{1,128}$")
log = logging.getLogger(__name__)


# aiohttp's own refusals (no such route, wrong method): client errors, not prediction errors.
_ROUTER_REASONS = {404: ErrorReason.ROUTE_NOT_FOUND, 405: ErrorReason.METHOD_NOT_ALLOWED}

SERVICE = web.AppKey("service", ModelService)
REQUEST_ID = web.RequestKey("request_id", str)
REQUEST_ID_GIVEN = web.RequestKey("request_id_given", bool)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, separators=(",", ":")), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


@web.middleware
async def _request_context(request: web.Request, handler: Any) -> web.StreamResponse:
    """Request id and model headers on every response; every failure becomes a JSON error."""
    service = request.app[SERVICE]
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request[REQUEST_ID_GIVEN] = bool(_VALID_REQUEST_ID.match(incoming))
    request[REQUEST_ID] = incoming if request[REQUEST_ID_GIVEN] else uuid.uuid4().hex
    try:
        response = await handler(request)
    except (PayloadError, ModelError) as exc:
        if isinstance(exc, RejectedValue):
            service.monitor.record_rejected_value(exc.input, exc.reason)
        service.monitor.record_error(exc.reason, exc.status)
        response = _error(exc.status, exc.message)
    except web.HTTPRequestEntityTooLarge:
        service.monitor.record_error(ErrorReason.BODY_TOO_LARGE, 413)
        response = _error(
            413, f"request body exceeds the {service.config.max_body_bytes}-byte limit (--max-body-bytes)"
        )
    except web.HTTPException as exc:
        service.monitor.record_error(_ROUTER_REASONS.get(exc.status, ErrorReason.INVALID_PAYLOAD if exc.status < 500
                                                         else ErrorReason.INTERNAL_ERROR), exc.status)
        response = _error(exc.status, f"{exc.reason}: {request.method} {request.path}")
    except Exception:  # noqa: BLE001 - a bug must cost one request, not the server
        log.exception("request %s failed", request[REQUEST_ID])
        service.monitor.record_error(ErrorReason.INTERNAL_ERROR, 500)
        response = _error(500, f"internal error (request id {request[REQUEST_ID]}); see the server log")
    response.headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
    response.headers.update(service.headers)
    return response


def _check_model_name(request: web.Request) -> ModelService:
    service = request.app[SERVICE]
    name = request.match_info["name"]
    if name != service.config.name:
        raise PayloadError(
            ErrorReason.UNKNOWN_MODEL, f"unknown model {name!r}; this server serves {service.config.name!r}",
            status=404,
        )
    return service


async def _read_json(request: web.Request, service: ModelService) -> Any:
    limit = service.config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadError(
            ErrorReason.BODY_TOO_LARGE,
            f"request body of {request.content_length} bytes exceeds the {limit}-byte limit",
            status=413,
        )
    return parse_json(await request.read())


async def v1_predict(request: web.Request) -> web.Response:
    started = time.perf_counter()
    service = _check_model_name(request)
    rows = parse_v1(await _read_json(request, service), service.schema)
    outputs = await service.predict(rows)
    predicted = service.record(request[REQUEST_ID], rows, outputs, started)
    service.score_paired(rows, outputs)
    token = service.token(predicted)
    if token is None:
        return _json({"predictions": predicted})
    return _with_token(_json({"predictions": predicted, "feedbackToken": token}), token)


async def v2_infer(request: web.Request) -> web.Response:
    started = time.perf_counter()
    service = _check_model_name(request)
    doc = await _read_json(request, service)
    rows = parse_v2(doc, service.schema)
    if not request[REQUEST_ID_GIVEN] and isinstance(doc.get("id"), str) and _VALID_REQUEST_ID.match(doc["id"]):
        request[REQUEST_ID] = doc["id"]
    outputs = await service.predict(rows)
    predicted = service.record(request[REQUEST_ID], rows, outputs, started)
    service.score_paired(rows, outputs)
    tensors = [{"name": "predict", "datatype": service.output_datatype, "shape": [len(predicted)], "data": predicted}]
    if outputs.scores is not None:
        tensors.append(
            {"name": "score", "datatype": "FP64", "shape": [len(predicted)], "data": outputs.scores.tolist()}
        )
    answer: dict[str, Any] = {
        "model_name": service.config.name,
        "model_version": service.config.version,
        "id": request[REQUEST_ID],
        "outputs": tensors,
    }
    token = service.token(predicted)
    if token is None:
        return _json(answer)
    return _with_token(_json({**answer, "parameters": {"feedbackToken": token}}), token)


def _with_token(response: web.Response, token: str) -> web.Response:
    """The token in a header too, unless it is too long for common proxies and clients (8 KiB header
    limits): a large batch's token is only in the body."""
    if len(token) <= MAX_TOKEN_HEADER_BYTES:
        response.headers[FEEDBACK_TOKEN_HEADER] = token
    return response


async def feedback(request: web.Request) -> web.Response:
    service = _check_model_name(request)
    items = parse_feedback(
        await _read_json(request, service), service.runner.task, service.classes, service.schema.value_limits
    )
    pairs = service.resolve_feedback(items)
    for (version, track), (predicted, actual) in pairs.items():
        service.monitor.record_feedback(predicted, actual, version=version, track=track)
    return _json({"accepted": sum(len(predicted) for predicted, _ in pairs.values())})


async def v1_model(request: web.Request) -> web.Response:
    if request.match_info["name"].endswith(":predict"):  # GET on the predict route matches this one's {name}
        raise web.HTTPMethodNotAllowed(request.method, ["POST"])
    service = _check_model_name(request)
    return _json({"name": service.config.name, "ready": True})


async def v2_model(request: web.Request) -> web.Response:
    service = _check_model_name(request)
    inputs = [
        {
            "name": name,
            "datatype": "BYTES" if i in service.schema.categorical and service.schema.text_input else "FP64",
            "shape": [-1],
        }
        for i, name in enumerate(service.schema.names)
    ]
    outputs = [{"name": "predict", "datatype": service.output_datatype, "shape": [-1]}]
    if service.runner.has_scores:
        outputs.append({"name": "score", "datatype": "FP64", "shape": [-1]})
    return _json(
        {
            "name": service.config.name,
            "versions": [service.config.version],
            "platform": "sklearn",
            "inputs": inputs,
            "outputs": outputs,
            "parameters": {
                "track": service.config.track,
                "task": service.runner.task,
                "classes": service.classes,
                # "missing": served without a reference profile, so no drift metrics (docs/serving.md)
                "profile": "loaded" if service.profile is not None else "missing",
                "matrix_input": {"name": "input", "datatype": "FP64", "shape": [-1, service.schema.width]},
            },
        }
    )


async def v2_model_ready(request: web.Request) -> web.Response:
    _check_model_name(request)
    return _json({"name": request.match_info["name"], "ready": True})


async def live(request: web.Request) -> web.Response:
    return _json({"live": True})


async def ready(request: web.Request) -> web.Response:
    return _json({"ready": True})


async def server_metadata(request: web.Request) -> web.Response:
    return _json({"name": "modelwarden", "version": __version__, "extensions": []})


async def metrics(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    if not service.config.metrics:
        return _error(404, "metrics are disabled (--no-metrics)")
    return web.Response(body=generate_latest(service.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(service: ModelService) -> web.Application:
    # Bodies are read whole; aiohttp enforces the limit (+1 so our own check names it first).
    app = web.Application(middlewares=[_request_context], client_max_size=service.config.max_body_bytes + 1)
    app[SERVICE] = service
    app.router.add_post("/v1/models/{name}:predict", v1_predict)
    app.router.add_get("/v1/models/{name}", v1_model)
    app.router.add_post("/v1/models/{name}/feedback", feedback)
    app.router.add_get("/v2", server_metadata)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2/models/{name}", v2_model)
    app.router.add_get("/v2/models/{name}/ready", v2_model_ready)
    app.router.add_post("/v2/models/{name}/infer", v2_infer)
    app.router.add_post("/v2/models/{name}/feedback", feedback)
    app.router.add_get("/metrics", metrics)

    async def _close(app: web.Application) -> None:
        service.close()

    app.on_cleanup.append(_close)
    return app

