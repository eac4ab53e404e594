"""Turning a context, a question and an answer prefix into token ids.

A prompt has up to three parts:

* ``context``: what gets prefilled and compressed (document, haystack, instructions before it);
* ``question``: appended *after* the context is compressed, so prefill-time methods cannot see it
  (query-agnostic compression). Without a question the whole prompt is the context;
* ``answer_prefix``: the start of the assistant's answer (RULER puts it after the assistant-turn
  opener to keep models from refusing).

The chat policy is explicit and recorded with every result: ``"template"`` wraps context +
question as one user message with the tokenizer's own chat template (falling back to plain text
if it has none), ``"none"`` concatenates the parts as plain text (RULER's ``base`` template).
The split between context and question is located in the rendered string, and the two sides are
tokenized separately (a token that would straddle the boundary is split in two).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from kvlab.errors import KvlabError

ChatPolicy = Literal["template", "none"]
CHAT_POLICIES = ("template", "none")
_MARK = "\u2063kvlab-split\u2063"


@dataclass(frozen=True)
class PromptParts:
    """The parts of one prompt; see the module docstring."""

    context: str
    question: str = ""
    answer_prefix: str = ""
    system: str | None = None


@dataclass(frozen=True)
class RenderedPrompt:
    """Token ids of a prompt: ``context_ids`` are prefilled (and compressed), ``suffix_ids`` appended."""

    context_ids: list[int]
    suffix_ids: list[int]
    text: str
    chat: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return len(self.context_ids) + len(self.suffix_ids)

    @property
    def ids(self) -> list[int]:
        return self.context_ids + self.suffix_ids


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render(tokenizer: Any, parts: PromptParts | str, chat: ChatPolicy = "template") -> RenderedPrompt:
    """Render ``parts`` with the chat policy and tokenize the context and suffix separately."""
    if isinstance(parts, str):
        parts = PromptParts(context=parts)
    if chat not in CHAT_POLICIES:
        raise KvlabError(f"unknown chat policy '{chat}'; use one of {', '.join(CHAT_POLICIES)}")
    if tokenizer is None:
        raise KvlabError("this model has no tokenizer (random weights); pass token ids instead of text")
    marker = _MARK if parts.question else ""
    user = parts.context + marker + parts.question
    use_template = chat == "template" and has_chat_template(tokenizer)
    if use_template:
        messages = ([{"role": "system", "content": parts.system}] if parts.system else []) + [
            {"role": "user", "content": user}
        ]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        add_special = False  # the template writes its own special tokens
    else:
        text = ((parts.system + "\n\n") if parts.system else "") + user
        add_special = True
    text += parts.answer_prefix
    if marker:
        split = text.index(marker)
        context_text, suffix_text = text[:split], text[split + len(marker):]
    else:
        context_text, suffix_text = text, ""
    context_ids = tokenizer(context_text, add_special_tokens=add_special)["input_ids"]
    suffix_ids = tokenizer(suffix_text, add_special_tokens=False)["input_ids"] if suffix_text else []
    return RenderedPrompt(
        context_ids=list(context_ids),
        suffix_ids=list(suffix_ids),
        text=context_text + suffix_text,
        chat="template" if use_template else "none",
    )
