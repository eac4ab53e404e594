"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` with the right status.

Routes raise :class:`APIError`; :func:`install_handlers` maps it, kvlab's user errors, request
validation errors (malformed JSON or fields -> 400, as the OpenAI API answers) and unknown routes
to that shape. Anything else is a bug: 500 with a generic message, the traceback in the log.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kvlab.errors import KvlabError, PromptTooLongError, UnknownNameError

log = logging.getLogger("kvlab.server")


class APIError(Exception):
    """An error to return to the client as an OpenAI error object."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_kvlab_error(exc: KvlabError, param: str | None = None) -> APIError:
    """A user mistake caught by kvlab's core (unknown method, bad budget, prompt too long ...) -> 400."""
    if isinstance(exc, PromptTooLongError):
        return APIError(400, str(exc), param="messages" if param is None else param, code="context_length_exceeded")
    if isinstance(exc, UnknownNameError):
        return APIError(400, str(exc), param=param, code=f"unknown_{exc.kind}".replace(" ", "_"))
    return APIError(400, str(exc), param=param)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def install_handlers(app: FastAPI) -> None:
    """Make every error the app returns an OpenAI error object."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(KvlabError)
    async def _kvlab_error(request: Request, exc: KvlabError) -> JSONResponse:
        return from_kvlab_error(exc).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc.errors()).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error"}.get(
            exc.status_code, "invalid_request_error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see GET /docs for the API"
        return APIError(exc.status_code, message, type=kind, headers=getattr(exc, "headers", None)).response()

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return internal_error(exc).response()


def internal_error(exc: BaseException) -> APIError:
    return APIError(500, f"internal server error ({type(exc).__name__}); see the server log", type="server_error")


def validation_error(errors: list[dict[str, Any]]) -> APIError:
    """The first pydantic/JSON error as a 400 naming the offending field."""
    if not errors:
        return bad_request("invalid request")
    first = max(errors, key=lambda e: len(e.get("loc", ())))  # the deepest is the most specific
    loc = [str(p) for p in first.get("loc", ()) if p != "body" and not _is_union_tag(p)]
    if first.get("type") == "json_invalid":
        return bad_request(f"the request body is not valid JSON: {first.get('msg', '')}", code="invalid_json")
    if not loc and first.get("type") in ("missing", "model_attributes_type", "dict_type"):
        return bad_request("the request body must be a JSON object", code="invalid_json")
    param = ".".join(loc) or None
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return bad_request(f"{param}: {message}{more}" if param else message + more, param=param)


def _is_union_tag(part: Any) -> bool:
    """pydantic names the union member tried (``str``, ``list[TextPart]``) in an error's location."""
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool", "none"))
