"""``kvlab serve``: an OpenAI-compatible HTTP server on kvlab's engine (see docs/serving.md).

* :mod:`~kvlab.server.protocol`: pydantic models of the OpenAI subset plus the ``kvlab`` extension;
* :mod:`~kvlab.server.settings`: server settings and request -> engine job (all 400s happen here);
* :mod:`~kvlab.server.prompts`: the split of a prompt into reusable context and suffix;
* :mod:`~kvlab.server.worker`: the one engine thread and its bounded queue;
* :mod:`~kvlab.server.context_cache`: the byte-bounded LRU of prefilled contexts;
* :mod:`~kvlab.server.app`: the FastAPI routes; :mod:`~kvlab.server.errors`: OpenAI-shaped errors.

Needs the ``serve`` extra (fastapi, uvicorn).
"""

from kvlab.server.app import create_app
from kvlab.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
