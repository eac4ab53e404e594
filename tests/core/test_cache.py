import torch

from kvlab.cache import BudgetCache, KVLayer, KVMeter
from kvlab.methods.base import mask_to_index


def _kv(b=1, h=2, n=5, d=4, start=0.0):
    k = torch.arange(b * h * n * d, dtype=torch.float32).view(b, h, n, d) + start
    return k, -k


def test_update_appends_and_numbers_positions():
    layer = KVLayer(reserve=4)
    k, v = _kv(n=3)
    keys, values = layer.update(k, v)
    assert keys.shape[2] == 3 and torch.equal(keys, k) and torch.equal(values, v)
    k2, v2 = _kv(n=6, start=100.0)
    keys, _ = layer.update(k2, v2)  # grows past the reserve
    assert keys.shape[2] == 9 and layer.seen == 9 and layer.get_seq_length() == 9
    assert layer.positions[0, 0].tolist() == list(range(9))
    assert torch.equal(keys[:, :, 3:], k2)


def test_keep_selects_per_head_and_carries_extras():
    meter = KVMeter()
    layer = KVLayer(meter=meter)
    k, v = _kv(n=6)
    layer.update(k, v)
    acc = layer.extra("acc")
    acc.copy_(torch.arange(12, dtype=torch.float32).view(1, 2, 6))
    index = torch.tensor([[[0, 4], [1, 5]]])
    layer.keep(index)
    assert layer.length == 2 and layer.seen == 6
    assert layer.positions.tolist() == [[[0, 4], [1, 5]]]
    assert torch.equal(layer.keys[0, 0], k[0, 0, [0, 4]]) and torch.equal(layer.keys[0, 1], k[0, 1, [1, 5]])
    assert layer.extras["acc"].tolist() == [[[0.0, 4.0], [7.0, 11.0]]]
    assert meter.held == layer.bytes_held == 2 * layer.slot_bytes
    assert meter.peak == 6 * layer.slot_bytes
    k3, v3 = _kv(n=1, start=500.0)
    layer.update(k3, v3)  # new tokens continue the original numbering, zero statistics
    assert layer.positions[0, :, -1].tolist() == [6, 6] and layer.extras["acc"][0, :, -1].tolist() == [0.0, 0.0]


def test_keep_with_empty_slots_marks_holes():
    layer = KVLayer()
    layer.update(*_kv(n=4))
    layer.keep(torch.tensor([[[0, 1], [2, 3]]]), torch.tensor([[[True, True], [True, False]]]))
    assert layer.has_holes and layer.positions.tolist() == [[[0, 1], [2, -1]]]
    assert layer.tokens_held().tolist() == [[2, 1]]


def test_mask_to_index_pads_to_the_longest_head():
    keep = torch.tensor([[[True, False, True, True], [False, True, False, False]]])
    index, valid = mask_to_index(keep)
    assert index[0, 0].tolist() == [0, 2, 3] and valid[0, 0].all()
    assert index[0, 1, 0] == 1 and valid[0, 1].tolist() == [True, False, False]


def test_clone_is_independent(tiny_llama):
    cache = BudgetCache(tiny_llama.spec, reserve=8)
    for layer in cache.layers:
        layer.update(*_kv(n=5))
    copy = cache.clone()
    copy.layers[0].keep(torch.tensor([[[0], [1]]]))
    assert cache.layers[0].length == 5 and copy.layers[0].length == 1
    assert copy.bytes_held < cache.bytes_held
    assert cache.bytes_held == sum(layer.bytes_held for layer in cache.layers)
