"""The paper's published figures, as data.

*Deep Compression* (Han, Mao, Dally, ICLR 2016), Tables 1-5 and the CPU
rows of Table 8 (Appendix A). Reports print our results next to these rows, and the
pipeline's defaults (per-layer densities, weight bits, index bits) are read
from the same rows, so there is one copy of every published number.

Numbers are stored as printed: a "35K" layer is ``35_000`` weights with its
label kept in ``weights_label``; percentages are fractions (8% -> 0.08).
Net keys are the CLI's names: ``lenet-300-100``, ``lenet-5``, ``alexnet``,
``vgg16``.
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional

LENET_300_100 = "lenet-300-100"
LENET_5 = "lenet-5"
ALEXNET = "alexnet"
VGG16 = "vgg16"
NETS = (LENET_300_100, LENET_5, ALEXNET, VGG16)
TITLES = {LENET_300_100: "LeNet-300-100", LENET_5: "LeNet-5", ALEXNET: "AlexNet", VGG16: "VGG-16"}   # as printed


class ResultRow(NamedTuple):
    """Table 1: one network, reference -> compressed (errors as fractions, None where not given)."""
    net: str
    dataset: str
    top1_ref: float
    top1: float
    top5_ref: Optional[float]
    top5: Optional[float]
    params_ref: str
    params: str
    rate: float           # compress rate, e.g. 40 for "40x"


TABLE1: Dict[str, ResultRow] = {
    LENET_300_100: ResultRow(LENET_300_100, "MNIST", 0.0164, 0.0158, None, None, "1070 KB", "27 KB", 40),
    LENET_5: ResultRow(LENET_5, "MNIST", 0.0080, 0.0074, None, None, "1720 KB", "44 KB", 39),
    ALEXNET: ResultRow(ALEXNET, "ImageNet", 0.4278, 0.4278, 0.1973, 0.1970, "240 MB", "6.9 MB", 35),
    VGG16: ResultRow(VGG16, "ImageNet", 0.3150, 0.3117, 0.1132, 0.1091, "552 MB", "11.3 MB", 49),
}


class LayerRow(NamedTuple):
    """One row of Tables 2-5. The ``total`` row also carries the printed "(Nx)" multiples."""
    layer: str
    weights: int          # as printed, rounded: "235K" -> 235000
    weights_label: str    # as printed: "235K"
    density: float       # W%: share of weights kept after pruning
    wbits_pq: float       # weight bits after pruning + quantization
    wbits_h: float        # ... after Huffman coding
    ibits_pq: float       # index bits after P+Q
    ibits_h: float        # ... after Huffman coding
    rate_pq: float        # compressed / original size, P+Q (codebook and indices included)
    rate_pqh: float       # ... P+Q+H
    x_prune: Optional[float] = None   # total row only: "(12x)" after pruning
    x_pq: Optional[float] = None      # total row only: "(32x)" after P+Q
    x_pqh: Optional[float] = None     # total row only: "(40x)" after P+Q+H


def _w(label: str) -> int:
    mult = {"K": 1_000, "M": 1_000_000}[label[-1]]
    return int(round(float(label[:-1]) * mult))


def _rows(spec: List[tuple]) -> List[LayerRow]:
    out = []
    for r in spec:
        layer, wl, d, wb, wbh, ib, ibh, rpq, rpqh = r[:9]
        out.append(LayerRow(layer, _w(wl), wl, d, wb, wbh, ib, ibh, rpq, rpqh, *r[9:]))
    return out


# layer, #weights, W%, wb P+Q, wb +H, ib P+Q, ib +H, rate P+Q, rate P+Q+H [, x prune, x P+Q, x P+Q+H]
TABLE2 = _rows([
    ("ip1", "235K", 0.08, 6, 4.4, 5, 3.7, 0.031, 0.0232),
    ("ip2", "30K", 0.09, 6, 4.4, 5, 4.3, 0.038, 0.0304),
    ("ip3", "1K", 0.26, 6, 4.3, 5, 3.2, 0.157, 0.1270),
    ("total", "266K", 0.08, 6, 5.1, 5, 3.7, 0.031, 0.0249, 12, 32, 40),
])

TABLE3 = _rows([
    ("conv1", "0.5K", 0.66, 8, 7.2, 5, 1.5, 0.785, 0.6745),
    ("conv2", "25K", 0.12, 8, 7.2, 5, 3.9, 0.060, 0.0528),
    ("ip1", "400K", 0.08, 5, 4.5, 5, 4.5, 0.027, 0.0245),
    ("ip2", "5K", 0.19, 5, 5.2, 5, 3.7, 0.069, 0.0613),
    ("total", "431K", 0.08, 5.3, 4.1, 5, 4.4, 0.0305, 0.0255, 12, 33, 39),
])

TABLE4 = _rows([
    ("conv1", "35K", 0.84, 8, 6.3, 4, 1.2, 0.326, 0.2053),
    ("conv2", "307K", 0.38, 8, 5.5, 4, 2.3, 0.145, 0.0943),
    ("conv3", "885K", 0.35, 8, 5.1, 4, 2.6, 0.131, 0.0844),
    ("conv4", "663K", 0.37, 8, 5.2, 4, 2.5, 0.141, 0.0911),
    ("conv5", "442K", 0.37, 8, 5.6, 4, 2.5, 0.140, 0.0943),
    ("fc6", "38M", 0.09, 5, 3.9, 4, 3.2, 0.030, 0.0239),
    ("fc7", "17M", 0.09, 5, 3.6, 4, 3.7, 0.030, 0.0246),
    ("fc8", "4M", 0.25, 5, 4, 4, 3.2, 0.073, 0.0585),
    ("total", "61M", 0.11, 5.4, 4, 4, 3.2, 0.037, 0.0288, 9, 27, 35),
])

TABLE5 = _rows([
    ("conv1_1", "2K", 0.58, 8, 6.8, 5, 1.7, 0.400, 0.2997),
    ("conv1_2", "37K", 0.22, 8, 6.5, 5, 2.6, 0.098, 0.0699),
    ("conv2_1", "74K", 0.34, 8, 5.6, 5, 2.4, 0.143, 0.0891),
    ("conv2_2", "148K", 0.36, 8, 5.9, 5, 2.3, 0.147, 0.0931),
    ("conv3_1", "295K", 0.53, 8, 4.8, 5, 1.8, 0.217, 0.1115),
    ("conv3_2", "590K", 0.24, 8, 4.6, 5, 2.9, 0.097, 0.0567),
    ("conv3_3", "590K", 0.42, 8, 4.6, 5, 2.2, 0.170, 0.0896),
    ("conv4_1", "1M", 0.32, 8, 4.6, 5, 2.6, 0.131, 0.0729),
    ("conv4_2", "2M", 0.27, 8, 4.2, 5, 2.9, 0.109, 0.0593),
    ("conv4_3", "2M", 0.34, 8, 4.4, 5, 2.5, 0.140, 0.0747),
    ("conv5_1", "2M", 0.35, 8, 4.7, 5, 2.5, 0.143, 0.0800),
    ("conv5_2", "2M", 0.29, 8, 4.6, 5, 2.7, 0.117, 0.0652),
    ("conv5_3", "2M", 0.36, 8, 4.6, 5, 2.3, 0.148, 0.0779),
    ("fc6", "103M", 0.04, 5, 3.6, 5, 3.5, 0.016, 0.0110),
    ("fc7", "17M", 0.04, 5, 4, 5, 4.3, 0.015, 0.0125),
    ("fc8", "4M", 0.23, 5, 4, 5, 3.4, 0.071, 0.0524),
    ("total", "138M", 0.075, 6.4, 4.1, 5, 3.1, 0.032, 0.0205, 13, 31, 49),
])

LAYER_TABLES: Dict[str, List[LayerRow]] = {LENET_300_100: TABLE2, LENET_5: TABLE3, ALEXNET: TABLE4, VGG16: TABLE5}
TABLE_NUMBER = {LENET_300_100: 2, LENET_5: 3, ALEXNET: 4, VGG16: 5}


def layer_rows(net: str) -> List[LayerRow]:
    """The per-layer rows of ``net``'s table, without the total row."""
    return [r for r in LAYER_TABLES[net] if r.layer != "total"]


