"""Pydantic models of the OpenAI API subset kvlab serves, plus kvlab's own request/response fields.

Requests accept unknown fields (clients send many optional ones) but reject the known ones whose
meaning kvlab cannot honour (``logprobs``, ``tools``, penalties, ...) instead of silently
ignoring them. ``kvlab`` is kvlab's per-request extension, sent by the ``openai`` client as
``extra_body={"kvlab": {...}}``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class KvlabOptions(BaseModel):
    """Per-request overrides (``extra_body={"kvlab": {...}}``); unset fields use the server's flags."""

    model_config = ConfigDict(extra="forbid")

    method: str | None = Field(None, description="a method name, optionally with parameters: "
                               "'snapkv:window_size=64'")
    budget: str | int | float | None = Field(None, description="'1024' tokens per layer, '25%', '64MiB' or 'full'")
    chunk_size: int | Literal["none"] | None = Field(
        None, description="prefill chunk size in tokens, or 'none' for one pass")
    context: str | None = Field(
        None, description="the shared part to prefill and reuse: the prompt, or one message's content, "
        "must start with this text; what follows it is appended after compression")
    reuse: bool = Field(True, description="look up and store the prefilled context in the server's context cache")

    @field_validator("chunk_size")
    @classmethod
    def _positive_chunk(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("chunk_size must be >= 1, or 'none' for one pass")
        return value


class StreamOptions(BaseModel):
    include_usage: bool = False


# Fields of the OpenAI API that change the output in ways kvlab does not implement, and the value
# that means "not used". A request setting one of them to anything else gets a 400.
UNSUPPORTED: dict[str, Any] = {
    "logprobs": (None, False), "top_logprobs": (None, 0), "echo": (None, False), "best_of": (None, 1),
    "suffix": (None, ""), "tools": (None, []), "functions": (None, []), "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0),
}


class _SamplingRequest(BaseModel):
    """Fields shared by chat and text completion requests."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(None, ge=1,
                                   description="tokens to generate (default: the server's --max-tokens)")
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy (default 1, as OpenAI)")
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, description="must be 1")
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    kvlab: KvlabOptions | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"n={value} is not supported: kvlab serve returns one choice; "
                             "send n separate requests")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if any(not s for s in stops):
            raise ValueError("stop strings must not be empty")
        return stops

    def unsupported_field(self) -> str | None:
        """The first field set that kvlab cannot honour (see ``UNSUPPORTED``), or None."""
        for name, value in (self.model_extra or {}).items():
            if name in UNSUPPORTED and value not in UNSUPPORTED[name]:
                return name
        return None


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""

    def template_role(self) -> str:
        return "system" if self.role == "developer" else self.role


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="newer name of max_tokens; wins over it")

    @property
    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_SamplingRequest):
    prompt: str | list[str] = Field(description="one prompt (a list must hold exactly one string)")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError(f"{len(value)} prompts given: kvlab serve takes one prompt per request")
        return value

    @property
    def prompt_text(self) -> str:
        return self.prompt[0] if isinstance(self.prompt, list) else self.prompt

    @property
    def requested_tokens(self) -> int | None:
        return self.max_tokens


# --- responses --------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class KvlabInfo(BaseModel):
    """What kvlab applied to a request and what it measured (bytes are keys + values)."""

    method: str
    budget: str
    chunk_size: int | None
    reused: bool = Field(description="the prefilled context came from the context cache")
    context_tokens: int = Field(description="tokens prefilled and compressed (the reusable part)")
    suffix_tokens: int = Field(description="tokens appended after compression (question, template tail)")
    kv_tokens: float = Field(description="tokens held per layer when decoding started")
    kv_bytes: int = Field(description="KV bytes held when decoding started")
    peak_kv_bytes: int
    full_kv_bytes: int = Field(description="what an uncompressed cache would hold for the prompt")
    queue_seconds: float
    prefill_seconds: float = Field(description="prefill work done for this request (0 for the context when reused)")
    decode_seconds: float


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: str | None
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: Usage
    kvlab: KvlabInfo


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    kvlab: KvlabInfo | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None = None
    logprobs: None = None


class Completion(BaseModel):
    """A ``text_completion``; streamed chunks have the same shape (``usage``/``kvlab`` at the end)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: Usage | None = None
    kvlab: KvlabInfo | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "kvlab"
    max_model_len: int | None = Field(None, description="the model's trained window, in tokens")
    kvlab: dict[str, Any] = Field(default_factory=dict,
                                  description="the server's default method, budget, chunk size")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
