"""CLI subcommands of the offline codec: encode, decode, inspect, import-net, export-net.

None of them needs pycaffe: caffemodels and prototxts are read and written by
``codec.caffemodel`` and ``codec.caffe_proto``, and a prototxt's blob shapes
are worked out by ``codec.net_shapes`` (Caffe builds the net only for layer
types that need it, where Caffe is installed).
"""
from __future__ import annotations

import argparse
import json
import os

from caffe_dc.cli.args import (DEFAULT_BITS_HELP, bits, bits_list, check_layers, compression_rate, density, expand,
                               float_list, int_at_least, layer_values, nonnegative_float, numpy_seed, positive_float,
                               positive_int, share)
from caffe_dc.base.blobs import CODEBOOK, is_helper
from caffe_dc.base.errors import InputError
from caffe_dc.base.fileio import check_outputs
from caffe_dc.algorithms.cluster_config import Init, choices


def _out_path(out, inp, suffix):
    return out or os.path.splitext(inp)[0] + suffix


def _index_bits(text: str):
    """An --index-bits value: a width 0..MAX_BITS (0: dense), or a named choice (``encode.IndexWidth``)."""
    from caffe_dc.codec.frontend import IndexWidth

    t = text.strip()
    try:
        v = int(t)
    except ValueError:
        try:
            return IndexWidth(t.lower())
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a number of bits, %s"
                                             % (text, " or ".join(repr(m.value) for m in IndexWidth)))
    return bits(t, "index bits (0: dense; or %s)" % " or ".join(m.value for m in IndexWidth), low=0)


def cmd_encode(p):
    """encode's options, declared in one place: a long list, not long logic."""
    p.add_argument("inputs", nargs="+", metavar="[PROTOTXT] CAFFEMODEL",
                   help="the net's prototxt (train_val or deploy; optional: the caffemodel names its layers and "
                        "their types, and a prototxt only adds a check that the two belong together), then a "
                        "quantized caffemodel (from `caffe-dc quantize`) or any trained one")
    p.add_argument("-o", "--out", help="output .dcz (default: next to the caffemodel)")
    p.add_argument("--net", help="which of the paper's nets this is (default: guessed from layer names/sizes)")
    p.add_argument("--index-bits", type=layer_values(_index_bits),
                   help="relative-index bits per layer, e.g. 5 or conv1=8,ip1=5; 0 stores a layer dense (every "
                        "code, no gaps); auto (the default) picks each layer's width for the smallest file; "
                        "paper uses the paper's tables (5 LeNet/VGG-16, 4 AlexNet, else 8 conv / 5 fc)")
    g = p.add_argument_group("post-hoc compression, for a caffemodel without codebooks (no retraining)")
    g.add_argument("--density", type=layer_values(density),
                   help="kept fraction per layer, e.g. 0.1 or ip1=0.08 (default: the paper's)")
    g.add_argument("--bits", type=layer_values(bits),
                   help="weight bits per layer, e.g. 5 or conv1=8 (default: %s)" % DEFAULT_BITS_HELP)
    g.add_argument("--init", default="linear", choices=choices(Init))
    _add_calibration_args(p)
    p.add_argument("--json", help="also write the size figures (and the calibration's) as JSON here")

    def run(args):
        from caffe_dc.codec import frontend
        from caffe_dc.algorithms import quantization
        from caffe_dc.base.fileio import atomic_write
        from caffe_dc.pycaffe import nets
        from caffe_dc.codec.storage_table import storage_text, summary_lines

        prototxt, caffemodel = _encode_inputs(args.inputs)
        out = _out_path(args.out, caffemodel, ".dcz")
        check_outputs([prototxt, caffemodel, args.calib, args.mean_file], files=[out, args.json])
        _check_calibration_args(args, prototxt)
        params = _load_checked(prototxt, caffemodel)
        net = nets.canonical(args.net) if args.net else frontend.guess_net(params)
        has_cb = any(n.endswith("_" + CODEBOOK) for n in params)
        calib_doc = None
        if has_cb and (args.density or args.bits or args.calib):
            raise InputError("%s is already quantized; --density/--bits/--calib apply only to a model without "
                             "codebooks" % caffemodel)
        if not has_cb:
            layers = frontend.compressible(params)
            check_layers(args.density, layers, "--density")
            check_layers(args.bits, layers, "--bits")
            dens, wbits = expand(args.density, layers), expand(args.bits, layers)
            if args.calib:
                params, calib_doc = _calibrated(args, prototxt, params, net, dens, wbits, out)
                if calib_doc is None:
                    return 2
            else:
                print("no codebooks in %s: pruning and quantizing post hoc (no retraining)" % caffemodel)
                params = frontend.post_hoc(params, net, dens, wbits, quantization.Init.parse(args.init))
        quantized = [n for n in params if n + "_" + CODEBOOK in params]
        check_layers(args.index_bits, quantized, "--index-bits")
        ib = expand(args.index_bits, quantized)
        data, stats = frontend.encode_params(params, net, ib, meta={"source": os.path.basename(caffemodel)})
        if calib_doc is not None:   # the file's own rate (the chooser's was without this header)
            calib_doc["rate"] = round(stats.totals()["original_bits"] / 8.0 / len(data), 3)
        atomic_write(out, data)
        print(storage_text(stats, net))
        for line in summary_lines(stats, net):
            print(line)
        print("wrote %s (%d bytes)" % (out, len(data)))
        if not has_cb and calib_doc is None:
            print("accuracy was not measured: pruning and quantizing without retraining costs accuracy; give "
                  "calibration images (--calib DATA, a few hundred, labels optional) to measure it, with "
                  "--max-drop PP to choose the densities within a budget")
        if args.json:
            doc = stats.to_dict()
            if calib_doc is not None:
                doc["calibration"] = calib_doc
            atomic_write(args.json, json.dumps(doc, indent=2).encode())
        return 0
    return run


