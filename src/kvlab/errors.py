"""User-facing errors.

Every mistake a user can make (an unknown name, a malformed budget, a missing file, a prompt
that does not fit) raises a :class:`KvlabError` whose message says what to do. The CLI prints
the message on one line and exits with status 2; no traceback. ``assert`` is reserved for our
own invariants.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KvlabError(ValueError):
    """A user mistake, with a message that says how to fix it."""


class UnknownNameError(KvlabError, KeyError):
    """A name that is not in a registry; the message lists the valid names and the closest match."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]):
        valid = sorted(valid)
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        super().__init__(f"unknown {kind} '{name}'.{hint} Valid {kind}s: {', '.join(valid)}")
        self.kind, self.name, self.valid, self.closest = kind, name, valid, close[0] if close else None

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]


class PromptTooLongError(KvlabError):
    """The prompt (plus the tokens to generate) does not fit the model's window."""
