"""The FastAPI app: OpenAI-compatible routes in front of the single engine worker.

Routes only translate: validate and render the request (:mod:`kvlab.server.settings`), submit a
job (429 when the queue is full), then either stream the worker's deltas as server-sent events or
wait for the whole answer. Both paths poll for a client disconnect and cancel the job, so an
abandoned request frees the engine at its next decoding step.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kvlab import __version__
from kvlab.errors import KvlabError
from kvlab.models.loading import LoadedModel
from kvlab.server import responses
from kvlab.server.context_cache import ContextCache
from kvlab.server.errors import APIError, from_kvlab_error, install_handlers, internal_error
from kvlab.server.protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from kvlab.server.settings import Prepared, ServerSettings, prepare_chat, prepare_completion
from kvlab.server.worker import Cancelled, Channel, Delta, Done, EngineWorker, Event, Failed, Job, QueueFull

DISCONNECT_POLL_SECONDS = 0.25
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text} for code, text in {
        400: "malformed request, unknown method or budget, prompt too long",
        401: "missing or wrong API key (when the server has --api-key)",
        404: "unknown model", 429: "the request queue is full; retry later",
    }.items()
}


def create_app(loaded: LoadedModel, settings: ServerSettings) -> FastAPI:
    """The app serving ``loaded``; the engine worker runs while the app's lifespan does."""
    contexts = ContextCache(settings.context_cache_bytes)
    worker = EngineWorker(loaded, settings.model_id, contexts, settings.max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        yield
        worker.stop()

    app = FastAPI(
        title="kvlab serve", version=__version__, lifespan=lifespan,
        description=f"OpenAI-compatible API for {settings.model_id} under a KV-cache budget "
        f"(default method {settings.method.describe()}, budget {settings.budget}). Per request: "
        '`"kvlab": {"method", "budget", "chunk_size", "context", "reuse"}`.',
    )
    app.state.worker, app.state.contexts, app.state.settings = worker, contexts, settings
    install_handlers(app)
    auth = [Depends(_api_key_checker(settings.api_key))]

    @app.get("/health", summary="liveness, queue and context-cache state")
    async def health() -> JSONResponse:
        body = {"status": "ok" if worker.alive else "engine worker stopped", "model": settings.model_id,
                "method": settings.method.describe(), "budget": str(settings.budget),
                "worker": worker.describe(), "context_cache": contexts.stats().to_dict()}
        return JSONResponse(body, status_code=200 if worker.alive else 503)

    def card() -> ModelCard:
        return ModelCard(id=settings.model_id, created=responses.now(), max_model_len=loaded.spec.max_positions,
                         kvlab={"method": settings.method.describe(), "budget": str(settings.budget),
                                "chunk_size": settings.chunk_size})

    @app.get("/v1/models", dependencies=auth, response_model=ModelList, responses=ERRORS)
    async def list_models() -> ModelList:
        return ModelList(data=[card()])

    @app.get("/v1/models/{model}", dependencies=auth, response_model=ModelCard, responses=ERRORS)
    async def get_model(model: str) -> ModelCard:
        if not settings.serves(model):
            raise APIError(404, f"the model '{model}' does not exist here: this server serves "
                           f"'{settings.model_id}'", param="model", code="model_not_found")
        return card()

    @app.post("/v1/chat/completions", dependencies=auth, response_model=ChatCompletion, responses=ERRORS,
              summary="chat completion (stream=true: server-sent chat.completion.chunk events)")
    async def chat_completions(req: ChatCompletionRequest, request: Request) -> Response:
        prepared = _submit(worker, lambda channel: prepare_chat(loaded, settings, req, channel))
        return await _respond(request, prepared, chat=True, stream=req.stream,
                              include_usage=bool(req.stream_options and req.stream_options.include_usage),
                              model=settings.model_id)

    @app.post("/v1/completions", dependencies=auth, response_model=Completion, responses=ERRORS,
              summary="text completion (stream=true: server-sent text_completion events)")
    async def completions(req: CompletionRequest, request: Request) -> Response:
        prepared = _submit(worker, lambda channel: prepare_completion(loaded, settings, req, channel))
        return await _respond(request, prepared, chat=False, stream=req.stream,
                              include_usage=bool(req.stream_options and req.stream_options.include_usage),
                              model=settings.model_id)

    return app


def _api_key_checker(key: str | None) -> Callable[..., None]:
    bearer = HTTPBearer(auto_error=False, description="the server's --api-key, when it has one")

    def check(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if key is None:
            return
        if credentials is None:
            raise APIError(401, "missing API key: send the header 'Authorization: Bearer <key>' with the key "
                           "given to kvlab serve --api-key (the openai client's api_key)", code="invalid_api_key")
        if not hmac.compare_digest(credentials.credentials.encode(), key.encode()):
            raise APIError(401, "incorrect API key: use the key given to kvlab serve --api-key",
                           code="invalid_api_key")

    return check


def _submit(worker: EngineWorker, prepare: Callable[[Channel], Prepared]) -> Prepared:
    prepared = prepare(Channel(asyncio.get_running_loop()))
    try:
        worker.submit(prepared.job)
    except QueueFull as exc:
        raise APIError(429, f"the server is busy: {exc}; retry later", type="rate_limit_error",
                       code="queue_full", headers={"Retry-After": "1"}) from None
    return prepared


async def _respond(request: Request, prepared: Prepared, *, chat: bool, stream: bool, include_usage: bool,
                   model: str) -> Response:
    job = prepared.job
    if stream:
        maker = responses.ChunkMaker(chat, model, include_usage)
        return StreamingResponse(_stream(request, prepared, maker), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    try:
        async for event in _events(request, job):
            if isinstance(event, Done):
                build = responses.chat_completion if chat else responses.completion
                rid = responses.new_id("chatcmpl" if chat else "cmpl")
                return JSONResponse(build(rid, model, event, prepared.prompt).model_dump(mode="json"))
            if isinstance(event, Failed):
                raise _error_for(event.error)
    finally:
        job.cancel()  # no-op once finished; frees the worker if this task was cancelled
    return APIError(499, "client closed the request", code="client_closed").response()


async def _stream(request: Request, prepared: Prepared, maker: responses.ChunkMaker) -> AsyncIterator[str]:
    try:
        first = maker.first()
        if first:
            yield first
        async for event in _events(request, prepared.job):
            if isinstance(event, Delta):
                yield maker.delta(event.text)
            elif isinstance(event, Done):
                for chunk in maker.last(event, prepared.prompt):
                    yield chunk
            else:
                yield responses.sse(_error_for(event.error).body())
                yield "data: [DONE]\n\n"
    finally:
        prepared.job.cancel()  # client gone (the generator was closed) or finished: either way, stop


async def _events(request: Request, job: Job) -> AsyncIterator[Event]:
    """The job's events until Done/Failed; stops (cancelling the job) when the client disconnects.

    The disconnect check runs at least every ``DISCONNECT_POLL_SECONDS``, also while deltas flow.
    """
    loop = asyncio.get_running_loop()
    getter: asyncio.Task | None = None
    checked = loop.time()
    try:
        while True:
            if getter is None:
                getter = asyncio.ensure_future(job.channel.queue.get())
            finished, _ = await asyncio.wait({getter}, timeout=DISCONNECT_POLL_SECONDS)
            if loop.time() - checked >= DISCONNECT_POLL_SECONDS:
                checked = loop.time()
                if await request.is_disconnected():
                    job.cancel()
                    return
            if not finished:
                continue
            event, getter = getter.result(), None
            yield event
            if isinstance(event, (Done, Failed)):
                return
    finally:
        if getter is not None:
            getter.cancel()


def _error_for(exc: BaseException) -> APIError:
    if isinstance(exc, KvlabError):
        return from_kvlab_error(exc)
    if isinstance(exc, Cancelled):
        return APIError(503, "the server is shutting down", type="server_error", code="shutting_down")
    return internal_error(exc)
