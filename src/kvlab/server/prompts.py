"""Splitting a request's prompt into the reusable context and the suffix appended after compression.

The context is prefilled and compressed WITHOUT the suffix (query-agnostic), so the same
compressed context can answer any later question; the suffix is appended to a copy of it.

Chat completions (rendered with the model's own chat template):

* ``kvlab.context`` given: the first message whose content starts with that text is split right
  after it. Everything before the split is the context.
* otherwise the split is at the start of the LAST user message's content: system/document
  messages and earlier turns are the context, the last user message and the assistant-turn
  opener are the suffix. Exception: when the last user message is longer (in tokens) than all
  that precedes it, it is most of the prompt and must itself be compressed, so the WHOLE prompt
  is the context (reusable only by an identical prompt).

Text completions (no template): the whole prompt is the context, unless ``kvlab.context`` marks
its beginning; the rest is the suffix.

The two sides are tokenized separately (as :func:`kvlab.prompting.render` does), so a token that
would straddle the split is cut in two; the same text always gives the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from kvlab.errors import KvlabError
from kvlab.prompting import PromptParts, has_chat_template, render

_MARK = "\u2063kvlab-serve-split\u2063"

SplitKind = Literal["marked", "last_user", "whole"]


@dataclass(frozen=True)
class SplitPrompt:
    """Token ids of a prompt: ``context_ids`` are prefilled and cached, ``suffix_ids`` appended."""

    context_ids: list[int]
    suffix_ids: list[int]
    split: SplitKind

    @property
    def num_tokens(self) -> int:
        return len(self.context_ids) + len(self.suffix_ids)


class PromptError(KvlabError):
    """A prompt the server cannot render; ``param`` names the request field."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


def chat_prompt(tokenizer: Any, messages: list[tuple[str, str]], context: str | None = None) -> SplitPrompt:
    """Render ``messages`` (``(role, text)`` pairs) with the chat template and split them (module doc)."""
    if tokenizer is None or not has_chat_template(tokenizer):
        raise PromptError("this model has no chat template; use /v1/completions with a plain-text prompt", "messages")
    if context is not None:
        if not context:
            raise PromptError("kvlab.context is empty; leave it out or give the shared text", "kvlab.context")
        where = next((i for i, (_, text) in enumerate(messages) if text.startswith(context)), None)
        if where is None:
            raise PromptError("kvlab.context must be the beginning of one message's content (e.g. the document "
                              "at the start of the user message); no message starts with it", "kvlab.context")
        return _split_chat(tokenizer, messages, where, len(context), "marked")
    last_user = next((i for i in range(len(messages) - 1, -1, -1) if messages[i][0] == "user"), None)
    if last_user is None:
        raise PromptError("messages need at least one 'user' message", "messages")
    split = _split_chat(tokenizer, messages, last_user, 0, "last_user")
    if len(split.suffix_ids) > len(split.context_ids):
        whole = _render_chat(tokenizer, messages)
        return SplitPrompt(_encode(tokenizer, whole, special=False), [], "whole")
    return split


def completion_prompt(tokenizer: Any, prompt: str, context: str | None = None) -> SplitPrompt:
    """Tokenize a plain-text prompt: all context, or ``context`` + the rest as suffix."""
    if tokenizer is None:
        raise PromptError("this model has no tokenizer; kvlab serve needs one", "prompt")
    if not prompt:
        raise PromptError("the prompt is empty", "prompt")
    if context is None:
        rendered = render(tokenizer, PromptParts(context=prompt), chat="none")
        return SplitPrompt(rendered.context_ids, [], "whole")
    if not context:
        raise PromptError("kvlab.context is empty; leave it out or give the shared text", "kvlab.context")
    if not prompt.startswith(context):
        raise PromptError("the prompt must start with kvlab.context (the shared document); it does not",
                          "kvlab.context")
    rest = prompt[len(context):]
    rendered = render(tokenizer, PromptParts(context=context, question=rest), chat="none")
    return SplitPrompt(rendered.context_ids, rendered.suffix_ids, "marked")


def _split_chat(tokenizer: Any, messages: list[tuple[str, str]], index: int, offset: int,
                kind: SplitKind) -> SplitPrompt:
    role, text = messages[index]
    marked = [*messages[:index], (role, text[:offset] + _MARK + text[offset:]), *messages[index + 1:]]
    rendered = _render_chat(tokenizer, marked)
    if rendered.count(_MARK) != 1:  # pragma: no cover - a template that drops or repeats content
        raise PromptError("this model's chat template does not keep message content verbatim; "
                          "kvlab cannot split the prompt", "messages")
    head, tail = rendered.split(_MARK)
    return SplitPrompt(_encode(tokenizer, head, special=False), _encode(tokenizer, tail, special=False), kind)


def _render_chat(tokenizer: Any, messages: list[tuple[str, str]]) -> str:
    chat = [{"role": role, "content": text} for role, text in messages]
    try:
        return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # jinja raises for role orders a template refuses (e.g. two system messages)
        raise PromptError(f"the model's chat template rejected these messages: {exc}", "messages") from None


def _encode(tokenizer: Any, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"]) if text else []