def _add_calibration_args(p) -> None:
    """encode's calibration options (docs/post-hoc.md)."""
    c = p.add_argument_group("calibration: measure the cost on a few images, choose within a budget, refit each "
                             "layer to the dense one (docs/post-hoc.md; needs pycaffe or OpenCV 4.x)")
    c.add_argument("--calib", metavar="DATA", help="an IDX pair (a folder, or the images file), an LMDB of Datum "
                   "records, or a folder of images; labels optional")
    c.add_argument("--calib-images", type=int_at_least(100), default=1000, metavar="N",
                   help="images taken from DATA, a seeded sample (default 1000)")
    c.add_argument("--calib-seed", type=numpy_seed, default=0, metavar="S",
                   help="seed of the sample, of the held-out part and of the folds (default 0)")
    c.add_argument("--holdout", type=share, default=0.3, help="share of them held out for the report (default 0.3; "
                   "the rest refits the layers and chooses, in folds: --folds)")
    c.add_argument("--max-drop", type=nonnegative_float, metavar="PP",
                   help="the largest rate whose top-1 accuracy drop on the choosing part stays within PP points")
    c.add_argument("--max-disagreement", type=nonnegative_float, metavar="PP",
                   help="the same with top-1 disagreement with the uncompressed model (no labels needed)")
    c.add_argument("--target-rate", type=compression_rate, metavar="X", help="the file's compression rate to reach")
    c.add_argument("--best-effort", action="store_true", help="write the closest file when the budget cannot be met")
    c.add_argument("--bits-options", type=bits_list, default=(3, 4, 5), metavar="B[,B...]",
                   help="weight bits measured for every layer when --bits is not given; each layer gets the width "
                        "that costs least for its size (default 3,4,5)")
    c.add_argument("--folds", type=positive_int, default=None, metavar="K",
                   help="cross-fitting folds: every choice is scored out of fold, each image by refits on the other "
                        "folds, and the file refitted on all (default 5; 1 on a net of more than 4 layers, where 5 cost "
                        "too much); 1 scores the refits on their own images, which reads optimistic (docs/post-hoc.md)")
    c.add_argument("--ridge", type=nonnegative_float, default=None, metavar="R",
                   help="the refit's ridge, a share of the mean diagonal of each layer's Gram matrix (default 1e-3)")
    c.add_argument("--scale", type=positive_float, help="preprocessing where the prototxt has no transform_param: "
                   "multiply by this (e.g. 0.00390625 for bytes to [0, 1))")
    c.add_argument("--mean", type=float_list, metavar="V[,V...]", help="... subtract these per-channel means first")
    c.add_argument("--mean-file", help="... or this binaryproto mean image")
    c.add_argument("--crop", type=positive_int, help="... centre crop to this size")
    c.add_argument("--rgb", action="store_true", help="images in a folder are fed as RGB (default Caffe's BGR)")


