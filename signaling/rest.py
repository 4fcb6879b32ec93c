"""The REST detection API: ``POST /api/v1/detect`` and its OpenAPI document at ``/api/v1/openapi.json``.

A request goes through the same workers as the live video path: one FrameClient per app submits the
image to the model's frame stream and awaits its result or drop record. There is no model in signaling.
Every request ends as exactly one response; every accepted image as one result or one counted drop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

from aiohttp import web

from runtime.images import ImageHeader
from runtime.redis import REDIS_DOWN_ERRORS
from signaling.apikey import api_key_ok
from signaling.appkeys import KEYS, REDIS, SETTINGS
from signaling.imageinfo import inspect_image
from signaling.known_models import known_without_worker, unknown_model_message
from signaling.openapi import openapi_document
from signaling.rest_errors import RestError, error_response
from signaling.rest_input import Upload, read_upload
from wire.client import FrameClient
from wire.messages import DropReason, DropRecord, DropSite, ResultMessage, now_ms
from wire.metrics import E2E_LATENCY_SECONDS, FRAMES_IN, REST_REQUESTS
from wire.rest import API_KEY_HEADER, DETECT_PATH, OPENAPI_PATH, DetectResponse, RestTimings

log = logging.getLogger(__name__)

REST_CLIENT = web.AppKey("rest_client", FrameClient)

DROP_STATUS: dict[DropReason, tuple[int, str]] = {
    DropReason.UNDECODABLE: (422, "the worker could not decode the image"),
    DropReason.TOO_LARGE: (413, "the image exceeds the worker's limits"),
    DropReason.MALFORMED: (400, "the worker found the request malformed"),
    DropReason.UNKNOWN_MODEL: (503, "the worker reading this model's stream does not serve it"),
    DropReason.NO_WORKER: (503, "no live worker serves this model"),
    DropReason.SHUTDOWN: (503, "the worker shut down before it could serve the request; retry"),
    DropReason.INFERENCE_ERROR: (503, "the model failed on this image"),
    DropReason.DEADLINE: (504, "no worker reached the image before its deadline"),
    DropReason.TIMEOUT: (504, "no result arrived in time"),
}


def setup_rest(app: web.Application) -> None:
    """Add /api/v1/detect and /api/v1/openapi.json to the signaling app (which sets SETTINGS, REDIS, KEYS)."""
    app.router.add_post(DETECT_PATH, detect)
    app.router.add_get(OPENAPI_PATH, openapi)
    app.cleanup_ctx.append(_frame_client)


async def _frame_client(app: web.Application) -> AsyncIterator[None]:
    client = FrameClient(
        app[REDIS],
        keys=app[KEYS],
        settings=app[SETTINGS],
        session=f"rest-{uuid.uuid4().hex[:12]}",
        site=DropSite.SIGNALING,
    )
    await client.start()
    app[REST_CLIENT] = client
    log.info("REST API ready at %s (session %s)", DETECT_PATH, client.session)
    yield
    await client.close()


def _unauthorized() -> RestError:
    return RestError(401, "unauthorized", f"missing or wrong API key: send it in the {API_KEY_HEADER} header")


async def openapi(request: web.Request) -> web.Response:
    # Behind the key like the API it describes: it names the limits and what the server accepts.
    if not api_key_ok(request, request.app[SETTINGS].api_key):
        return _unauthorized().response()
    return web.json_response(openapi_document())


async def detect(request: web.Request) -> web.Response:
    """Detect objects in one image: JSON+base64, multipart upload or a raw image/jpeg|png body."""
    started = time.perf_counter()
    close = False
    try:
        response = await _detect(request, started, now_ms())
    except RestError as exc:
        response = exc.response()
        close = exc.close
    except REDIS_DOWN_ERRORS as exc:
        log.warning("REST request failed, redis unavailable: %s", exc)
        response = error_response(
            503, "redis_unavailable", "the frame backbone (Redis) is unavailable; retry"
        )
    except Exception:
        log.exception("REST request failed")
        response = error_response(500, "internal_error", "internal error; the server log has the details")
    REST_REQUESTS.labels(status=str(response.status)).inc()
    if close:
        await _send_and_close(request, response)
    return response


async def _send_and_close(request: web.Request, response: web.Response) -> None:
    """Send the response now and drop the connection. Left to aiohttp, a connection whose body was not
    read to the end lingers up to 10 s more, reading whatever the client still trickles in."""
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()  # the transport flushes the response before it closes


async def _detect(request: web.Request, started: float, received_ms: float) -> web.Response:
    settings = request.app[SETTINGS]
    if not api_key_ok(request, settings.api_key):
        raise _unauthorized()
    upload = await read_upload(request, settings.max_body_bytes, settings.body_read_timeout_s)
    model = upload.model or settings.default_model
    # Before the image is looked at: an unknown name must leave no key and no metric series behind.
    served = await request.app[REST_CLIENT].has_worker(model)
    if not served and not await known_without_worker(
        request.app[REDIS], request.app[KEYS], model, default_model=settings.default_model
    ):
        raise RestError(404, "unknown_model", unknown_model_message(model))
    info = await asyncio.to_thread(
        inspect_image, upload.image, max_bytes=settings.max_image_bytes, max_side=settings.max_image_side
    )
    request_id = upload.id or str(uuid.uuid4())
    result = await _infer(request.app, upload, info, model, received_ms, served=served)
    total_ms = (time.perf_counter() - started) * 1000.0
    E2E_LATENCY_SECONDS.labels(model=model, path="rest").observe(total_ms / 1000.0)
    body = _response_body(request_id, result, total_ms)
    return web.Response(text=body.model_dump_json(), content_type="application/json")


async def _infer(
    app: web.Application, upload: Upload, info: ImageHeader, model: str, received_ms: float, *, served: bool
) -> ResultMessage:
    """Send the image to a worker of ``model`` (a model that exists: see signaling.known_models); its
    result, or RestError for the drop it ended as. ``served``: a live worker serves it."""
    settings = app[SETTINGS]
    client = app[REST_CLIENT]
    FRAMES_IN.labels(site="rest", model=model).inc()
    if not served:
        detail = f"no live worker serves model {model!r}; start one with `lookout worker --model {model}`"
        # Published and counted (record, Redis tally, FRAMES_DROPPED) by the client in one go.
        await client.drop(
            client.next_seq(),
            model=model,
            reason=DropReason.NO_WORKER,
            site=DropSite.SIGNALING,
            detail=detail,
        )
        raise RestError(503, "no_worker", detail)
    timeout_s = settings.rest_timeout_s
    # A REST caller waits up to rest_timeout_s, so that is also the frame's deadline: unlike live video,
    # an image that queued behind others is still worth inferring.
    seq, future = await client.submit(
        upload.image,
        model=model,
        width=info.width,
        height=info.height,
        received_ms=received_ms,
        deadline_ms=received_ms + timeout_s * 1000.0,
    )
    outcome = await client.wait(seq, future, model=model, timeout_s=timeout_s)
    if isinstance(outcome, ResultMessage):
        return outcome
    raise _drop_error(outcome)


def _drop_error(drop: DropRecord) -> RestError:
    # Already counted: by the worker that dropped it, or by FrameClient.wait for a timeout.
    status, message = DROP_STATUS.get(drop.reason, (503, "the request was dropped"))
    detail = f": {drop.detail}" if drop.detail else ""
    return RestError(status, drop.reason.value, f"{message}{detail}")


def _response_body(request_id: str, result: ResultMessage, total_ms: float) -> DetectResponse:
    t = result.timings
    worker_ms = t.queue_ms + t.decode_ms + t.preprocess_ms + t.inference_ms + t.postprocess_ms
    return DetectResponse(
        id=request_id,
        model=result.model,
        model_version=result.model_version,
        worker=result.worker,
        width=result.width,
        height=result.height,
        detections=result.detections,
        timings=RestTimings(
            queue_ms=t.queue_ms,
            decode_ms=t.decode_ms,
            preprocess_ms=t.preprocess_ms,
            inference_ms=t.inference_ms,
            postprocess_ms=t.postprocess_ms,
            transfer_ms=max(0.0, total_ms - worker_ms),
            total_ms=total_ms,
        ),
    )