def total_row(net: str) -> LayerRow:
    return [r for r in LAYER_TABLES[net] if r.layer == "total"][0]


# Defaults the pipeline reads. Densities and bits come from the rows above, not from a second copy.
PAPER_DENSITY: Dict[str, Dict[str, float]] = {n: {r.layer: r.density for r in layer_rows(n)} for n in NETS}
PAPER_TOTAL_DENSITY: Dict[str, float] = {n: total_row(n).density for n in NETS}
PAPER_BITS: Dict[str, Dict[str, int]] = {n: {r.layer: int(r.wbits_pq) for r in layer_rows(n)} for n in NETS}
# The tables use one index width per net (section 2's 8-bit conv / 5-bit fc is not what they count).
PAPER_INDEX_BITS: Dict[str, int] = {LENET_300_100: 5, LENET_5: 5, ALEXNET: 4, VGG16: 5}


class SpeedRow(NamedTuple):
    """Table 8, CPU rows: microseconds per sample of a pruned fc layer, dense (sgemv/sgemm) and sparse (csrmv/csrmm)."""
    dense_b1: float
    sparse_b1: float
    dense_b64: float
    sparse_b64: float


TABLE8_CPU: Dict[str, Dict[str, SpeedRow]] = {
    ALEXNET: {"fc6": SpeedRow(7516.2, 3066.5, 318.4, 1417.6),
              "fc7": SpeedRow(6187.1, 1282.1, 188.9, 682.1),
              "fc8": SpeedRow(1134.9, 890.5, 45.8, 407.7)},
    VGG16: {"fc6": SpeedRow(35022.8, 3774.3, 1056.0, 1780.3),
            "fc7": SpeedRow(5372.8, 545.1, 188.3, 274.9),
            "fc8": SpeedRow(774.2, 777.3, 45.7, 363.1)},
}
TABLE8_CPU_PLATFORM = "Core i7-5930K, MKL"
TABLE8_BATCHES = (1, 64)


# Pruning method facts used as defaults.
RETRAIN_LR_FACTOR = {LENET_300_100: 0.1, LENET_5: 0.1, ALEXNET: 0.01}