def calibration_preprocess(args, net_param):
    """The preprocessing the calibration options and the prototxt say (``calibration.preprocess_from``)."""
    from caffe_dc.pycaffe import calibration

    given = {k: getattr(args, k) for k in ("scale", "mean_file", "crop") if getattr(args, k) is not None}
    if args.mean:
        given["mean_values"] = tuple(args.mean)
    return calibration.preprocess_from(net_param, calibration.Preprocess(rgb=args.rgb, **given), list(given))


def _check_calibration_args(args, prototxt) -> None:
    """The calibration options that do not go together, refused before anything is read."""
    budget = [o for o, v in (("--max-drop", args.max_drop), ("--max-disagreement", args.max_disagreement),
                             ("--target-rate", args.target_rate)) if v is not None]
    if len(budget) > 1:
        raise InputError("give one budget, not %s" % " and ".join(budget))
    if (budget or args.best_effort) and not args.calib:
        raise InputError("%s measures on calibration images: give them with --calib DATA"
                         % (budget[0] if budget else "--best-effort"))
    if budget and args.density:
        raise InputError("%s chooses the densities: drop --density" % budget[0])
    if args.calib and not prototxt:
        raise InputError("--calib runs the net: give its prototxt before the caffemodel")


def _calibrated(args, prototxt, params, net, dens, wbits, out):
    """(quantized params, the calibration's JSON section), chosen and measured on --calib; (None, None)
    when the budget is not met and --best-effort was not given (one line said why)."""
    import sys
    import tempfile

    from caffe_dc.base import paper
    from caffe_dc.codec.caffe_proto import load_net_text
    from caffe_dc.pycaffe import calibration
    from caffe_dc.stages import posthoc

    net_param = load_net_text(prototxt)
    prep = calibration_preprocess(args, net_param)
    calib = calibration.load(args.calib, net_param, calibration.net_input_shape(net_param), prep, args.calib_images,
                             args.calib_seed)
    budget = args.max_drop is not None or args.max_disagreement is not None or args.target_rate is not None
    if not budget:   # the densities and bits post hoc compression would use, refitted and measured
        from caffe_dc.base import layer_policy
        from caffe_dc.codec import frontend

        dens = dens or (dict(paper.PAPER_DENSITY.get(net, {})) if net else {})
        wbits = dict({n: layer_policy.default_bits(lp.type, net, n) for n, lp in params.items()
                      if n in frontend.compressible(params)}, **(wbits or {}))
    opts = posthoc.Options(max_drop=args.max_drop, max_disagreement=args.max_disagreement,
                           target_rate=args.target_rate, density=None if budget else dens, bits=wbits or None,
                           bits_options=tuple(args.bits_options), holdout=args.holdout,
                           best_effort=args.best_effort, seed=args.calib_seed,
                           **{k: getattr(args, k) for k in ("ridge", "folds") if getattr(args, k) is not None})
    with tempfile.TemporaryDirectory(prefix="caffe-dc-calib-") as work:
        res = posthoc.run_calibrated(net_param, params, calib, opts, work)
    for line in res.lines:
        print(line)
    if not res.met and not args.best_effort:
        sys.stderr.write("the budget cannot be met: %s; nothing written (--best-effort writes the closest)\n"
                         % res.lines[-1].split(": ", 1)[1])
        return None, None
    return res.params, res.doc


