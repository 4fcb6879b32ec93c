"""The one error type of the REST API: an HTTP status plus a JSON ``{"error": {"code", "message"}}`` body."""

from __future__ import annotations

from aiohttp import web

from wire.rest import ErrorDetail, ErrorResponse


class RestError(Exception):
    """A request the API refuses or cannot serve; becomes a JSON error response, never a traceback."""

    def __init__(self, status: int, code: str, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.close = close
        """Close the connection after the response (its request was not read to the end)."""

    def response(self) -> web.Response:
        response = error_response(self.status, self.code, self.message)
        if self.close:
            response.force_close()
        return response


def error_response(status: int, code: str, message: str) -> web.Response:
    body = ErrorResponse(error=ErrorDetail(code=code, message=message))
    return web.Response(status=status, text=body.model_dump_json(), content_type="application/json")
