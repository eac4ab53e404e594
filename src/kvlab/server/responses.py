"""Building OpenAI response objects and server-sent events from the worker's events."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from pydantic import BaseModel

from kvlab import __version__
from kvlab.server.prompts import SplitPrompt
from kvlab.server.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatDelta,
    ChatMessageOut,
    Completion,
    CompletionChoice,
    KvlabInfo,
    Usage,
)
from kvlab.server.worker import Done

FINGERPRINT = f"kvlab-{__version__}"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def finish_reason(done: Done) -> str:
    reason = done.generation.stats.finish_reason
    return reason if reason in ("stop", "length") else "stop"


def usage(done: Done) -> Usage:
    s = done.generation.stats
    return Usage(prompt_tokens=s.prompt_tokens, completion_tokens=s.new_tokens,
                 total_tokens=s.prompt_tokens + s.new_tokens)


def kvlab_info(done: Done, prompt: SplitPrompt) -> KvlabInfo:
    s = done.generation.stats
    return KvlabInfo(
        method=s.method, budget=s.budget, chunk_size=s.chunk_size, reused=done.reused,
        context_tokens=len(prompt.context_ids), suffix_tokens=len(prompt.suffix_ids), kv_tokens=s.kv_tokens,
        kv_bytes=s.kv_bytes, peak_kv_bytes=s.peak_kv_bytes, full_kv_bytes=s.full_kv_bytes,
        queue_seconds=round(done.queue_seconds, 4), prefill_seconds=round(s.prefill_seconds, 4),
        decode_seconds=round(s.decode_seconds, 4),
    )


def chat_completion(rid: str, model: str, done: Done, prompt: SplitPrompt) -> ChatCompletion:
    return ChatCompletion(
        id=rid, created=now(), model=model, system_fingerprint=FINGERPRINT,
        choices=[ChatChoice(message=ChatMessageOut(content=done.generation.text), finish_reason=finish_reason(done))],
        usage=usage(done), kvlab=kvlab_info(done, prompt),
    )


def completion(rid: str, model: str, done: Done, prompt: SplitPrompt) -> Completion:
    return Completion(
        id=rid, created=now(), model=model, system_fingerprint=FINGERPRINT,
        choices=[CompletionChoice(text=done.generation.text, finish_reason=finish_reason(done))],
        usage=usage(done), kvlab=kvlab_info(done, prompt),
    )


class ChunkMaker:
    """The SSE events of one streamed response (chat or text completion)."""

    def __init__(self, chat: bool, model: str, include_usage: bool):
        self.chat, self.model, self.include_usage = chat, model, include_usage
        self.id, self.created = new_id("chatcmpl" if chat else "cmpl"), now()

    def first(self) -> str | None:
        """Chat streams open with the assistant role; text completions have no opener."""
        if not self.chat:
            return None
        return self._chat([ChatChunkChoice(delta=ChatDelta(role="assistant", content=""))])

    def delta(self, text: str) -> str:
        if self.chat:
            return self._chat([ChatChunkChoice(delta=ChatDelta(content=text))])
        return self._text([CompletionChoice(text=text)])

    def last(self, done: Done, prompt: SplitPrompt) -> list[str]:
        """The chunk with ``finish_reason`` and the ``kvlab`` object, the usage chunk if asked, ``[DONE]``."""
        info, reason = kvlab_info(done, prompt), finish_reason(done)
        if self.chat:
            events = [self._chat([ChatChunkChoice(delta=ChatDelta(), finish_reason=reason)], kvlab=info)]
            if self.include_usage:
                events.append(self._chat([], usage=usage(done)))
        else:
            events = [self._text([CompletionChoice(text="", finish_reason=reason)], kvlab=info)]
            if self.include_usage:
                events.append(self._text([], usage=usage(done)))
        return [*events, "data: [DONE]\n\n"]

    def _chat(self, choices: list[ChatChunkChoice], **extra: Any) -> str:
        return sse(ChatCompletionChunk(id=self.id, created=self.created, model=self.model,
                                       system_fingerprint=FINGERPRINT, choices=choices, **extra))

    def _text(self, choices: list[CompletionChoice], **extra: Any) -> str:
        return sse(Completion(id=self.id, created=self.created, model=self.model, system_fingerprint=FINGERPRINT,
                              choices=choices, **extra))


def sse(payload: BaseModel | dict[str, Any]) -> str:
    """One ``data:`` event; a chunk's ``usage``/``kvlab`` appear only where they are set (the end)."""
    data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
    for key in ("usage", "kvlab"):
        if key in data and data[key] is None:
            del data[key]
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
