"""Sweep configs: defaults < YAML < flags, validation before anything runs, stable cell keys."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from kvlab.config import Cell, SweepConfig, expand, load_yaml, parse_length, resolve
from kvlab.errors import KvlabError, UnknownNameError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = {"tasks": ["niah/single"], "methods": ["snapkv"], "budgets": ["25%"]}


def test_defaults_then_yaml_then_flags():
    yaml_values = {"methods": ["snapkv", "knorm"], "budgets": ["25%", 512], "tasks": ["niah/single"], "n": 7,
                   "lengths": ["1k", 2048], "seed": 3}
    config = resolve(yaml_values, {"budgets": "10%,50%", "n": None, "modes": "query_agnostic"})
    assert config.methods == ("snapkv", "knorm")  # from YAML
    assert config.budgets == ("10%", "50%")  # the flag wins
    assert config.n == 7  # a flag left unset (None) does not override
    assert config.lengths == (1024, 2048) and config.seeds == (3,)  # singular keys are accepted
    assert config.modes == ("query_agnostic",)
    assert config.chat == SweepConfig().chat and config.db == "results.db"  # defaults


@pytest.mark.parametrize("change, match", [
    ({"methods": ["snapkvv"]}, "unknown method 'snapkvv'.*Did you mean 'snapkv'.*Valid methods: .*streaming_llm"),
    ({"methods": ["snapkv:window=3"]}, "bad parameter 'window=3'"),
    ({"tasks": ["niah/singel"]}, "unknown task 'niah/singel'.*niah/single"),
    ({"tasks": [{"name": "niah/single", "params": {"depth": "5"}}]}, "no parameter depth"),
    ({"budgets": ["25 percent"]}, "cannot parse budget '25 percent'"),
    ({"budgets": ["150%"]}, "outside \\(0, 1\\]"),
    ({"models": ["llama-9"]}, "unknown model 'llama-9'.*default"),
    ({"models": ["random:tiny-llama"]}, "no tokenizer"),
    ({"models": ["some-org/never-downloaded-model"]}, "never downloads"),
    ({"modes": ["aware"]}, "unknown mode 'aware'.*query_aware"),
    ({"chat": ["jinja"]}, "unknown chat policy"),
    ({"lengths": ["4q"]}, "length must be a number of tokens"),
    ({"n": 0}, "must be >= 1"),
    ({"method": "full", "methodz": "x"}, "unknown sweep setting.*methodz"),
    ({"tasks": []}, "at least one task"),
    ({"dtype": "float8"}, "unknown dtype"),
])
def test_bad_settings_fail_before_anything_runs(change, match):
    with pytest.raises(KvlabError, match=match):
        resolve({**BASE, **change})


def test_unknown_names_list_valid_choices():
    with pytest.raises(UnknownNameError) as info:
        resolve({**BASE, "methods": ["nope"]})
    assert "snapkv" in info.value.valid and "full" in info.value.valid


def test_yaml_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [full\nbudgets: 25%")
    with pytest.raises(KvlabError, match="not valid YAML"):
        load_yaml(str(bad))
    with pytest.raises(KvlabError, match="no such config file"):
        load_yaml(str(tmp_path / "none.yaml"))
    listing = tmp_path / "list.yaml"
    listing.write_text("- full\n- snapkv\n")
    with pytest.raises(KvlabError, match="mapping"):
        load_yaml(str(listing))


def test_expand_runs_full_once_and_adds_the_reference():
    config = resolve({"tasks": ["niah/single"], "methods": ["snapkv", "streaming_llm"], "budgets": ["25%", "50%", "full"],
                      "lengths": [1024, 2048], "modes": ["query_aware", "query_agnostic"], "seeds": [1, 2]})
    cells = expand(config)
    full = [c for c in cells if c.method == "full"]
    assert len(full) == 2 * 2 * 2 and {c.budget for c in full} == {"full"}  # lengths x modes x seeds
    assert len(cells) == 8 + 2 * 2 * 8  # + methods x budgets (full dropped for them) x the same 8
    assert len({c.key for c in cells}) == len(cells)
    assert len(expand(resolve({**BASE, "reference": False}))) == 1
    with pytest.raises(KvlabError, match="no budget below full"):
        expand(resolve({**BASE, "budgets": ["full"]}))


def test_cell_keys_are_stable_and_track_what_matters():
    a = expand(resolve({**BASE, "n": 5}))
    b = expand(resolve({**BASE, "n": 50}))
    assert [c.key for c in a] == [c.key for c in b]  # n is not part of the identity: more samples extend a cell
    changed = expand(resolve({**BASE, "methods": ["snapkv:window_size=64"]}))
    assert changed[1].key != a[1].key and changed[1].method == "snapkv(window_size=64)"
    assert a[1].method == "snapkv" and a[1].method_spec == "snapkv"
    params = expand(resolve({**BASE, "tasks": [{"name": "niah/single", "params": {"depths": "0,50"}}]}))
    assert params[1].key != a[1].key
    # the hash of a fixed cell must not drift between versions, or every store would rerun
    cell = Cell("default", "float32", "snapkv", '{"name": "snapkv"}', "eviction", "25%", "niah/single", (),
                4096, "query_aware", 42, 4096, "template")
    assert cell.key == Cell(**{**cell.__dict__, "n": 9, "method_spec": "x"}).key
    identity = {"model": "default", "dtype": "float32", "method_config": '{"name": "snapkv"}', "budget": "25%",
                "task": "niah/single", "task_params": {}, "length": 4096, "mode": "query_aware", "seed": 42,
                "chunk_size": 4096, "chat": "template"}
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    assert cell.key == hashlib.sha256(blob.encode()).hexdigest()[:20] == "bb0fd3ece5463e1e4946"


def test_parse_length():
    assert parse_length("4k") == 4096 and parse_length("1.5K") == 1536 and parse_length(300) == 300
    with pytest.raises(KvlabError):
        parse_length("0")


def test_shipped_configs_validate_and_demo_matches_the_command():
    from kvlab.cli.demo import DEMO

    configs = sorted(f for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".yaml"))
    assert {"demo.yaml", "ruler_sweep.yaml", "needle_grid.yaml"} <= set(configs)
    for name in configs:
        config = resolve(load_yaml(os.path.join(ROOT, "configs", name)))
        assert expand(config)
    from_file = resolve(load_yaml(os.path.join(ROOT, "configs", "demo.yaml")), {"db": "x.db"})
    assert from_file == resolve(DEMO, {"db": "x.db"})
    demo_cells = expand(from_file)
    assert len(demo_cells) == 42 and {c.length for c in demo_cells} == {1024, 2048, 4096}
    assert {c.method for c in demo_cells} == {"full", "snapkv", "streaming_llm", "knorm"}
