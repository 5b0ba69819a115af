"""The ``caffe-dc`` command line.

``COMMANDS`` is the whole command table: each entry names a function that
adds its arguments to a subparser and returns the function that runs it.
User errors (DCError), bad option values and any OSError (a file that cannot
be read or written) come out as one line and exit status 2, never as a
traceback. A broken invariant (InternalError) is a bug: one line saying so,
then the traceback for the report, exit status 1.

Commands that run BLAS work refuse to start, with one line and status 2, on a
CPU that cannot run the image's pinned OpenBLAS kernels
(``provenance.pin_refusal``): OpenBLAS would die there on an illegal
instruction halfway through the work.
"""
from __future__ import annotations

import sys
import traceback

from caffe_dc import __version__
from caffe_dc.base import provenance
from caffe_dc.base.errors import DCError, InternalError
from caffe_dc.cli import codec, compress, scale, sensitivity, stages, training
from caffe_dc.cli.args import OneLineParser
from caffe_dc.pycaffe import versions  # noqa: F401 - run records name the Caffe version

COMMANDS = (
    ("data", "convert MNIST-format IDX files to Caffe LMDBs", training.cmd_data),
    ("train", "train a reference model through pycaffe", training.cmd_train),
    ("prune", "iteratively prune and retrain a trained caffemodel (stage 1)", stages.cmd_prune),
    ("quantize", "k-means quantize a pruned caffemodel and fine-tune the centroids (stage 2)", stages.cmd_quantize),
    ("encode", "write a caffemodel as a compressed blob (.dcz): sparse indices + codebook + Huffman",
     codec.cmd_encode),
    ("decode", "turn a compressed blob back into a caffemodel that Caffe loads (bit-exact)", codec.cmd_decode),
    ("inspect", "print a compressed blob's per-layer storage table beside the paper's", codec.cmd_inspect),
    ("import-net", "read the authors' released .net file (with its deploy prototxt) into a caffemodel and a .dcz",
     codec.cmd_import_net),
    ("export-net", "write a quantized caffemodel in the authors' released .net format", codec.cmd_export_net),
    ("reproduce", "the whole pipeline on a LeNet: train, prune, quantize, encode, decode, caffe test, report",
     stages.cmd_reproduce),
    ("compress", "the whole pipeline on your own net: --solver S --weights W [--schedule F] [--test-lmdb L]; "
                 "prune, quantize (with retraining), encode, decode, caffe test, report", compress.cmd_compress),
    ("storage", "AlexNet/VGG-16 storage at the paper's per-layer settings (synthetic weights unless --weights): "
                "prune, quantize, encode, decode, compare with Tables 4/5", scale.cmd_storage),
    ("sensitivity", "prune each layer alone to a grid of densities and plot validation accuracy (no retraining)",
     sensitivity.cmd_sensitivity),
    ("choose", "turn a sensitivity file and a budget (--max-drop or --target-rate) into a schedule file",
     sensitivity.cmd_choose),
    ("bench-sparse", "time pruned fc layers dense (BLAS) vs sparse (CSR) at batch 1 and 64, "
                     "beside the paper's Table 8 CPU rows", scale.cmd_bench_sparse),
)
# Commands that only read or rewrite files, with no BLAS work worth refusing on an unsupported CPU.
NO_BLAS_WORK = frozenset({"inspect", "choose"})
# Commands that train or score through pycaffe: without it they say so first, before reading any input.
NEEDS_CAFFE = frozenset({"train", "prune", "quantize", "reproduce", "compress", "sensitivity"})


def build_parser():
    parser = OneLineParser(
        prog="caffe-dc",
        description="Deep Compression (Han, Mao, Dally, ICLR 2016) on real Caffe: "
                    "pruning, trained quantization, Huffman coding.")
    parser.add_argument("--version", action="version", version="caffe-dc " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    runners = {}
    for name, help, build in COMMANDS:
        runners[name] = build(sub.add_parser(name, help=help, description=help))
    return parser, runners


def main(argv=None) -> int:
    try:  # progress lines and tables should interleave in order even through a pipe
        sys.stdout.reconfigure(line_buffering=True)
    except AttributeError:
        pass
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    refusal = None if args.command in NO_BLAS_WORK else provenance.check_pin()
    if refusal:
        print("caffe-dc %s: error: %s" % (args.command, refusal), file=sys.stderr)
        return 2
    try:
        if args.command in NEEDS_CAFFE:
            from caffe_dc.pycaffe.solving import import_caffe

            import_caffe(getattr(args, "verbose", False))
        rc = runners[args.command](args)
    except DCError as e:
        print("caffe-dc %s: error: %s" % (args.command, _one_line(e)), file=sys.stderr)
        return 2
    except InternalError as e:
        print("caffe-dc %s: internal error: %s (this is a bug in caffe-dc; please report it with the details "
              "below)" % (args.command, _one_line(e)), file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        return 1
    except OSError as e:
        # An OSError here is the environment, not a bug: a full disk, a folder that went away.
        where = " ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        msg = "%s: %s" % (where, e.strerror) if where and e.strerror else (e.strerror or str(e) or type(e).__name__)
        print("caffe-dc %s: error: %s" % (args.command, _one_line(msg)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("caffe-dc %s: interrupted" % args.command, file=sys.stderr)
        return 130
    return rc or 0


def _one_line(msg) -> str:
    return " ".join(str(msg).split())
