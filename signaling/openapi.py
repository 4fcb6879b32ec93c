"""The OpenAPI 3.1 description of the REST API, built from the pydantic models in ``wire.rest``.

Built from code, never written by hand, so it cannot drift from what the server sends; the REST tests
validate every real response against it and fuzz the server from it.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

from wire.names import MODEL_NAME_PATTERN
from wire.rest import (
    API_KEY_HEADER,
    API_KEY_QUERY,
    DETECT_PATH,
    MAX_ID_LENGTH,
    DetectJsonRequest,
    DetectResponse,
    ErrorResponse,
)

REF = "#/components/schemas/{model}"

ERRORS: dict[str, str] = {
    "400": "The body does not parse (invalid JSON or multipart), or its JSON nests too deep (json_too_deep).",
    "401": f"An API key is configured and the {API_KEY_HEADER} header is missing or wrong.",
    "404": "The model is unknown (code unknown_model): no live worker serves it, and it is neither the "
    "default model nor registered.",
    "408": "The body did not arrive within body_read_timeout_s (code body_timeout); the connection closes.",
    "413": "The body, the image bytes or the image dimensions exceed the server's limits.",
    "415": "The Content-Type is none of application/json, multipart/form-data, image/jpeg, image/png.",
    "422": "A field is invalid, or the image is not a decodable JPEG or PNG.",
    "500": "A bug in the server; its log has the details.",
    "503": "No live worker serves the (known) model (code no_worker), or Redis is unavailable: retry later.",
    "504": "No result arrived within the server's timeout (rest_timeout_s).",
}


def _schemas(*models: type[BaseModel]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=REF)
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return found


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI document served at /api/v1/openapi.json."""
    id_schema = {"type": "string", "maxLength": MAX_ID_LENGTH}
    model_schema = {"type": "string", "pattern": MODEL_NAME_PATTERN}
    binary = {"type": "string", "format": "binary"}
    error = {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Lookout detection API",
            "version": "1",
            "description": "Object detection on single images, served by the same workers as live video.",
        },
        "paths": {
            DETECT_PATH: {
                "post": {
                    "operationId": "detect",
                    "summary": "Detect objects in one JPEG or PNG image.",
                    "description": "Send the image as JSON with base64, as a multipart form upload, or as a "
                    "raw image/jpeg or image/png body (then id and model go in the query).",
                    "parameters": [
                        _query("id", "Caller's id for raw image bodies, echoed back.", id_schema),
                        _query("model", "Model name for raw image bodies.", model_schema),
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": REF.format(model="DetectJsonRequest")}},
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["image"],
                                    "properties": {"image": binary, "id": id_schema, "model": model_schema},
                                },
                                "encoding": {"image": {"contentType": "image/jpeg, image/png"}},
                            },
                            "image/jpeg": {"schema": binary},
                            "image/png": {"schema": binary},
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "The detections.",
                            "content": {
                                "application/json": {"schema": {"$ref": REF.format(model="DetectResponse")}}
                            },
                        },
                        **{
                            status: {"description": text, "content": error} for status, text in ERRORS.items()
                        },
                    },
                }
            }
        },
        "components": {
            "schemas": _schemas(DetectJsonRequest, DetectResponse, ErrorResponse),
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
                "ApiKeyQuery": {"type": "apiKey", "in": "query", "name": API_KEY_QUERY},
            },
        },
        # The key is optional: servers started without LOOKOUT_API_KEY accept every request.
        "security": [{}, {"ApiKey": []}, {"ApiKeyQuery": []}],
    }
