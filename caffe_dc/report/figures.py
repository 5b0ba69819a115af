"""Matplotlib figures of a compression run and of the benchmarks (written as PNG, headless)."""
from __future__ import annotations

import io
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from caffe_dc.base import paper
from caffe_dc.base.fileio import atomic_write


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str, bbox_inches: Optional[str] = "tight") -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches=bbox_inches)
    _plt().close(fig)
    atomic_write(path, buf.getvalue())
    return path


def weight_histograms(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray], path: str,
                      title: str = "") -> str:
    """Per layer: the weight distribution of the reference and of the pruned net (nonzeros)."""
    plt = _plt()
    names = list(before)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
    for ax, n in zip(axes[0], names):
        b = before[n].ravel()
        a = after[n].ravel()
        a = a[a != 0]
        # wide enough for the kept weights' tails, which pruning leaves and retraining stretches
        lim = max(float(np.percentile(np.abs(b), 99.9)), float(np.abs(a).max()) if a.size else 0.0) or 1.0
        bins = np.linspace(-lim, lim, 121)
        ax.hist(b, bins=bins, color="#999999", label="reference (%d)" % b.size)
        ax.hist(a, bins=bins, color="#d62728", alpha=0.8, label="kept after pruning (%d)" % a.size)
        ax.set_title(n)
        ax.set_xlabel("weight")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("count (log)")
    fig.suptitle(title or "weight distribution before and after pruning")
    return _save(fig, path)


def codebooks(weights: Mapping[str, np.ndarray], init: Mapping[str, Sequence[float]],
              final: Mapping[str, Sequence[float]], path: str, title: str = "") -> str:
    """Per layer: centroids at initialisation and after fine-tuning over the weight distribution."""
    plt = _plt()
    names = list(weights)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
    for ax, n in zip(axes[0], names):
        w = weights[n].ravel()
        w = w[w != 0]
        ax.hist(w, bins=120, color="#bbbbbb")
        top = ax.get_ylim()[1]
        ci = np.unique(np.asarray(init[n])[1:])
        cf = np.unique(np.asarray(final[n])[1:])
        ax.vlines(ci, 0, top * 0.45, color="#1f77b4", lw=0.8, label="init (%d)" % ci.size)
        ax.vlines(cf, top * 0.5, top * 0.95, color="#d62728", lw=0.8, label="fine-tuned")
        ax.set_title(n)
        ax.set_xlabel("weight")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("count of pruned-net weights")
    fig.suptitle(title or "codebook centroids (linear init) over the weight distribution")
    return _save(fig, path)


def waterfall(stages: Sequence[str], sizes_bytes: Sequence[float], path: str, title: str = "") -> str:
    """Storage after each stage, with the ratio to dense on every bar."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    kb = np.asarray(sizes_bytes, float) / 1024.0
    bars = ax.bar(range(len(stages)), kb, color=["#7f7f7f", "#1f77b4", "#2ca02c", "#d62728", "#9467bd"][: len(stages)])
    for i, (b, v) in enumerate(zip(bars, kb)):
        ax.text(b.get_x() + b.get_width() / 2, v, "%.1f KB\n%.1fx" % (v, kb[0] / v if v else float("inf")),
                ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(stages)))
    ax.set_xticklabels(stages)
    ax.set_ylabel("size (KB)")
    ax.set_ylim(0, kb[0] * 1.25)
    ax.set_title(title or "storage by stage")
    return _save(fig, path)


def accuracy_vs(points: List[Dict], x: str, y: str, group: str, path: str, xlabel: str, ylabel: str,
                title: str, reference: Optional[float] = None, logx: bool = False,
                reference_label: str = "reference") -> str:
    """Lines of ``y`` against ``x``, one per value of ``group`` (a sweep's JSON points)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    groups: Dict[str, List[Dict]] = {}
    for p in points:
        groups.setdefault(str(p[group]), []).append(p)
    for g, ps in groups.items():
        ps = sorted(ps, key=lambda p: p[x])
        ax.plot([p[x] for p in ps], [100 * p[y] for p in ps], marker="o", label=g)
    if reference is not None:
        ax.axhline(100 * reference, color="k", ls="--", lw=0.8, label=reference_label)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


Panel = Tuple[str, Sequence[Tuple[str, str]], Sequence[float], Sequence[Optional[float]]]


def speedups(panels: Sequence[Panel], path: str, ours_label: str, paper_label: str, title: str) -> str:
    """Grouped bars of ours vs the paper's speedup per (net, layer), log scale, one panel each.

    A panel is (title, [(net, layer), ...], our speedups, the paper's, None where it has none).
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (name, cases, ours, theirs) in zip(axes[0], panels):
        labels = ["%s\n%s" % (paper.TITLES.get(net, net), layer) for net, layer in cases]
        x = np.arange(len(cases))
        theirs = [np.nan if v is None else v for v in theirs]
        for dx, vals, lab in ((-0.2, ours, ours_label), (0.2, theirs, paper_label)):
            bars = ax.bar(x + dx, vals, 0.4, label=lab)
            for bar, v in zip(bars, vals):
                if np.isfinite(v):
                    ax.annotate("%.2f" % v, (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom",
                                fontsize=7, xytext=(0, 1), textcoords="offset points")
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel("speedup dense / sparse")
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path, bbox_inches=None)
