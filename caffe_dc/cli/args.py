"""Argument helpers shared by the commands: data options, and ``layer=value`` maps."""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

from caffe_dc.base.errors import InputError


def add_data_args(p) -> None:
    g = p.add_argument_group("data (default: Fashion-MNIST from Debian's dataset-fashion-mnist)")
    g.add_argument("--idx", metavar="DIR", help="folder with MNIST-format IDX files (raw or .gz), e.g. real MNIST")
    g.add_argument("--name", help="name for the data set given with --idx (default: mnist)")
    g.add_argument("--download", metavar="mnist", help="download MNIST (needs a network)")
    g.add_argument("--data-root", default="runs/data", help="where LMDBs are written (default: runs/data)")
    g.add_argument("--limit", type=int, help="use only the first N records of each split (quick tests)")


def data_info(args, quiet: bool = False):
    """The LMDBs the data options name (made on first use)."""
    from caffe_dc.pycaffe import datasets

    return datasets.prepare(name=args.name, idx_dir=args.idx, download=args.download,
                            out_root=args.data_root, quiet=quiet, limit=args.limit)


def layer_map(text: Optional[str], cast: Callable[[str], object], what: str) -> Optional[Dict[str, object]]:
    """'ip1=0.08,ip2=0.09' -> {'ip1': 0.08, 'ip2': 0.09}; a bare number applies to every layer ('*')."""
    if text is None:
        return None
    out = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" in part:
            k, v = part.split("=", 1)
        else:
            k, v = "*", part
        try:
            out[k.strip()] = cast(v)
        except ValueError:
            raise InputError("%s: %r is not a number" % (what, v))
    return out


def expand(d: Optional[Dict[str, object]], layers: Sequence[str]) -> Optional[Dict[str, object]]:
    """A map with a '*' entry spelled out for every layer (named entries win)."""
    if d is None or "*" not in d:
        return d
    out = {n: d["*"] for n in layers}
    out.update({k: v for k, v in d.items() if k != "*"})
    return out
