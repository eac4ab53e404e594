"""The package surface: ``import kvlab`` is light, and its lazily imported names are the documented ones."""

from __future__ import annotations

import subprocess
import sys

import pytest

import kvlab

LIGHT = """
import sys
import kvlab
from kvlab.cli.main import build_parser
for command in ("", "generate", "bench", "run", "report", "serve", "eval"):
    try:
        build_parser().parse_args([command, "--help"] if command else ["--help"])
    except SystemExit:
        pass
heavy = sorted(m for m in ("torch", "transformers", "numpy", "matplotlib") if m in sys.modules)
print(",".join(heavy) or "none")
"""


def test_import_and_every_help_page_leave_torch_unimported():
    """`kvlab --help` answered in 4 s when the package imported torch and transformers eagerly."""
    result = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "none"


def test_all_lists_exactly_the_lazy_names_and_each_resolves():
    assert sorted(kvlab.__all__) == sorted(kvlab._EXPORTS)
    for name in kvlab.__all__:
        assert getattr(kvlab, name) is getattr(__import__(kvlab._EXPORTS[name], fromlist=[name]), name)
    assert set(kvlab.__all__) <= set(dir(kvlab))
    with pytest.raises(AttributeError, match="no attribute 'aply'"):
        kvlab.aply  # noqa: B018


def test_submodules_are_reachable_from_a_bare_import():
    """What an eagerly importing package allowed: ``import kvlab`` then ``kvlab.sampling.X``."""
    code = "import kvlab; print(kvlab.sampling.SamplingParams.__name__, kvlab.tasks.__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["SamplingParams", "kvlab.tasks"]


def test_apply_is_the_function_even_after_its_module_is_imported():
    import kvlab.apply_method  # noqa: F401  (binds the submodule on the package under its own name)
    from kvlab import apply

    assert callable(apply) and apply.__module__ == "kvlab.apply_method"
    assert kvlab.apply is apply