def _encode_inputs(inputs):
    """(prototxt or None, caffemodel) from encode's one or two positional arguments."""
    if len(inputs) > 2:
        raise InputError("encode takes [PROTOTXT] CAFFEMODEL, got %d files: %s" % (len(inputs), " ".join(inputs)))
    return (None, inputs[0]) if len(inputs) == 1 else tuple(inputs)


def _load_checked(prototxt, caffemodel):
    """The caffemodel's Params; with a prototxt, first checked to belong to it."""
    from caffe_dc.codec.caffe_proto import load_net_text
    from caffe_dc.codec.caffemodel import load_params
    from caffe_dc.pycaffe import validate

    net_param = None
    if prototxt:
        net_param = load_net_text(prototxt)
        validate.check_net(net_param, prototxt, caffe_types=False)
    params = load_params(caffemodel)
    if net_param is not None:
        _check_against_prototxt(net_param, params, caffemodel, prototxt)
    return params


def _check_against_prototxt(net_param, params, where, prototxt):
    """Every parameterised layer of the prototxt must be in the caffemodel with the same blobs."""
    from caffe_dc.base.layer_policy import PRUNABLE_TYPES
    from caffe_dc.codec.caffe_proto import layer_type
    from caffe_dc.codec.net_shapes import check_params
    from caffe_dc.pycaffe import validate

    names = {l.name: layer_type(l) for l in (net_param.layer or net_param.layers)}
    for name, t in names.items():
        if t in PRUNABLE_TYPES and name not in params:
            raise InputError("%s has no weights for the prototxt's layer %r: they do not belong together" % (where, name))
    for name, lp in params.items():
        if name in names and names[name] in PRUNABLE_TYPES and lp.type != names[name]:
            raise InputError("%s: layer %r is a %s in the caffemodel but a %s in the prototxt"
                             % (where, name, lp.type, names[name]))
    shapes, unchecked = validate.param_shapes(net_param, prototxt, prototxt, need_all=False)
    check_params(shapes, {n: lp for n, lp in params.items() if n in names}, where)
    if unchecked:
        print("note: the blob shapes of %d layers (%s) were not checked against %s: %s"
              % (len(unchecked), ", ".join(unchecked), prototxt,
                 "they need Caffe, which is not importable here" if not validate.caffe_available()
                 else "Caffe cannot build the net here (a data source is missing)"))


def cmd_decode(p):
    p.add_argument("blob", help="a .dcz file from `caffe-dc encode`")
    p.add_argument("-o", "--out", help="output caffemodel (default: next to the blob)")
    p.add_argument("--verify", nargs="?", const=True, metavar="QUANTIZED.caffemodel",
                   help="read the written caffemodel back and check it bit for bit against the blob "
                        "(and against a quantized caffemodel, if given)")
    p.add_argument("--max-weights", type=positive_int, default=1 << 28,
                   help="refuse files that declare more values than this (default 2^28, about twice VGG-16)")

    def run(args):
        from caffe_dc.codec import frontend
        from caffe_dc.base.fileio import atomic_path
        from caffe_dc.codec.caffemodel import load_params, save_params

        out = _out_path(args.out, args.blob, ".caffemodel")
        reference = args.verify if isinstance(args.verify, str) else None
        check_outputs([args.blob, reference], files=[out])
        params, stats, meta = frontend.decode_bytes(frontend.read_blob(args.blob), args.max_weights)
        # Every check before the output is replaced: a failed --verify leaves an earlier file as it was.
        if reference:
            ref = {k: v for k, v in load_params(reference).items() if not is_helper(k)}
            against_ref = frontend.verify_equal(ref, params, "decoded vs %s" % reference)
        with atomic_path(out) as tmp:
            save_params(params, tmp, name=meta.get("net") or "caffe-dc")
            if args.verify:
                read_back = frontend.verify_equal(params, load_params(tmp), out)
        n = sum(b.size for lp in params.values() for b in lp.blobs)
        print("decoded %s: %d layers, %d values -> %s" % (args.blob, len(params), n, out))
        if args.verify:
            print("verify: %s reads back bit-identical to the blob (%d values)" % (out, read_back))
        if reference:
            print("verify: bit-identical to %s (%d values)" % (reference, against_ref))
        return 0
    return run


