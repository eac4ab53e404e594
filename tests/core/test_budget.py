import pytest
import torch

from kvlab.budget import Budget
from kvlab.errors import KvlabError
from kvlab.models.spec import ModelSpec

SPEC = ModelSpec("t", "llama", num_layers=4, num_heads=8, num_kv_heads=2, head_dim=16, dtype=torch.float32,
                 max_positions=1024, sliding_windows=(None,) * 4)


@pytest.mark.parametrize("text,kind,value", [
    ("1024", "tokens", 1024), ("4k", "tokens", 4096), ("512 tokens", "tokens", 512), (300, "tokens", 300),
    ("25%", "ratio", 0.25), ("0.25", "ratio", 0.25), (0.5, "ratio", 0.5), ("12.5%", "ratio", 0.125),
    ("64MiB", "bytes", 64 * 2**20), ("1.5GB", "bytes", 1.5e9), ("2kib", "bytes", 2048),
    ("full", "full", 0), (None, "full", 0), ("100%", "full", 0),
])
def test_parse(text, kind, value):
    b = Budget.parse(text)
    assert b.kind == kind and b.value == pytest.approx(value)


@pytest.mark.parametrize("bad", ["", "abc", "-5", "0", "150%", "0%", "12q", "1.5.2", "MiB", True])
def test_parse_rejects_with_a_hint(bad):
    with pytest.raises(KvlabError) as err:
        Budget.parse(bad)
    assert "budget" in str(err.value)


def test_resolution_never_exceeds_the_prompt():
    assert Budget.parse("1024").resolve(SPEC, 300) == 300
    assert Budget.parse("full").resolve(SPEC, 300) == 300
    assert Budget.parse("25%").resolve(SPEC, 300) == 75
    assert Budget.parse("25%").resolve(SPEC, 301) == 76  # ceil
    assert Budget.parse("1%").resolve(SPEC, 10) == 1


def test_bytes_resolve_through_the_kv_geometry():
    per_token = 2 * 4 * 2 * 16 * 4  # k+v, layers, kv heads, head_dim, fp32
    assert SPEC.kv_bytes_per_token == per_token
    assert Budget.parse(f"{per_token * 100}b").resolve(SPEC, 10_000) == 100
    assert Budget.parse(f"{per_token * 100 + per_token - 1}b").resolve(SPEC, 10_000) == 100
    with pytest.raises(KvlabError, match="less than one token"):
        Budget.parse("100b").resolve(SPEC, 10_000)


def test_str_round_trips():
    for text in ["1024", "25%", "64MiB", "full"]:
        assert str(Budget.parse(str(Budget.parse(text)))) == str(Budget.parse(text))
