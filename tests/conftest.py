"""Shared fixtures. Helpers (tiny models, random ids) live in ``tinymodels.py``: import them from there,
because several directories have a ``conftest.py`` and pytest swaps the module named ``conftest``."""

from __future__ import annotations

import os

import pytest
from tinymodels import ARCHS, make_tiny, random_ids, tiny_config  # noqa: F401  (re-exported for old imports)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", params=ARCHS)
def tiny(request):
    return make_tiny(request.param)


@pytest.fixture(scope="session")
def tiny_llama():
    return make_tiny("llama")


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2-135M-Instruct (float32, CPU)."""
    from kvlab.models import load_model

    return load_model("default", device="cpu")