def cmd_inspect(p):
    p.add_argument("blob")
    p.add_argument("--json", help="also write the figures as JSON here")

    def run(args):
        from caffe_dc.codec import frontend
        from caffe_dc.base import paper
        from caffe_dc.base.fileio import atomic_write
        from caffe_dc.codec.storage_table import storage_text, summary_lines

        check_outputs([args.blob], files=[args.json])
        _, stats, meta = frontend.decode_bytes(frontend.read_blob(args.blob))
        net = (meta.get("meta") or {}).get("paper_net")
        if net is None and meta.get("net") in paper.TABLE1:
            net = meta.get("net")
        print("%s: net %s, format version %s" % (args.blob, meta.get("net"), ".".join(map(str, meta.get("version", ())))))
        print(storage_text(stats, net))
        for line in summary_lines(stats, net):
            print(line)
        print(_entropy_line(stats))
        if args.json:
            atomic_write(args.json, json.dumps(stats.to_dict(), indent=2).encode())
        return 0
    return run


def _entropy_line(stats) -> str:
    """How far the Huffman payloads are from the zero-order entropy bound of their streams."""
    from caffe_dc.codec.storage_table import human

    t = stats.totals()
    h, e = t["huffman_bits"], t["entropy_bits"]
    at_bound = t["file_bytes"] - (h - e) / 8
    return ("zero-order entropy bound of the code and gap streams: %s; their Huffman payloads: %s (%s); "
            "the file at the bound: %s%s" % (
                human(e / 8), human(h / 8), "+%.1f%%" % (100 * (h / e - 1)) if e else "–", human(at_bound),
                " (%.1fx)" % (t["original_bits"] / 8 / at_bound) if t["original_bits"] else ""))


def cmd_import_net(p):
    p.add_argument("deploy", help="deploy prototxt of the net")
    p.add_argument("netfile", help="the authors' .net file")
    p.add_argument("-o", "--out", help="output caffemodel (default: next to the .net file)")
    p.add_argument("--dcz", help="also write our compressed blob here")

    def run(args):
        from caffe_dc.stages import net_format
        from caffe_dc.base.fileio import atomic_write
        from caffe_dc.codec.caffemodel import save_params

        out = _out_path(args.out, args.netfile, ".caffemodel")
        check_outputs([args.deploy, args.netfile], files=[out, args.dcz])
        _check_deploy(args.deploy)
        params = net_format.import_net(args.deploy, args.netfile, codebooks=True)
        save_params(params, out)
        print("imported %s: %d layers, with their codebooks -> %s"
              % (args.netfile, sum(not is_helper(n) for n in params), out))
        if args.dcz:
            from caffe_dc.codec import frontend

            data, stats = frontend.encode_params(params, frontend.guess_net(params), None)
            atomic_write(args.dcz, data)
            print("wrote %s (%d bytes)" % (args.dcz, len(data)))
        return 0
    return run


def cmd_export_net(p):
    p.add_argument("deploy", help="deploy prototxt of the net")
    p.add_argument("caffemodel", help="caffemodel quantized to 8-bit conv / 4-bit fc codebooks")
    p.add_argument("-o", "--out", required=True, help="output .net file")

    def run(args):
        from caffe_dc.stages import net_format

        check_outputs([args.deploy, args.caffemodel], files=[args.out])
        _check_deploy(args.deploy)
        summary = net_format.export_net(args.deploy, args.caffemodel, args.out)
        print(json.dumps(summary, indent=2, default=str) if not isinstance(summary, str) else summary)
        return 0
    return run


def _check_deploy(path: str) -> None:
    """A deploy prototxt that Caffe would build (``validate.check_net``), read without pycaffe."""
    from caffe_dc.codec.caffe_proto import load_net_text
    from caffe_dc.pycaffe import validate

    validate.check_net(load_net_text(path), path, deploy=True, caffe_types=False)
