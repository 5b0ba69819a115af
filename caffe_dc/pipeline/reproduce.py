"""``caffe-dc reproduce`` and ``caffe-dc compress``: the whole Deep Compression chain, resumable.

One implementation for every net. ``reproduce`` runs one of the paper's nets
(a ``nets.registry_source`` on LMDBs made from IDX files, its schedule from
``zoo/schedules/<net>-<preset>.json``); ``compress`` runs a user's own
solver, train_val and caffemodel (a ``nets.user_source``: its TRAIN Data
layer trains, its TEST Data layer is the validation split, ``--test-lmdb``
the held-out test split; the schedule from ``--schedule`` or ``DEFAULT_SCHEDULE``).

Stages, each writing into the run folder:

1. data        IDX -> LMDB (reproduce); the net's own LMDBs, counted (compress)
2. reference   train through pycaffe (or copy ``--weights``), scored on val
3. prune       iterative prune -> retrain (mask blobs + hooks)
4. quantize    k-means + group-by-index fine-tuning (codebook blobs + hooks)
5. encode      relative-index sparse format + Huffman -> ``model.dcz``
6. decode      ``model.dcz`` -> ``decoded.caffemodel``, checked bit for bit
7. caffe test  Caffe's own binary on the decoded and on the quantized model (test split)
8. control     with ``--dense-control``: the reference retrained, uncompressed, with the
               same solvers for the same iterations (what the extra training alone gives)
9. test        every model scored on the test split, each image exactly once, image by
               image: k/n, Wilson intervals, paired comparisons (McNemar)
10. report     ``report.md``, PNG figures, ``metrics.json``

Everything that is chosen or watched during the run (test lines while
training, the accuracy of each round) uses the validation split; the test
split is read only in stages 7 and 9, for the final figures.

``pipeline.json`` records each finished stage with a fingerprint of its
resolved inputs (options, preset, the data set, the fingerprints of the
stages it reads, and the code's own hash). A rerun skips a stage only when
its fingerprint is unchanged; otherwise it says so and redoes that stage and
every stage after it. The retraining stages resume from their last round or
snapshot, so a kill loses at most the iterations since the last snapshot.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
import time
from typing import Dict, NamedTuple, Optional, Tuple

from caffe_dc.stages import encode as encoding
from caffe_dc.pycaffe import datasets, nets
from caffe_dc.pycaffe import solving
from caffe_dc.base.blobs import is_helper
from caffe_dc.base.fileio import atomic_write
from caffe_dc.pycaffe.caffemodel import load_net_proto, load_params, load_solver_proto, save_net_proto
from caffe_dc.base.errors import InputError
from caffe_dc.algorithms import schedule as schedules


# The presets are schedule files in zoo/schedules/<net>-<preset>.json (``schedules.builtin``): the
# LeNets' full presets are written by `caffe-dc choose` from sensitivity curves (results/sensitivity-*),
# the ImageNet nets' hold the paper's densities and bits and start from a given reference (--weights).
IMAGENET_NETS = ("alexnet", "vgg16")
STAGES = ("data", "reference", "prune", "quantize", "encode", "decode", "caffe_test", "control", "test", "report")
# A user's net without --schedule: the paper's conv/fc contrast (AlexNet keeps 35-84% of its conv
# weights and 9-25% of its fc weights; 8-bit conv, 5-bit fc), in three rounds, each retraining a fifth
# of the solver's own max_iter, at a tenth of its learning rate (the paper's LeNet factor).
DEFAULT_SCHEDULE = {
    "format": schedules.FORMAT, "version": schedules.VERSION,
    "description": "caffe-dc's default for a net of your own: conv layers keep 50%, fc layers 10%, reached "
                   "geometrically over 3 rounds; 8-bit conv, 5-bit fc; each round and the fine-tuning retrain "
                   "max_iter/5 of your solver at 1/10 of its base_lr",
    "rounds": 3, "iters_per_round": None, "finetune_iters": None, "lr_factor": 0.1,
    "densities": {"[conv]": 0.5, "[fc]": 0.1}, "bits": {"[conv]": 8, "[fc]": 5},
}


class UserNet(NamedTuple):
    """A net given by its solver (``compress``), not by a registry name (``reproduce``)."""
    solver: str
    test_lmdb: Optional[str] = None


# Stages with a folder of their own, emptied when their inputs change (so nothing inside is reused).
STAGE_DIRS = {"reference": "reference", "prune": "prune", "quantize": "quantize", "control": "control",
              "test": "test"}


# The code whose change can change a stage's numbers. Training depends on the algorithms, the Caffe
# glue and the training stages; what reads the blob also on the codec; the report's own code is
# fingerprinted by the report stage alone. So a new file format re-encodes without retraining, and
# a reworded report retrains nothing.
TRAINING_CODE = ("base", "algorithms", "pycaffe", "zoo", "stages/reference.py", "stages/prune.py",
                 "stages/quantize.py")
NUMERIC_CODE = TRAINING_CODE + ("codec", "stages/encode.py")
CODEC_STAGES = ("encode", "decode", "caffe_test", "test")


def code_version(parts=NUMERIC_CODE) -> str:
    """Hash of the package's code and net definitions: a changed algorithm invalidates old stages."""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    walk = []
    for part in parts:
        path = os.path.join(pkg, part)
        if os.path.isfile(path):
            walk.append((os.path.dirname(path), [], [os.path.basename(path)]))
        else:
            walk += sorted(os.walk(path))
    for folder, _, files in walk:
        for f in sorted(files):
            if f.endswith((".py", ".prototxt", ".json")):
                path = os.path.join(folder, f)
                h.update(os.path.relpath(path, pkg).encode() + b"\0")
                with open(path, "rb") as fh:
                    h.update(fh.read())
    return h.hexdigest()[:16]


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def resolve_schedule(src, path: Optional[str], args) -> Tuple[schedules.Schedule, str, dict]:
    """The schedule a run follows: ``path``'s file, else DEFAULT_SCHEDULE, with the command line's
    overrides (--rounds, --prune-iters, --quant-iters, --ref-iters, --density, --bits) applied to the
    document before it is validated against the net's prunable layers. Returns (schedule, where it
    came from, the resolved document)."""
    if path:
        doc = schedules.read_document(path)
        where = path
    else:
        doc = json.loads(json.dumps(DEFAULT_SCHEDULE))
        iters = max(1, int(src.solver.max_iter) // 5)
        doc["iters_per_round"] = doc["finetune_iters"] = iters
        where = "the default schedule (no --schedule given)"
    if not isinstance(doc, dict):
        raise InputError("%s: a schedule is a JSON object" % where)
    doc = dict(doc)
    for key, opt in (("rounds", "rounds"), ("iters_per_round", "prune_iters"), ("finetune_iters", "quant_iters"),
                     ("reference_iters", "ref_iters")):
        if getattr(args, opt, None) is not None:
            doc[key] = getattr(args, opt)
    for key, opt in (("densities", "density"), ("bits", "bits")):
        given = getattr(args, opt, None)
        if given:
            # a bare command-line value is meant for every layer, so it beats the file's [conv]/[fc] keys
            over = {n: given["*"] for n in src.layer_types()} if "*" in given else {}
            over.update({k: v for k, v in given.items() if k != "*"})
            doc[key] = dict(doc.get(key) or {}, **over)
    return schedules.from_dict(doc, src.layer_types(), where=where), where, doc


class Pipeline:
    def __init__(self, net, preset: str, run_dir: Optional[str], args, progress: bool = True):
        """``net``: a registry name (``reproduce``) or a ``UserNet`` (``compress``)."""
        self.user = net if isinstance(net, UserNet) else None
        self.spec = None if self.user else nets.get(net)
        if self.spec is not None and preset != "full":
            try:
                schedules.builtin(self.spec.name, preset)
            except InputError:   # e.g. no quick preset for an ImageNet net
                preset = "full"
        self.preset_name = preset if self.spec is not None else "custom"
        self.args = args
        self.progress = progress
        self.run_dir = run_dir
        self.command = command_line()
        self.state: Dict[str, dict] = {}

    def schedule_path(self) -> Optional[str]:
        given = getattr(self.args, "schedule", None)
        if given or self.user:
            return given
        return schedules.builtin(self.spec.name, self.preset_name)

    @property
    def lr_factor(self) -> float:
        """Retraining learning rate as a fraction of the net's own (pruning, fine-tuning, control alike)."""
        return self.schedule.lr_factor

    @property
    def name(self) -> str:
        return self.src.name

    def path(self, *parts) -> str:
        return os.path.join(self.run_dir, *parts)

    def _load_state(self):
        p = self.path("pipeline.json")
        if os.path.isfile(p):
            with open(p) as f:
                self.state = json.load(f)

    def _save_state(self):
        atomic_write(self.path("pipeline.json"), json.dumps(self.state, indent=2).encode())

    def stage(self, i: int, name: str, fn, inputs: dict, after: tuple = ()):
        """Run stage ``name`` unless it finished before with the same fingerprint.

        The fingerprint covers ``inputs`` (the stage's resolved options), the
        fingerprints of the stages it reads (``after``) and the code version,
        so a changed option redoes this stage and, through the chain, every
        stage that depends on it.
        """
        label = "[%d/%d] %s" % (i, len(STAGES), name.replace("_", " "))
        code = code_version(NUMERIC_CODE if name in CODEC_STAGES else TRAINING_CODE)
        fp = fingerprint({"inputs": inputs, "after": [self.state.get(a, {}).get("fingerprint") for a in after],
                          "code": code})
        old = self.state.get(name)
        if old and old.get("done"):
            if old.get("fingerprint") == fp:
                print("%s: done before with the same inputs, skipping" % label)
                return old
            changed = sorted(k for k in set(inputs) | set(old.get("inputs", {}))
                             if old.get("inputs", {}).get(k) != inputs.get(k))
            why = ("settings changed: " + ", ".join(changed)) if changed else "an earlier stage or the code changed"
            print("%s: %s; redoing it" % (label, why))
        print("%s ..." % label)
        if name in STAGE_DIRS:
            self._claim(self.path(STAGE_DIRS[name]), fp)
        self.state.pop(name, None)
        t0 = time.time()
        out = fn() or {}
        out["done"] = True
        out["seconds"] = round(time.time() - t0, 1)
        out["fingerprint"] = fp
        out["inputs"] = inputs
        self.state[name] = out
        self._save_state()
        return out

    @staticmethod
    def _claim(folder: str, fp: str) -> None:
        """Empty a stage's folder left by other inputs (finished or killed), then mark it as ours.

        A killed stage resumes from its snapshots only when it was started with
        the same fingerprint; work done for other settings is never reused."""
        marker = os.path.join(folder, "fingerprint.txt")
        if os.path.isdir(folder):
            mine = os.path.isfile(marker) and open(marker).read().strip() == fp
            if not mine:
                shutil.rmtree(folder)
        os.makedirs(folder, exist_ok=True)
        atomic_write(marker, fp.encode())

    def run(self) -> dict:
        # 1. data
        a = self.args
        if self.user:
            self.src = nets.user_source(self.user.solver, self.user.test_lmdb)
            info = self.src.info
        elif self.spec.name in IMAGENET_NETS:
            if not (a.imagenet_train and a.imagenet_val and a.weights):
                raise InputError("reproduce %s needs --imagenet-train LMDB --imagenet-val LMDB --weights REF.caffemodel "
                                 "(no ImageNet here? `caffe-dc storage %s` reproduces the storage figures)"
                                 % (self.spec.name, self.spec.name))
            info = datasets.imagenet(a.imagenet_train, a.imagenet_val, a.batch, a.test_batch, a.crop)
            self.src = nets.registry_source(self.spec.name, info)
        else:
            info = datasets.prepare(name=a.name, idx_dir=a.idx, download=a.download, out_root=a.data_root,
                                    quiet=True, limit=a.limit, val=a.val)
            self.src = nets.registry_source(self.spec.name, info)
        self.schedule, self.schedule_source, self.schedule_doc = resolve_schedule(self.src, self.schedule_path(), a)
        sch = self.schedule
        self.snapshot_every = sch.snapshot_every or (int(self.src.solver.snapshot) or None) or \
            max(1, min(1000, sch.iters_per_round))
        self.ref_iters = sch.reference_iters if sch.reference_iters is not None else 0
        if self.user and not a.weights:
            raise InputError("compress needs the reference caffemodel: --weights REF.caffemodel")
        if self.run_dir is None:
            self.run_dir = (default_run_dir(self.spec.name, info.name, self.preset_name, a) if self.spec else
                            compress_run_dir(self.src, a))
        os.makedirs(self.run_dir, exist_ok=True)
        self._load_state()
        self.info = info
        data_inputs = {k: v for k, v in info._asdict().items()}
        if self.user:
            # The user's files are inputs too: a changed net, solver or LMDB redoes everything.
            data_inputs["net"] = fingerprint([str(self.src.train_val), str(self.src.solver), list(self.src.changes)])
            data_inputs["lmdbs"] = {p: lmdb_identity(p) for p in {info.train_lmdb, info.test_lmdb, info.val_lmdb}
                                    if p}
        self.stage(1, "data", lambda: dict(data_inputs), data_inputs)
        self.base = self.src.train_val
        self.base_path = self.path("train_val.prototxt")
        save_net_proto(self.base, self.base_path)
        self.test_path = self.path("test.prototxt")   # the same net reading the test split
        save_net_proto(self.src.test_net, self.test_path)
        atomic_write(self.path("schedule.json"), (json.dumps(self.schedule_doc, indent=2) + "\n").encode())
        self.test_iter = solving.test_iters_for(self.base, info.split("val")[1])
        ref_in = {"ref_iters": self.ref_iters, "seed": a.seed, "snapshot_every": self.snapshot_every,
                  "weights": file_digest(a.weights) if a.weights else None}
        self.stage(2, "reference", self.reference, ref_in, ("data",))
        self.stage(3, "prune", self.prune, {"densities": sch.densities, "rounds": sch.rounds,
                                            "prune_iters": sch.iters_per_round, "lr_factor": self.lr_factor,
                                            "snapshot_every": self.snapshot_every}, ("reference",))
        self.stage(4, "quantize", self.quantize, {"bits": self.bits(), "init": a.init,
                                                  "quant_iters": sch.finetune_iters, "lr_factor": self.lr_factor,
                                                  "seed": a.seed, "centroid_grad": sch.centroid_grad}, ("prune",))
        self.stage(5, "encode", self.encode, {}, ("quantize",))
        self.stage(6, "decode", self.decode, {}, ("encode",))
        self.stage(7, "caffe_test", self.caffe_test, {}, ("decode",))
        controlled = bool(getattr(a, "dense_control", False))
        if controlled:
            self.stage(8, "control", self.control, {"rounds": sch.rounds, "prune_iters": sch.iters_per_round,
                                                    "quant_iters": sch.finetune_iters, "lr_factor": self.lr_factor},
                       ("reference",))
        else:
            print("[8/%d] control: skipped (--dense-control retrains the reference as long, uncompressed, "
                  "for comparison)" % len(STAGES))
        finals = ("reference", "prune", "quantize", "decode") + (("control",) if controlled else ())
        self.stage(9, "test", lambda: self.test(finals), {"models": list(finals)}, finals)
        self.stage(10, "report", self.report, {"control": controlled, "report_code": code_version(("report",)),
                                               "schedule": self.schedule_source}, STAGES[:-1] if controlled
                   else tuple(s for s in STAGES[:-1] if s != "control"))
        return self.state

    # ---------------------------------------------------------------- stages
    def reference(self):
        from caffe_dc.stages import reference as train

        model = self.path("reference", "%s.caffemodel" % self.src.file_stem)
        if self.args.weights:
            from caffe_dc.pycaffe.solving import check_matches

            check_matches(self.base, load_params(self.args.weights), self.args.weights)
            os.makedirs(os.path.dirname(model), exist_ok=True)
            shutil.copyfile(self.args.weights, model + ".tmp")
            os.replace(model + ".tmp", model)
            m = solving.evaluate(self.base_path, model, self.test_iter)
            print("  reference val accuracy %.2f%% (given weights)" % (100 * solving.accuracy_of(m)))
            return {"caffemodel": model, "accuracy": solving.accuracy_of(m), "accuracy_top5": m.get("accuracy_top5"),
                    "iters": 0, "source": self.args.weights}
        m = train.train_reference(self.spec.name, self.info, self.path("reference"), iters=self.ref_iters,
                                  seed=self.args.seed, test_every=max(self.ref_iters // 5, 1),
                                  progress=self.progress)
        print("  reference val accuracy %.2f%% after %d iterations" % (100 * m["accuracy"], m["iters"]))
        return {"caffemodel": m["caffemodel"], "accuracy": m["accuracy"], "iters": m["iters"]}

    def bits(self) -> Optional[Dict[str, int]]:
        """The schedule's bits for the layers it prunes (the others stay float and unquantized)."""
        if self.schedule.bits is None:
            return None
        return {n: b for n, b in self.schedule.bits.items() if n in self.schedule.densities}

    def prune(self):
        from caffe_dc.stages.prune import PruneConfig, run_pruning

        sch = self.schedule
        if not sch.densities:
            raise InputError("%s prunes no layer (its densities match none of %s)"
                             % (self.schedule_source, ", ".join(self.src.layer_types())))
        cfg = PruneConfig(densities=sch.final_densities(), rounds=sch.rounds, iters_per_round=sch.iters_per_round,
                          lr_factor=self.lr_factor, snapshot_every=self.snapshot_every,
                          round_densities=sch.densities)
        m = run_pruning(self.src, self.state["reference"]["caffemodel"], self.info, self.path("prune"), cfg,
                        progress=self.progress)
        print(_indent(m["table"]))
        written = load_solver_proto(self.path("prune", "round1", "retrain", "solver.prototxt"))
        return {"caffemodel": m["caffemodel"], "accuracy": m["accuracy"], "density": m["density"],
                "layers": m["layers"], "config": m["config"],
                "solver_changes": nets.solver_changes(self.src.solver, written)}

    def quantize(self):
        from caffe_dc.stages.quantize import QuantConfig, run_quantization

        cfg = QuantConfig(bits=self.bits(), init=self.args.init, iters=self.schedule.finetune_iters,
                          lr_factor=self.lr_factor, seed=self.args.seed,
                          snapshot_every=self.snapshot_every, centroid_grad=self.schedule.centroid_grad)
        m = run_quantization(self.src, self.state["prune"]["caffemodel"], self.info, self.path("quantize"), cfg,
                             progress=self.progress)
        print(_indent(m["table"]))
        return {"caffemodel": m["caffemodel"], "prototxt": m["prototxt"], "accuracy": m["accuracy"], "init": m["init"],
                "accuracy_before_finetune": m["accuracy_before_finetune"],
                "bits": {n: v["bits"] for n, v in m["layers"].items()}}

    def control(self):
        """Retrain the dense reference exactly as the compressed net was retrained: one retraining
        solver restart per pruning round, then one for the fine-tuning, same iterations, no masks.
        Retraining at a lower learning rate can lift a net by itself; this measures how much."""
        from caffe_dc.pycaffe import rewrite
        from caffe_dc.pycaffe.retraining import retrain

        sp = rewrite.retrain_solver(self.src.solver_for(self.base_path, self.path("control", "snap")), self.lr_factor)
        sch = self.schedule
        pieces = [("round %d" % r, sch.iters_per_round) for r in range(1, sch.rounds + 1)]
        pieces.append(("fine-tune", sch.finetune_iters))
        current, result = self.state["reference"]["caffemodel"], {}
        for i, (label, iters) in enumerate(pieces, 1):
            done = self.path("control", "piece%d.caffemodel" % i)
            meta = self.path("control", "piece%d.json" % i)
            if os.path.isfile(done) and os.path.isfile(meta):
                with open(meta) as f:
                    result = json.load(f)
            else:
                hist = retrain(self.base_path, sp, current, self.path("control", "piece%d" % i), iters, self.test_iter,
                               done, desc="dense control, %s" % label, snapshot_every=self.snapshot_every,
                               progress=self.progress)
                result = {"piece": label, "iters": iters, "accuracy": solving.accuracy_of(hist[-1]),
                          "accuracy_top5": hist[-1].get("accuracy_top5")}
                atomic_write(meta, json.dumps(result).encode())
            print("  dense control, %s: val accuracy %.2f%% after %d iterations" % (label, 100 * result["accuracy"], iters))
            current = done
        return {"caffemodel": current, "accuracy": result["accuracy"], "accuracy_top5": result.get("accuracy_top5"),
                "iters": sum(n for _, n in pieces), "restarts": len(pieces)}

    def encode(self):
        from caffe_dc.base.tables import text_table
        from caffe_dc.report.run_report import layer_headers
        from caffe_dc.report.storage_table import storage_rows, summary_lines

        params = load_params(self.state["quantize"]["caffemodel"])
        net = self.src.name if self.src.paper else None
        meta = {"dataset": self.info.name, "preset": self.preset_name}
        if not self.src.paper:
            meta["paper_net"] = None   # its own name must not send anyone to the paper's tables
        data, stats = encoding.encode_params(params, self.src.name, None, meta=meta)
        out = self.path("model.dcz")
        atomic_write(out, data)
        atomic_write(self.path("storage.json"), json.dumps(stats.to_dict(), indent=2).encode())
        print(_indent(text_table(layer_headers(net), storage_rows(stats, net))))
        for line in summary_lines(stats, net):
            print("  " + line)
        t = stats.totals()
        return {"blob": out, "bytes": len(data), "rate_pq": t["rate_pq"], "rate_pqh": t["rate_pqh"],
                "original_bytes": t["original_bits"] // 8}

    def decode(self):
        from caffe_dc.pycaffe.caffemodel import save_params

        params, _, _ = encoding.decode_bytes(encoding.read_blob(self.state["encode"]["blob"]))
        out = self.path("decoded.caffemodel")
        save_params(params, out, name=self.src.name)
        quant = {k: v for k, v in load_params(self.state["quantize"]["caffemodel"]).items() if not is_helper(k)}
        n = encoding.verify_equal(quant, load_params(out), "decoded.caffemodel vs the quantized model")
        print("  %s: %d values, bit-identical to the quantized model" % (out, n))
        return {"caffemodel": out, "values_checked": n, "bit_exact": True}

    def caffe_test(self):
        """Caffe's own binary, on the test split, each image once (the TEST batch divides its size)."""
        _, n_test = self.info.split("test")
        iters = solving.test_iters_for(load_net_proto(self.test_path), n_test)
        qproto = self.path("quantize", "test.prototxt")
        save_net_proto(nets.with_test_split(load_net_proto(self.state["quantize"]["prototxt"]),
                                            *self.info.split("test")), qproto)
        dec = solving.caffe_cli_test(self.test_path, self.state["decode"]["caffemodel"], iters)
        qnt = solving.caffe_cli_test(qproto, self.state["quantize"]["caffemodel"],
                                     solving.test_iters_for(load_net_proto(qproto), n_test))
        print("  caffe test (test split, %d images): decoded %.4f, quantized %.4f" % (n_test, dec["accuracy"],
                                                                                     qnt["accuracy"]))
        if dec["accuracy"] != qnt["accuracy"]:
            raise InputError("decoded model scores %.6f under `caffe test` but the quantized one %.6f"
                             % (dec["accuracy"], qnt["accuracy"]))
        return {"decoded": dec, "quantized": qnt, "accuracy": dec["accuracy"]}

    def test(self, models) -> dict:
        """Every model on the test split, each image exactly once; per-image results for paired statistics."""
        import numpy as np

        from caffe_dc.algorithms import stats

        _, n_test = self.info.split("test")
        out = {"n": n_test, "models": {}}
        per = {}
        for name in models:
            r = solving.score_exact(self.test_path, self.state[name]["caffemodel"], n_test)
            per[name] = r.pop("per_image")
            per5 = r.pop("per_image_top5", None)
            np.save(self.path("test", "%s_correct.npy" % name), np.packbits(per[name]))
            r["wilson"] = stats.wilson(r["correct"], r["n"])
            if per5 is not None:
                r["wilson_top5"] = stats.wilson(r["correct_top5"], r["n_top5"])
            out["models"][name] = r
            print("  %-9s %d/%d = %.2f%% (95%% CI %.2f-%.2f%%)" % (name, r["correct"], r["n"], 100 * r["accuracy"],
                                                                  100 * r["wilson"][0], 100 * r["wilson"][1]))
        caffe_acc = self.state["caffe_test"]["accuracy"]
        if abs(caffe_acc - out["models"]["decode"]["accuracy"]) > 1e-4:
            raise InputError("`caffe test` scored the decoded model %.6f but the exact count is %d/%d"
                             % (caffe_acc, out["models"]["decode"]["correct"], n_test))
        out["paired"] = {"reference->compressed": stats.paired(per["reference"], per["decode"])}
        if "control" in per:
            out["paired"]["control->compressed"] = stats.paired(per["control"], per["decode"])
        for key, c in out["paired"].items():
            print("  %s: %+.2f pp (95%% CI %+.2f to %+.2f), %d vs %d discordant images, McNemar p = %.3g"
                  % (key, 100 * c["diff"], 100 * c["diff_low"], 100 * c["diff_high"], c["only_a"], c["only_b"],
                     c["mcnemar_p"]))
        return out

    def report(self):
        from caffe_dc.report.run_report import write_report

        path = write_report(self)
        print("  wrote %s" % path)
        return {"report": path}


def run_seeds(net: str, preset: str, out: Optional[str], args, n: int) -> str:
    """The same run with ``n`` seeds (seed, seed + 1, ...); writes seeds.md / seeds.json beside them.

    One seed's accuracy change rests on a few hundred discordant images; the
    spread over seeds shows how much of it is the luck of one training run.
    Returns the summary's path.
    """
    import copy

    from caffe_dc.algorithms import stats
    from caffe_dc.base.tables import markdown_table

    rows, runs = [], []
    for k in range(n):
        a = copy.copy(args)
        a.seed = args.seed + k
        pl = Pipeline(net, preset, os.path.join(out, "seed-%d" % a.seed) if out else None, a)
        pl.run()
        with open(os.path.join(pl.run_dir, "metrics.json")) as f:
            m = json.load(f)
        runs.append(m)
        rows.append([a.seed, pl.run_dir, "%.1fx" % m["compression"], "%+.2f" % m["accuracy_delta_pp"],
                     "%+.2f" % (100 * m["paired"]["control->compressed"]["diff"]) if "control->compressed"
                     in m["paired"] else "–"])
    folder = out or os.path.commonpath([os.path.dirname(r[1]) for r in rows])
    summary = {"net": net, "seeds": [r[0] for r in rows], "command": command_line()}
    for key, values in (("compression", [m["compression"] for m in runs]),
                        ("accuracy_delta_pp", [m["accuracy_delta_pp"] for m in runs])):
        summary[key] = dict(zip(("mean", "sd"), stats.mean_sd(values)), values=values)
    lines = ["# %s over %d seeds" % (net, n), "", "Made by `%s`." % summary["command"], "",
             markdown_table(["seed", "run", "rate", "Δ acc. vs reference (pp)", "Δ acc. vs control (pp)"], rows), "",
             "Rate %.1fx ± %.1f, accuracy change %+.2f ± %.2f pp (mean ± sd over seeds)."
             % (summary["compression"]["mean"], summary["compression"]["sd"],
                summary["accuracy_delta_pp"]["mean"], summary["accuracy_delta_pp"]["sd"]), ""]
    os.makedirs(folder, exist_ok=True)
    atomic_write(os.path.join(folder, "seeds.json"), json.dumps(summary, indent=2).encode())
    path = os.path.join(folder, "seeds.md")
    atomic_write(path, "\n".join(lines).encode())
    return path


def compress_run_dir(src, args) -> str:
    """runs/compress-<net>-<hash of the solver, weights, schedule and options>."""
    keys = ("schedule", "test_lmdb", "density", "bits", "init", "seed", "rounds", "prune_iters", "quant_iters")
    what = {k: getattr(args, k, None) for k in keys}
    what["solver"] = os.path.abspath(args.solver)
    what["weights"] = file_digest(args.weights) if getattr(args, "weights", None) else None
    return os.path.join("runs", "compress-%s-%s" % (src.file_stem, fingerprint(what)[:8]))


def lmdb_identity(path: str) -> list:
    """Size and modification time of an LMDB's data file: a rewritten LMDB is a different data set."""
    f = os.path.join(path, "data.mdb")
    st = os.stat(f if os.path.isfile(f) else path)
    return [st.st_size, int(st.st_mtime)]


def default_run_dir(net: str, data: str, preset: str, args) -> str:
    """runs/<net>-<data>[-quick][-<hash of the options that change results>]: other settings, other folder."""
    name = "%s-%s%s" % (net, data, "-quick" if preset == "quick" else "")
    keys = ("schedule", "density", "bits", "init", "seed", "weights", "ref_iters", "rounds", "prune_iters",
            "quant_iters", "limit", "val", "batch", "test_batch", "crop")
    defaults = {"init": "linear", "seed": 1}
    changed = {k: getattr(args, k, None) for k in keys if getattr(args, k, None) not in (None, defaults.get(k))}
    if changed:
        name += "-" + fingerprint(changed)[:8]
    return os.path.join("runs", name)


def _indent(text: str, pad: str = "  ") -> str:
    return "\n".join(pad + l for l in text.splitlines())


def command_line() -> str:
    return shlex.join(["caffe-dc"] + sys.argv[1:])
