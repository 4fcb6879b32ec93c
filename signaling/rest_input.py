"""The three encodings of ``POST /api/v1/detect``, read into one Upload with the body size capped.

JSON ``{"id", "image": <base64>, "model"}``, multipart/form-data (field ``image``, optional ``id`` and
``model``) and raw ``image/jpeg`` / ``image/png`` bodies (``?id=&model=``). Bodies are read straight from
the request stream, chunk by chunk, so the cap is ``max_body_bytes`` whatever the app's
``client_max_size`` says, and nothing past the cap is ever buffered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass

from aiohttp import BodyPartReader, MultipartReader, StreamReader, web
from pydantic import ValidationError

from signaling.rest_errors import RestError
from wire import bounded_json
from wire.names import MODEL_NAME_RULE, is_model_name
from wire.rest import IMAGE_MEDIA_TYPES, MAX_ID_LENGTH, DetectJsonRequest

CHUNK = 64 * 1024
MAX_PARTS = 16
MEDIA_TYPES = ("application/json", "multipart/form-data", *IMAGE_MEDIA_TYPES)


@dataclass(frozen=True)
class Upload:
    """One detect request, whatever its encoding."""

    id: str | None
    model: str | None
    image: bytes


def body_too_large(size: int | str, limit: int) -> RestError:
    return RestError(413, "body_too_large", f"the request body is {size} bytes; at most {limit} are accepted")


class _Budget:
    """Counts bytes read across the whole body and refuses to go past the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise body_too_large(f"more than {self.limit}", self.limit)


async def _read_stream(stream: StreamReader, budget: _Budget) -> bytes:
    chunks: list[bytes] = []
    async for chunk in stream.iter_chunked(CHUNK):
        budget.take(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_part(part: BodyPartReader, budget: _Budget) -> bytes:
    chunks: list[bytes] = []
    while chunk := await part.read_chunk(CHUNK):
        budget.take(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


def checked_id(value: str | None) -> str | None:
    if value is not None and len(value) > MAX_ID_LENGTH:
        raise RestError(422, "invalid_id", f"the id is {len(value)} characters long; at most {MAX_ID_LENGTH}")
    return value or None


def checked_model(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    if not is_model_name(value):
        raise RestError(422, "invalid_model", f"the model name must be {MODEL_NAME_RULE}")
    return value


def decode_base64(text: str) -> bytes:
    """The image of a JSON body: plain base64, or a ``data:image/...;base64,`` URL."""
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:  # wrapped base64 (MIME line breaks) is common; accept whitespace, nothing else
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RestError(422, "invalid_base64", f"'image' is not valid base64: {exc}") from exc


def _json_upload(body: bytes) -> Upload:
    try:
        data = bounded_json.loads(body)
    except bounded_json.JsonTooDeepError as exc:
        raise RestError(400, "json_too_deep", f"the body is refused: {exc}") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise RestError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RestError(422, "invalid_request", 'the JSON body must be an object: {"id", "image", "model"}')
    try:
        request = DetectJsonRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise RestError(422, "invalid_request", f"{where}: {first['msg']}") from exc
    return Upload(
        id=checked_id(request.id), model=checked_model(request.model), image=decode_base64(request.image)
    )


async def _multipart_upload(request: web.Request, budget: _Budget) -> Upload:
    fields: dict[str, bytes] = {}
    try:
        reader = await request.multipart()
        for _ in range(MAX_PARTS):
            part = await reader.next()
            if part is None:
                break
            if isinstance(part, MultipartReader):
                raise RestError(422, "invalid_multipart", "nested multipart bodies are not accepted")
            data = await _read_part(part, budget)
            if part.name in ("image", "id", "model") and part.name not in fields:
                fields[part.name] = data
        else:
            raise RestError(422, "invalid_multipart", f"the form has more than {MAX_PARTS} parts")
    except RestError:
        raise
    except Exception as exc:  # aiohttp raises ValueError, AssertionError, ... on a broken form
        raise RestError(400, "invalid_multipart", f"the multipart body does not parse: {exc}") from exc
    if "image" not in fields:
        raise RestError(422, "missing_image", "the form has no 'image' field (the JPEG or PNG file)")

    def text(name: str) -> str | None:
        raw = fields.get(name)
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RestError(422, f"invalid_{name}", f"the form field {name!r} is not UTF-8 text") from exc

    return Upload(id=checked_id(text("id")), model=checked_model(text("model")), image=fields["image"])


def body_timeout(timeout_s: float) -> RestError:
    # Closed: the rest of the body may still trickle in, and the connection is not worth keeping.
    return RestError(
        408, "body_timeout", f"the request body did not arrive within {timeout_s:g} s", close=True
    )


async def read_upload(request: web.Request, max_body_bytes: int, timeout_s: float) -> Upload:
    """Read and check the request body in whichever of the three encodings it comes; raises RestError.

    The body must arrive within ``timeout_s`` (a client that declares more than it sends gets 408).
    """
    declared = request.content_length
    if declared is not None and declared > max_body_bytes:
        raise body_too_large(declared, max_body_bytes)
    media_type = request.content_type  # aiohttp lower-cases it and drops the parameters
    if media_type not in MEDIA_TYPES:
        shown = media_type if request.headers.get("Content-Type") else "none"
        raise RestError(
            415,
            "unsupported_media_type",
            f"Content-Type {shown} is not accepted; send one of {', '.join(MEDIA_TYPES)}",
        )
    budget = _Budget(max_body_bytes)
    try:
        async with asyncio.timeout(timeout_s):
            if media_type == "multipart/form-data":
                return await _multipart_upload(request, budget)
            body = await _read_stream(request.content, budget)
    except TimeoutError:
        raise body_timeout(timeout_s) from None
    if media_type == "application/json":
        return await asyncio.to_thread(_json_upload, body)  # JSON and base64 of megabytes: not on the loop
    return Upload(
        id=checked_id(request.query.get("id")),
        model=checked_model(request.query.get("model")),
        image=body,
    )
