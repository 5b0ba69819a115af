"""``caffe-dc reproduce``: the whole Deep Compression chain on a LeNet, resumable.

Stages, each writing into ``runs/<net>-<data>[-quick]/``:

1. data        IDX -> LMDB
2. reference   train through pycaffe (or copy ``--weights``)
3. prune       iterative prune -> retrain (mask blobs + hooks)
4. quantize    k-means + group-by-index fine-tuning (codebook blobs + hooks)
5. encode      relative-index sparse format + Huffman -> ``model.dcz``
6. decode      ``model.dcz`` -> ``decoded.caffemodel``, checked bit for bit
7. caffe test  Caffe's own binary on the decoded and on the quantized model
8. control     with ``--dense-control``: the reference retrained, uncompressed, with the
               same solvers for the same iterations (what the extra training alone gives)
9. report      ``report.md``, PNG figures, ``metrics.json``

``pipeline.json`` records each finished stage; a rerun skips those, and the
retraining stages resume from their last round or snapshot, so a kill
loses at most the iterations since the last snapshot.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import Dict, NamedTuple, Optional

from caffe_dc.stages import encode as encoding
from caffe_dc.pycaffe import datasets, nets
from caffe_dc.base import paper
from caffe_dc.pycaffe import solving
from caffe_dc.base.blobs import is_helper
from caffe_dc.base.fileio import atomic_write
from caffe_dc.pycaffe.caffemodel import load_params, save_net_proto
from caffe_dc.base.errors import InputError


class Preset(NamedTuple):
    ref_iters: int
    rounds: int
    prune_iters: int
    quant_iters: int
    density_scale: float = 1.0   # multiplies the paper's per-layer densities
    bits: Optional[Dict[str, int]] = None
    snapshot_every: int = 2000


PRESETS = {
    "quick": {
        "lenet-300-100": Preset(ref_iters=2000, rounds=2, prune_iters=500, quant_iters=500, snapshot_every=500),
        "lenet-5": Preset(ref_iters=600, rounds=2, prune_iters=150, quant_iters=150, snapshot_every=150),
    },
    "full": {
        # 0.6x the paper's densities in seven gentle rounds, 4-bit ip1 (91% of the weights): 55.6x at no
        # loss, where four rounds of 8000 at 0.75x with 5 bits gave 45.2x (results/, README).
        "lenet-300-100": Preset(ref_iters=30000, rounds=7, prune_iters=10000, quant_iters=10000, density_scale=0.6,
                                bits={"ip1": 4, "ip2": 5, "ip3": 5}),
        "lenet-5": Preset(ref_iters=10000, rounds=3, prune_iters=3000, quant_iters=3000, density_scale=0.75,
                          snapshot_every=1000),
        # ImageNet nets start from a reference caffemodel (--weights); the paper's densities and bits,
        # VGG-16 in five prune/retrain rounds as the paper did. Iteration counts are per round.
        "alexnet": Preset(ref_iters=0, rounds=3, prune_iters=10000, quant_iters=10000, snapshot_every=1000),
        "vgg16": Preset(ref_iters=0, rounds=5, prune_iters=10000, quant_iters=10000, snapshot_every=1000),
    },
}
IMAGENET_NETS = ("alexnet", "vgg16")
STAGES = ("data", "reference", "prune", "quantize", "encode", "decode", "caffe_test", "control", "report")


class Pipeline:
    def __init__(self, net: str, preset: str, run_dir: Optional[str], args, progress: bool = True):
        self.spec = nets.get(net)
        if self.spec.name not in PRESETS[preset]:
            preset = "full"
        self.preset_name = preset
        self.preset = PRESETS[preset][self.spec.name]
        over = {k: getattr(args, k, None) for k in ("ref_iters", "rounds", "prune_iters", "quant_iters")}
        self.preset = self.preset._replace(**{k: v for k, v in over.items() if v is not None})
        self.args = args
        self.progress = progress
        self.run_dir = run_dir
        self.command = command_line()
        self.state: Dict[str, dict] = {}

    @property
    def lr_factor(self) -> float:
        """Retraining learning rate as a fraction of the net's own (pruning, fine-tuning, control alike)."""
        return paper.RETRAIN_LR_FACTOR.get(self.spec.name, 0.1)

    def path(self, *parts) -> str:
        return os.path.join(self.run_dir, *parts)

    def _load_state(self):
        p = self.path("pipeline.json")
        if os.path.isfile(p):
            with open(p) as f:
                self.state = json.load(f)

    def _save_state(self):
        atomic_write(self.path("pipeline.json"), json.dumps(self.state, indent=2).encode())

    def stage(self, i: int, name: str, fn):
        label = "[%d/%d] %s" % (i, len(STAGES), name.replace("_", " "))
        if name in self.state and self.state[name].get("done"):
            print("%s: done before, skipping" % label)
            return self.state[name]
        print("%s ..." % label)
        t0 = time.time()
        out = fn() or {}
        if out.get("skipped"):  # not asked for this time: a later run with the option still does it
            return out
        out["done"] = True
        out["seconds"] = round(time.time() - t0, 1)
        self.state[name] = out
        if name != "report":
            self.state.pop("report", None)  # the report reads every stage: one that ran now makes it stale
        self._save_state()
        return out

    def run(self) -> dict:
        # 1. data
        a = self.args
        if self.spec.name in IMAGENET_NETS:
            if not (a.imagenet_train and a.imagenet_val and a.weights):
                raise InputError("reproduce %s needs --imagenet-train LMDB --imagenet-val LMDB --weights REF.caffemodel "
                                 "(no ImageNet here? `caffe-dc storage %s` reproduces the storage figures)"
                                 % (self.spec.name, self.spec.name))
            info = datasets.imagenet(a.imagenet_train, a.imagenet_val, a.batch, a.test_batch, a.crop)
        else:
            info = datasets.prepare(name=a.name, idx_dir=a.idx, download=a.download, out_root=a.data_root,
                                    quiet=True, limit=a.limit)
        if self.run_dir is None:
            self.run_dir = os.path.join("runs", "%s-%s%s" % (self.spec.name, info.name,
                                                              "-quick" if self.preset_name == "quick" else ""))
        os.makedirs(self.run_dir, exist_ok=True)
        self._load_state()
        self.info = info
        self.stage(1, "data", lambda: {"name": info.name, "train": info.train_lmdb, "test": info.test_lmdb,
                                       "n_train": info.n_train, "n_test": info.n_test})
        self.base = nets.for_data(self.spec.name, info)
        self.base_path = self.path("train_val.prototxt")
        save_net_proto(self.base, self.base_path)
        self.test_iter = solving.test_iters_for(self.base, info.n_test)
        self.stage(2, "reference", self.reference)
        self.stage(3, "prune", self.prune)
        self.stage(4, "quantize", self.quantize)
        self.stage(5, "encode", self.encode)
        self.stage(6, "decode", self.decode)
        self.stage(7, "caffe_test", self.caffe_test)
        self.stage(8, "control", self.control)
        self.stage(9, "report", self.report)
        return self.state

    # ---------------------------------------------------------------- stages
    def reference(self):
        from caffe_dc.stages import reference as train

        model = self.path("reference", "%s.caffemodel" % self.spec.name)
        if self.args.weights:
            from caffe_dc.pycaffe.solving import check_matches

            check_matches(self.base, load_params(self.args.weights), self.args.weights)
            os.makedirs(os.path.dirname(model), exist_ok=True)
            shutil.copyfile(self.args.weights, model + ".tmp")
            os.replace(model + ".tmp", model)
            m = solving.evaluate(self.base_path, model, self.test_iter)
            print("  reference accuracy %.2f%% (given weights)" % (100 * solving.accuracy_of(m)))
            return {"caffemodel": model, "accuracy": solving.accuracy_of(m), "accuracy_top5": m.get("accuracy_top5"),
                    "iters": 0, "source": self.args.weights}
        m = train.train_reference(self.spec.name, self.info, self.path("reference"), iters=self.preset.ref_iters,
                                  seed=self.args.seed, test_every=max(self.preset.ref_iters // 5, 1),
                                  progress=self.progress)
        print("  reference accuracy %.2f%% after %d iterations" % (100 * m["accuracy"], m["iters"]))
        return {"caffemodel": m["caffemodel"], "accuracy": m["accuracy"], "iters": m["iters"]}

    def densities(self):
        d = {k: min(1.0, v * self.preset.density_scale) for k, v in paper.PAPER_DENSITY[self.spec.name].items()}
        d.update(self.args.density or {})
        return d

    def prune(self):
        from caffe_dc.stages.prune import PruneConfig, run_pruning

        cfg = PruneConfig(densities=self.densities(), rounds=self.preset.rounds, iters_per_round=self.preset.prune_iters,
                          lr_factor=self.lr_factor,
                          snapshot_every=self.preset.snapshot_every)
        m = run_pruning(self.spec.name, self.state["reference"]["caffemodel"], self.info, self.path("prune"), cfg,
                        progress=self.progress)
        print(_indent(m["table"]))
        return {"caffemodel": m["caffemodel"], "accuracy": m["accuracy"], "density": m["density"],
                "layers": m["layers"], "config": m["config"]}

    def quantize(self):
        from caffe_dc.stages.quantize import QuantConfig, run_quantization

        cfg = QuantConfig(bits=self.args.bits or self.preset.bits, init=self.args.init, iters=self.preset.quant_iters,
                          lr_factor=self.lr_factor, seed=self.args.seed,
                          snapshot_every=self.preset.snapshot_every)
        m = run_quantization(self.spec.name, self.state["prune"]["caffemodel"], self.info, self.path("quantize"), cfg,
                             progress=self.progress)
        print(_indent(m["table"]))
        return {"caffemodel": m["caffemodel"], "prototxt": m["prototxt"], "accuracy": m["accuracy"], "init": m["init"],
                "accuracy_before_finetune": m["accuracy_before_finetune"],
                "bits": {n: v["bits"] for n, v in m["layers"].items()}}

    def control(self):
        """Retrain the dense reference exactly as the compressed net was retrained: one retraining
        solver restart per pruning round, then one for the fine-tuning, same iterations, no masks.
        Retraining at a lower learning rate can lift a net by itself; this measures how much."""
        if not getattr(self.args, "dense_control", False):
            print("  skipped (--dense-control retrains the reference as long, uncompressed, for comparison)")
            return {"skipped": True}
        from caffe_dc.pycaffe import rewrite
        from caffe_dc.pycaffe.retraining import retrain

        sp = rewrite.retrain_solver(nets.solver_for(self.spec.name, self.base_path, self.path("control", "snap")),
                                    self.lr_factor)
        pieces = [("round %d" % r, self.preset.prune_iters) for r in range(1, self.preset.rounds + 1)]
        pieces.append(("fine-tune", self.preset.quant_iters))
        current, result = self.state["reference"]["caffemodel"], {}
        for i, (label, iters) in enumerate(pieces, 1):
            done = self.path("control", "piece%d.caffemodel" % i)
            meta = self.path("control", "piece%d.json" % i)
            if os.path.isfile(done) and os.path.isfile(meta):
                with open(meta) as f:
                    result = json.load(f)
            else:
                hist = retrain(self.base_path, sp, current, self.path("control", "piece%d" % i), iters, self.test_iter,
                               done, desc="dense control, %s" % label, snapshot_every=self.preset.snapshot_every,
                               progress=self.progress)
                result = {"piece": label, "iters": iters, "accuracy": solving.accuracy_of(hist[-1]),
                          "accuracy_top5": hist[-1].get("accuracy_top5")}
                atomic_write(meta, json.dumps(result).encode())
            print("  dense control, %s: accuracy %.2f%% after %d iterations" % (label, 100 * result["accuracy"], iters))
            current = done
        return {"caffemodel": current, "accuracy": result["accuracy"], "accuracy_top5": result.get("accuracy_top5"),
                "iters": sum(n for _, n in pieces), "restarts": len(pieces)}

    def encode(self):
        from caffe_dc.report.storage_table import storage_text, summary_lines

        params = load_params(self.state["quantize"]["caffemodel"])
        data, stats = encoding.encode_params(params, self.spec.name, None,
                                             meta={"dataset": self.info.name, "preset": self.preset_name})
        out = self.path("model.dcz")
        atomic_write(out, data)
        atomic_write(self.path("storage.json"), json.dumps(stats.to_dict(), indent=2).encode())
        print(_indent(storage_text(stats, self.spec.name)))
        for line in summary_lines(stats, self.spec.name):
            print("  " + line)
        t = stats.totals()
        return {"blob": out, "bytes": len(data), "rate_pq": t["rate_pq"], "rate_pqh": t["rate_pqh"],
                "original_bytes": t["original_bits"] // 8}

    def decode(self):
        from caffe_dc.pycaffe.caffemodel import save_params

        params, _, _ = encoding.decode_bytes(encoding.read_blob(self.state["encode"]["blob"]))
        out = self.path("decoded.caffemodel")
        save_params(params, out, name=self.spec.name)
        quant = {k: v for k, v in load_params(self.state["quantize"]["caffemodel"]).items() if not is_helper(k)}
        n = encoding.verify_equal(quant, load_params(out), "decoded.caffemodel vs the quantized model")
        print("  %s: %d values, bit-identical to the quantized model" % (out, n))
        return {"caffemodel": out, "values_checked": n, "bit_exact": True}

    def caffe_test(self):
        dec = solving.caffe_cli_test(self.base_path, self.state["decode"]["caffemodel"], self.test_iter)
        qnt = solving.caffe_cli_test(self.state["quantize"]["prototxt"], self.state["quantize"]["caffemodel"],
                                     self.test_iter)
        print("  caffe test: decoded %.4f, quantized %.4f" % (dec["accuracy"], qnt["accuracy"]))
        if dec["accuracy"] != qnt["accuracy"]:
            raise InputError("decoded model scores %.6f under `caffe test` but the quantized one %.6f"
                             % (dec["accuracy"], qnt["accuracy"]))
        return {"decoded": dec, "quantized": qnt, "accuracy": dec["accuracy"]}

    def report(self):
        from caffe_dc.report.run_report import write_report

        path = write_report(self)
        print("  wrote %s" % path)
        return {"report": path}


def _indent(text: str, pad: str = "  ") -> str:
    return "\n".join(pad + l for l in text.splitlines())


def command_line() -> str:
    return " ".join(["caffe-dc"] + sys.argv[1:])
