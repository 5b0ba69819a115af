"""A new entropy coder or pruning rule is one class and one registration (no Caffe needed).

Each test adds a toy one the way docs/layout.md says, and shows that the
code which uses the interface really goes through it.
"""
import collections

import numpy as np
import pytest

from caffe_dc.algorithms import prune_rules, pruning
from caffe_dc.base.blobs import CODES, blob_name, is_helper
from caffe_dc.base.errors import FormatError, InputError
from caffe_dc.base.params import LayerParams
from caffe_dc.codec import container, entropy, frontend
from caffe_dc.codec import model as codec


class Identity(entropy.Coder):
    """Every symbol in the alphabet's width of bits, MSB first: no entropy coding at all."""
    name = "identity"

    def table(self, counts):
        return np.full(len(counts), max(1, (len(counts) - 1).bit_length()), np.uint8)

    def encode(self, symbols, table, block_size=entropy.DEFAULT_BLOCK):
        sym = np.asarray(symbols, np.int64).ravel()
        w = int(table[0])
        bits = ((sym[:, None] >> np.arange(w - 1, -1, -1)) & 1).astype(np.uint8)
        return entropy.Stream(np.packbits(bits.ravel()).tobytes(), int(bits.size), block_size,
                              np.arange(block_size, sym.size, block_size, dtype=np.int64) * w)

    def decode(self, jobs, what=()):
        out = []
        for st, table, count in jobs:
            w = int(np.asarray(table)[0])
            if st.n_bits != count * w:
                raise FormatError("%d bits for %d symbols of %d bits" % (st.n_bits, count, w))
            bits = np.unpackbits(np.frombuffer(st.payload, np.uint8))[:count * w].reshape(count, w)
            out.append((bits.astype(np.int64) << np.arange(w - 1, -1, -1)).sum(axis=1).astype(np.uint16))
        return out


def model(seed=0):
    rng = np.random.default_rng(seed)
    params = collections.OrderedDict()
    for name, ltype, shape in [("conv", "Convolution", (16, 8, 3, 3)), ("fc", "InnerProduct", (40, 300))]:
        params[name] = LayerParams(ltype, [rng.laplace(size=shape).astype(np.float32),
                                           rng.normal(size=shape[0]).astype(np.float32)])
    return params


@pytest.fixture
def identity(monkeypatch):
    monkeypatch.setitem(container.CODERS, Identity.name, Identity())   # the one registration


def test_an_identity_coder_round_trips_a_model_through_the_container(identity, monkeypatch):
    q = frontend.post_hoc(model(), None, density={"conv": 0.5, "fc": 0.1}, bits={"conv": 5, "fc": 4})
    specs, order = codec.specs_from_quantized_params(q, None)
    layers, raw = codec.from_params(q, specs, order)
    data, stats = codec.encode_model_report("toy", layers, raw, coder=Identity.name)
    huff, _ = codec.encode_model_report("toy", layers, raw)
    assert container.read_header(data)[0]["coder"] == Identity.name
    assert "coder" not in container.read_header(huff)[0]          # Huffman files stay as the format has them
    assert {b.name for b in stats.quantized if not b.stored_raw} == {"conv", "fc"}
    for b in stats.quantized:   # the streams are the identity coder's: every entry at the alphabet's width
        assert (b.code_bits, b.gap_bits) == (b.entries * b.weight_bits, b.entries * b.index_bits), b.name
    assert len(data) > len(huff)
    back = codec.to_params(codec.decode_model(data))
    quantized = {n: lp for n, lp in q.items() if not is_helper(n)}
    assert frontend.verify_equal(quantized, back, "identity round trip") == sum(
        b.size for lp in quantized.values() for b in lp.blobs)
    monkeypatch.delitem(container.CODERS, Identity.name)
    with pytest.raises(FormatError, match="'identity', an entropy coder this reader does not know"):
        container.read(data)
    with pytest.raises(InputError, match="no entropy coder 'identity'"):
        codec.encode_model_report("toy", layers, raw, coder=Identity.name)


class RandomRule(pruning.PruningRule):
    """The kept weights drawn at random among the survivors: a rule that ignores the values."""
    name = "random"

    def mask(self, w, density, mask=None):
        alive = np.arange(w.size) if mask is None else np.flatnonzero(np.asarray(mask).ravel())
        keep = np.random.default_rng(w.size).choice(alive, min(pruning.keep_count(density, w.size), alive.size),
                                                    replace=False)
        out = np.zeros(w.size, bool)
        out[keep] = True
        return out.reshape(w.shape)


def test_a_random_mask_rule_is_what_post_hoc_pruning_uses(monkeypatch):
    params = model(1)
    monkeypatch.setitem(prune_rules.RULES, RandomRule.name, RandomRule())   # the one registration
    for rule in (RandomRule(), pruning.MAGNITUDE):
        q = frontend.post_hoc(params, None, density={"fc": 0.1}, bits={"conv": 5, "fc": 4}, rule=rule.name)
        kept = q[blob_name("fc", CODES)].blobs[0] != 0
        assert np.array_equal(kept, rule.mask(params["fc"].blobs[0], 0.1)), rule.name
    w = params["fc"].blobs[0]
    assert not np.array_equal(RandomRule().mask(w, 0.1), pruning.MAGNITUDE.mask(w, 0.1))
    assert np.array_equal(pruning.MAGNITUDE.mask(w, 0.1), pruning.density_mask(w, 0.1))
    monkeypatch.delitem(prune_rules.RULES, RandomRule.name)
    with pytest.raises(InputError, match="no pruning rule 'random' \\(known: magnitude\\)"):
        frontend.post_hoc(params, None, density={"fc": 0.1}, rule=RandomRule.name)
