"""The REST detection API's request and response bodies, shared by the server (signaling) and its clients.

``signaling/openapi.py`` builds the OpenAPI document from these models, so the document, the server and
``lookout batch`` can never disagree about a field.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from wire.messages import Detection
from wire.names import MODEL_NAME_PATTERN

API_PREFIX = "/api/v1"
DETECT_PATH = f"{API_PREFIX}/detect"
OPENAPI_PATH = f"{API_PREFIX}/openapi.json"
API_KEY_HEADER = "X-API-Key"
API_KEY_QUERY = "key"

MAX_ID_LENGTH = 256

IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png")


class DetectJsonRequest(BaseModel):
    """``POST /api/v1/detect`` with ``Content-Type: application/json``."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(
        default=None,
        max_length=MAX_ID_LENGTH,
        description="Caller's id, echoed in the response; default: a UUID.",
    )
    image: str = Field(description="The JPEG or PNG file, base64-encoded (a data: URL prefix is accepted).")
    model: str | None = Field(
        default=None,
        pattern=MODEL_NAME_PATTERN,
        description="Model name; default: the server's default model.",
    )


class RestTimings(BaseModel):
    """Where a REST request's time went, in milliseconds."""

    queue_ms: float = Field(description="Waiting on the model's frame stream for a worker.")
    decode_ms: float = Field(description="Image decoding at the worker.")
    preprocess_ms: float = Field(description="Letterbox and tensor layout at the worker.")
    inference_ms: float = Field(description="The model run at the worker.")
    postprocess_ms: float = Field(description="Head decode, NMS and box scaling at the worker.")
    transfer_ms: float = Field(
        description="The rest of total_ms: body parsing, Redis round trips and delivery of the result."
    )
    total_ms: float = Field(
        description="From the request arriving at the server to the response being ready."
    )


class DetectResponse(BaseModel):
    """The detections for one image (HTTP 200)."""

    id: str = Field(description="The request's id (the caller's, or a generated UUID).")
    model: str = Field(description="Model name.")
    model_version: str = Field(description="Version of the model that produced the detections.")
    worker: str = Field(description="Id of the worker that served the request.")
    width: int = Field(description="Width of the image the boxes refer to, in pixels.")
    height: int = Field(description="Height of the image the boxes refer to, in pixels.")
    detections: list[Detection] = Field(description="What was found, best first.")
    timings: RestTimings = Field(description="Where the time went.")


class ErrorDetail(BaseModel):
    """What went wrong, for people (message) and programs (code)."""

    code: str = Field(description="Stable machine-readable error code, e.g. body_too_large or no_worker.")
    message: str = Field(description="One line saying what was wrong and how to fix it.")


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx of the REST API has this body."""

    error: ErrorDetail
