"""Sensitivity results as files: ``sensitivity.json`` and a plot in the style of Han et al. (NIPS 2015, Fig. 5).

The plot has accuracy against the share of a layer's parameters pruned away,
one curve per layer, conv layers in one panel and fc layers in the other,
and the dense accuracy as a dashed line. Chosen final densities, when given,
are marked on their curves.
"""
from __future__ import annotations

import io
import json
import os
from typing import Mapping, Optional, Tuple

from caffe_dc.base.fileio import atomic_write

MARKERS = "osD^v<>ph*"


def plot(doc: Mapping, path: str, chosen: Optional[Mapping[str, float]] = None, title: str = "") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    kinds = [k for k in ("conv", "fc") if any(l["kind"] == k for l in doc["layers"])]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 4.0), squeeze=False, sharey=True)
    base = 100.0 * doc["baseline"]["accuracy"]
    for ax, kind in zip(axes[0], kinds):
        layers = [l for l in doc["layers"] if l["kind"] == kind]
        for i, l in enumerate(layers):
            x = 100.0 * (1.0 - np.asarray(l["densities"]))
            y = 100.0 * np.asarray(l["accuracy"])
            order = np.argsort(x)
            line, = ax.plot(x[order], y[order], marker=MARKERS[i % len(MARKERS)], markersize=4, linewidth=1.4,
                            label="%s (%s weights)" % (l["name"], _short(l["weights"])))
            if chosen and l["name"] in chosen:
                d = chosen[l["name"]]
                yd = np.interp(np.log(d), np.log(np.asarray(l["densities"])[::-1]), np.asarray(l["accuracy"])[::-1])
                ax.plot([100.0 * (1 - d)], [100.0 * yd], marker="v", markersize=11, color=line.get_color(),
                        markeredgecolor="black", zorder=5)
        ax.axhline(base, color="#777777", linestyle="--", linewidth=1, label="dense %.2f%%" % base)
        ax.set_title("%s layers" % ("convolutional" if kind == "conv" else "fully connected"))
        ax.set_xlabel("parameters pruned away (%)")
        ax.set_xlim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[0][0].set_ylabel("top-1 accuracy (%%) on %d %s images" % (doc["images"], doc.get("split", "validation")))
    fig.suptitle(title or "%s: sensitivity of each layer to pruning alone (no retraining)" % doc["net"])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return path


def _short(n: int) -> str:
    return "%.1fM" % (n / 1e6) if n >= 1e6 else "%.1fK" % (n / 1e3) if n >= 1e3 else str(n)


def write(doc: Mapping, out_dir: str) -> Tuple[str, str]:
    """``out_dir/sensitivity.json`` and ``out_dir/sensitivity.png``."""
    j = os.path.join(out_dir, "sensitivity.json")
    atomic_write(j, (json.dumps(doc, indent=2) + "\n").encode())
    return j, plot(doc, os.path.join(out_dir, "sensitivity.png"))
