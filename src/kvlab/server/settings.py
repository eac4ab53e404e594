"""Server settings and turning one request into an engine :class:`~kvlab.server.worker.Job`.

Everything a request can get wrong is checked here, before it is queued, so the client gets its
400 at once: the model name, the method and budget (server flags overridden by ``kvlab``), the
sampling values, and the prompt length against ``--max-prompt-tokens`` and the model's window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvlab.budget import Budget
from kvlab.errors import KvlabError
from kvlab.methods import Method, get_method
from kvlab.models.loading import LoadedModel
from kvlab.sampling import SamplingParams
from kvlab.server.errors import APIError, bad_request, from_kvlab_error
from kvlab.server.prompts import PromptError, SplitPrompt, chat_prompt, completion_prompt
from kvlab.server.protocol import ChatCompletionRequest, CompletionRequest, KvlabOptions
from kvlab.server.worker import Channel, Job

OPENAI_DEFAULT_TEMPERATURE = 1.0


@dataclass
class ServerSettings:
    """What ``kvlab serve``'s flags decide; requests may override method, budget and chunk size."""

    model_id: str
    method: Method
    budget: Budget
    chunk_size: int | None
    aliases: tuple[str, ...] = ()
    api_key: str | None = None
    max_queue: int = 16
    context_cache_bytes: int = 512 * 2**20
    max_prompt_tokens: int | None = None  # None: the model's window
    max_tokens: int = 256  # generated tokens when a request does not say
    extra: dict = field(default_factory=dict)

    def serves(self, name: str) -> bool:
        return name == self.model_id or name in self.aliases


@dataclass
class Prepared:
    job: Job
    prompt: SplitPrompt


def prepare_chat(loaded: LoadedModel, settings: ServerSettings, req: ChatCompletionRequest,
                 channel: Channel) -> Prepared:
    options = req.kvlab or KvlabOptions()
    _check_model(settings, req.model)
    messages = [(m.template_role(), m.text()) for m in req.messages]
    prompt = _render(lambda: chat_prompt(loaded.tokenizer, messages, options.context))
    return _prepare(loaded, settings, req.requested_tokens, req, options, prompt, channel, "messages")


def prepare_completion(loaded: LoadedModel, settings: ServerSettings, req: CompletionRequest,
                       channel: Channel) -> Prepared:
    options = req.kvlab or KvlabOptions()
    _check_model(settings, req.model)
    prompt = _render(lambda: completion_prompt(loaded.tokenizer, req.prompt_text, options.context))
    return _prepare(loaded, settings, req.requested_tokens, req, options, prompt, channel, "prompt")


def _check_model(settings: ServerSettings, name: str) -> None:
    if not settings.serves(name):
        raise APIError(404, f"the model '{name}' does not exist here: this server serves '{settings.model_id}' "
                       "(GET /v1/models)", param="model", code="model_not_found")


def _render(fn) -> SplitPrompt:
    try:
        return fn()
    except PromptError as exc:
        raise bad_request(str(exc), param=exc.param) from None


def _prepare(loaded: LoadedModel, settings: ServerSettings, requested: int | None,
             req: ChatCompletionRequest | CompletionRequest, options: KvlabOptions, prompt: SplitPrompt,
             channel: Channel, prompt_param: str) -> Prepared:
    unsupported = req.unsupported_field()
    if unsupported:
        raise bad_request(f"'{unsupported}' is not supported by kvlab serve; leave it unset", param=unsupported,
                          code="unsupported_parameter")
    method = _field(lambda: get_method(options.method) if options.method else settings.method, "kvlab.method")
    budget = _field(lambda: Budget.parse(options.budget) if options.budget is not None else settings.budget,
                    "kvlab.budget")
    if not method.compresses:
        budget = Budget.parse("full")  # what is applied (and one cache entry whatever budget was asked)
    if options.chunk_size is None:
        chunk_size = settings.chunk_size
    else:
        chunk_size = None if options.chunk_size == "none" else int(options.chunk_size)
    if not prompt.context_ids:
        raise bad_request("the prompt is empty", param=prompt_param)
    max_tokens = _max_tokens(loaded, settings, prompt, requested, method, prompt_param)
    sampling = _field(lambda: SamplingParams(
        max_new_tokens=max_tokens,
        temperature=OPENAI_DEFAULT_TEMPERATURE if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p, seed=req.seed, stop=tuple(req.stop or ()),
    ), None)
    job = Job(context_ids=prompt.context_ids, suffix_ids=prompt.suffix_ids, sampling=sampling, method=method,
              budget=budget, chunk_size=chunk_size, reuse=options.reuse, channel=channel)
    return Prepared(job=job, prompt=prompt)


def _max_tokens(loaded: LoadedModel, settings: ServerSettings, prompt: SplitPrompt, requested: int | None,
                method: Method, param: str) -> int:
    """Tokens to generate: as requested (must fit the window), else the server default cut to what fits."""
    n = prompt.num_tokens
    limit = settings.max_prompt_tokens
    if limit is not None and n > limit:
        raise APIError(400, f"the prompt has {n} tokens but this server accepts at most {limit} "
                       "(--max-prompt-tokens); shorten the prompt", param=param, code="context_length_exceeded")
    window = loaded.spec.max_positions
    if requested is None:
        room = (window - n) if window else settings.max_tokens
        if room < 1:
            raise APIError(400, f"the prompt has {n} tokens and fills {loaded.name}'s window of {window} "
                           f"tokens; cut it by at least {n - window + 1} tokens", param=param,
                           code="context_length_exceeded")
        return min(settings.max_tokens, room)
    if window and n + requested > window:
        fix = (f"set max_tokens to at most {window - n}" if n < window
               else f"cut the prompt by at least {n - window + 1} tokens")
        raise APIError(400, f"the prompt has {n} tokens and max_tokens={requested} more would be generated, "
                       f"but {loaded.name} has a window of {window} tokens: {fix}. Eviction methods such as "
                       f"'{method.name}' shrink the cache, not the positions, so they do not lift this limit",
                       param="max_tokens" if n < window else param, code="context_length_exceeded")
    return requested


def _field(fn, param: str | None):
    try:
        return fn()
    except KvlabError as exc:
        raise from_kvlab_error(exc, param=param) from None
