"""``caffe-dc reproduce`` and ``caffe-dc compress``: walk the stage table, resumably.

One implementation for every net. ``reproduce`` runs one of the paper's nets
(a ``nets.registry_source`` on LMDBs made from IDX files, its schedule from
``zoo/schedules/<net>-<preset>.json``); ``compress`` runs a user's own
solver, train_val and caffemodel (a ``nets.user_source``: its TRAIN Data
layer trains, its TEST Data layer is the validation split, ``--test-lmdb``
the held-out test split; the schedule from ``--schedule`` or the default).

The stages and what they read are declared in ``pipeline.stage_table``; their
bodies live in ``stages/``. This module resolves the run (data, net,
schedule, folder), then walks the table. ``pipeline.json`` records each
finished stage with a fingerprint of its resolved inputs, of the stages it
reads and of its code; a rerun skips a stage only when that fingerprint is
unchanged, and otherwise says what changed and redoes it (and so every stage
that reads it). The retraining stages resume from their last round or
snapshot, so a kill loses at most the iterations since the last snapshot.

Everything chosen or watched during the run uses the validation split; the
test split is read only by the ``caffe_test`` and ``test`` stages.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import sys
import time
from typing import Dict, NamedTuple, Optional, Tuple

from caffe_dc.algorithms import schedule as schedules
from caffe_dc.algorithms.sensitivity import check_reachable
from caffe_dc.base import layer_policy, runlock
from caffe_dc.base.errors import InputError
from caffe_dc.base.limits import MAX_SEED
from caffe_dc.base.fileio import atomic_write
from caffe_dc.base.fingerprint import code_version, file_digest, fingerprint
from caffe_dc.base.params import expand
from caffe_dc.pipeline.stage_table import FOLDERS, NAMES, RECORDS, STAGES, Stage
from caffe_dc.pycaffe import datasets, nets, solving, validate
from caffe_dc.codec.net_shapes import check_params
from caffe_dc.pycaffe.caffemodel import load_net_proto, load_params, load_solver_proto, save_net_proto
from caffe_dc.stages.run import Run, RunOptions

IMAGENET_NETS = ("alexnet", "vgg16")


def resolve_schedule(src, path: Optional[str], opts: RunOptions) -> Tuple[schedules.Schedule, str, dict]:
    """The schedule a run follows: ``path``'s file, else the default for a net of one's own, with the
    command line's overrides (--rounds, --prune-iters, --quant-iters, --ref-iters, --reconstruct, --density, --bits)
    applied to the document before it is validated against the net's prunable layers; --target-rate and
    --max-drop replace its budget. Returns
    (schedule, where it came from, the resolved document)."""
    if path:
        doc = schedules.read_document(path)
        where = path
    else:
        doc = schedules.default_document(int(src.solver.max_iter))
        where = "the default schedule (no --schedule given)"
    if not isinstance(doc, dict):
        raise InputError("%s: a schedule is a JSON object" % where)
    doc = dict(doc)
    changed = []   # what the command line changed, so that the file's description is not read as the run's
    for key, given in (("rounds", opts.rounds), ("iters_per_round", opts.prune_iters),
                       ("finetune_iters", opts.quant_iters), ("reference_iters", opts.ref_iters),
                       ("reconstruct", None if opts.reconstruct is None else {"images": opts.reconstruct})):
        if given is not None:
            doc[key] = given
            changed.append("%s %s" % (key, given))
    aims = {"target_rate": opts.target_rate, "max_drop_pp": opts.max_drop}
    changed += ["%s %g" % (k, v) for k, v in aims.items() if v is not None]
    if any(v is not None for v in aims.values()):
        # a budget on the command line replaces the file's aim (and its densities, which it would choose)
        recipe = {k: v for k, v in _object(doc, "budget", where).items() if k not in aims}
        doc["budget"] = dict(recipe, **{k: v for k, v in aims.items() if v is not None})
        doc.pop("densities", None)
        loop = doc.get("closed_loop") if isinstance(doc.get("closed_loop"), dict) else {}
        if opts.max_drop:   # the largest rate within the drop, as measured after retraining
            cap = schedules.number(loop.get("max_rounds") or 0, "%s: closed_loop max_rounds" % where, integer=True,
                                   lo=0, hi=schedules.MAX_ROUNDS)
            doc["closed_loop"] = schedules.search_loop(opts.max_drop, max(schedules.SEARCH_ROUNDS, cap))
        elif loop.get("past_targets"):   # a target rate is where the loop stops
            doc["closed_loop"] = {k: v for k, v in loop.items() if k != "past_targets"}
    for key, given in (("densities", opts.density), ("bits", opts.bits)):
        if given:
            # a bare command-line value is meant for every layer, so it beats the file's [conv]/[fc] keys
            doc[key] = dict(_object(doc, key, where), **expand(given, list(src.layer_types())))
            changed.append("%s %s" % (key, ",".join("%s=%s" % kv for kv in sorted(given.items()))))
    if changed and isinstance(doc.get("description"), str):
        doc["description"] += "; changed on the command line: " + ", ".join(changed)
    return schedules.from_dict(doc, src.layer_types(), where=where), where, doc


def _object(doc: dict, key: str, where: str) -> dict:
    """``doc[key]`` where the command line adds to it: an object (absent: empty), else one line."""
    v = doc.get(key) or {}
    if not isinstance(v, dict):
        raise InputError("%s: %s must be an object, got %s" % (where, key, schedules.shown(v)))
    return v


class Checked(NamedTuple):
    """A run resolved and checked (``Pipeline.check``), nothing written yet."""
    src: object                  # pycaffe.nets.NetSource
    data: Optional[datasets.DataPlan]   # MNIST-format data still to write (None: LMDBs given as they are)
    info: object                 # datasets.DataInfo
    preset: str
    schedule: schedules.Schedule
    where: str
    doc: dict
    snapshot_every: int
    test_iter: int
    run_dir: str


class Pipeline:
    def __init__(self, opts: RunOptions, progress: bool = True):
        self.opts = opts
        self.progress = progress
        self.command = command_line()
        self.state: Dict[str, dict] = {}
        self.run_dir = opts.out
        self.lock: Optional[runlock.RunLock] = None
        self._checked: Optional[Checked] = None

    def _net(self):
        """(net, preset): the user's net on its own LMDBs, or one of the paper's as shipped (its layers and
        solver, not yet bound to data: the schedule is checked before any data is read)."""
        o = self.opts
        if o.solver:
            return nets.user_source(o.solver, o.test_lmdb), "custom"
        spec = nets.get(o.net)
        preset = o.preset
        if preset != "full":
            try:
                schedules.builtin(spec.name, preset)
            except InputError:   # e.g. no quick preset for an ImageNet net
                preset = "full"
        return nets.NetSource(spec.name, load_net_proto(spec.train_val), None, load_solver_proto(spec.solver), None,
                              paper=True), preset

    def _data(self, net):
        """(net source, data plan or None, data info): a paper net bound to ImageNet LMDBs or to MNIST-format
        data (planned: checked, its LMDBs not yet written); a user's net as it is."""
        o = self.opts
        if o.solver:
            return net, None, net.info
        if net.name in IMAGENET_NETS:
            if not (o.imagenet_train and o.imagenet_val and o.weights):
                raise InputError("reproduce %s needs --imagenet-train LMDB --imagenet-val LMDB --weights REF.caffemodel "
                                 "(no ImageNet here? `caffe-dc storage %s` reproduces the storage figures)"
                                 % (net.name, net.name))
            info = datasets.imagenet(o.imagenet_train, o.imagenet_val, o.batch, o.test_batch, o.crop)
            return nets.registry_source(net.name, info), None, info
        d = o.data
        data = datasets.plan(data=d.data, name=d.name, idx_dir=d.idx, download=d.download, out_root=d.data_root,
                             quiet=True, limit=d.limit, val=d.val)
        return nets.registry_source(net.name, data.info, planned=True), data, data.info

    def check(self) -> Checked:
        """Everything that can be checked without training, with nothing written: the net (at least one
        prunable layer), the schedule with the command line's overrides, the data, the weights against
        the net, a target rate against what the net's sizes allow. A refused run leaves every file as it was."""
        if self._checked is not None:
            return self._checked
        net, preset = self._net()
        if not net.layer_types():
            raise InputError("%s has no prunable layer (%s): nothing to compress"
                             % (net.name, ", ".join(layer_policy.PRUNABLE_TYPES)))
        o = self.opts
        path = o.schedule if (o.schedule or o.solver) else schedules.builtin(net.name, preset)
        sch, where, doc = resolve_schedule(net, path, o)
        if not sch.budget and not sch.densities:
            raise InputError("%s prunes no layer (its densities match none of %s)"
                             % (where, ", ".join(net.layer_types())))
        src, data, info = self._data(net)
        # the Data layers read as Input layers of the records' shape: Caffe need not open an LMDB (its
        # lock file would change) nor the planned ones exist
        shapes = validate.data_shapes(src.train_val,
                                      data.image_shape if data else datasets.datum_shape(info.train_lmdb))
        if o.weights:
            check_params(shapes, load_params(o.weights), o.weights)
        target = (sch.budget or {}).get("target_rate")
        if target is not None:
            check_reachable(target, shapes, src.layer_types(), sch.bits or {})
        snapshot_every = sch.snapshot_every or (int(src.solver.snapshot) or None) or max(1, min(1000, sch.iters_per_round))
        test_iter = solving.test_iters_for(src.train_val, info.split("val")[1])
        run_dir = self.run_dir or default_run_dir(src, info, preset, o)
        self._checked = Checked(src, data, info, preset, sch, where, doc, snapshot_every, test_iter, run_dir)
        return self._checked

    def prepare(self) -> Run:
        """Check the run (``check``), then lock its folder (``base.runlock``: a run into a folder another run
        holds is refused at once), make its data, and write the nets and schedule it runs with."""
        c = self.check()
        self.run_dir = c.run_dir
        self.lock = runlock.acquire(self.run_dir, self.command)
        if c.data is not None:
            c.data.write()
        self._load_state()
        r = Run(opts=self.opts, src=c.src, info=c.info, preset=c.preset, declared=c.schedule, declared_doc=c.doc,
                schedule_source=c.where, run_dir=self.run_dir, command=self.command, snapshot_every=c.snapshot_every,
                test_iter=c.test_iter, state=self.state, stages=NAMES, progress=self.progress, folders=FOLDERS,
                records=RECORDS)
        save_net_proto(c.src.train_val, r.base_path)
        save_net_proto(c.src.test_net, r.test_path)
        atomic_write(r.path("schedule.json"), (json.dumps(c.doc, indent=2) + "\n").encode())
        return r

    def run(self) -> dict:
        try:
            r = self.prepare()
            for i, stage in enumerate(STAGES, 1):
                label = "[%d/%d] %s" % (i, len(STAGES), stage.label)
                if not stage.wanted(r.for_stage(stage.name, stage.reads)):
                    print("%s: skipped (%s)" % (label, stage.module.SKIPPED))
                    continue
                self._stage(r, stage, label)
        finally:
            if self.lock is not None:
                self.lock.release()
        return self.state

    def _fingerprint(self, r: Run, stage: Stage, inputs: dict) -> str:
        after = [self.state.get(a, {}).get("fingerprint") if self._ran(r, a) else None for a in stage.reads]
        return fingerprint({"inputs": inputs, "after": after, "code": code_version(stage.code_parts)})

    @staticmethod
    def _ran(r: Run, name: str) -> bool:
        """A stage this run walked (an optional stage left out now does not count, even if it ran before)."""
        return next(s for s in STAGES if s.name == name).wanted(r)

    def _stage(self, r: Run, stage: Stage, label: str) -> dict:
        """Run ``stage`` unless it finished before with the same fingerprint."""
        r = r.for_stage(stage.name, stage.reads)
        inputs = stage.module.stage_inputs(r)
        fp = self._fingerprint(r, stage, inputs)
        old = self.state.get(stage.name)
        if old and old.get("done"):
            if old.get("fingerprint") == fp:
                print("%s: done before with the same inputs, skipping" % label)
                return old
            changed = sorted(k for k in set(inputs) | set(old.get("inputs", {}))
                             if old.get("inputs", {}).get(k) != inputs.get(k))
            why = ("settings changed: " + ", ".join(changed)) if changed else "an earlier stage or the code changed"
            print("%s: %s; redoing it" % (label, why))
        print("%s ..." % label)
        if stage.folder:
            self._claim(r.folder(), fp)
        self.state.pop(stage.name, None)
        t0 = time.time()
        out = stage.module.run_stage(r)
        out = dict(out.as_dict() if hasattr(out, "as_dict") else out or {})
        out.update(done=True, seconds=round(time.time() - t0, 1), fingerprint=fp, inputs=inputs)
        self.state[stage.name] = out
        self._save_state()
        return out

    def _load_state(self):
        p = os.path.join(self.run_dir, "pipeline.json")
        if os.path.isfile(p):
            with open(p) as f:
                self.state.update(json.load(f))

    def _save_state(self):
        atomic_write(os.path.join(self.run_dir, "pipeline.json"), json.dumps(self.state, indent=2).encode())

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


def run_seeds(opts: RunOptions, n: int) -> str:
    """The same run with ``n`` seeds (seed, seed + 1, ...); writes seeds.md / seeds.json beside them
    (``report.seeds``). Returns the summary's path."""
    from caffe_dc.report import seeds

    last = opts.seed + n - 1
    if last > MAX_SEED:
        raise InputError("--seed %d with --seeds %d would run seed %d, above Caffe's largest seed %d"
                         % (opts.seed, n, last, MAX_SEED))
    runs = [Pipeline(opts.replace(seed=s, out=os.path.join(opts.out, "seed-%d" % s) if opts.out else None))
            for s in range(opts.seed, last + 1)]
    runs[0].check()     # the seeds differ in nothing a check reads: a refusal comes before any write
    run_dirs = []
    # the summary's folder is one run's too: a second `--seeds` run into it is refused at once
    with runlock.acquire(opts.out, command_line()) if opts.out else contextlib.nullcontext():
        for pl in runs:
            pl.run()
            run_dirs.append(pl.run_dir)
        records = seeds.records_of([os.path.join(d, "metrics.json") for d in run_dirs])
        folder = opts.out or os.path.commonpath([os.path.dirname(d) for d in run_dirs])
        return seeds.write(folder, records, run_dirs, command_line(), opts.net or opts.solver)


def default_run_dir(src, info, preset: str, opts: RunOptions) -> str:
    """runs/<net>-<data>[-quick][-<hash of the settings that change results>] for the paper's nets;
    runs/compress-<net>-<hash of the solver, weights and settings> for a net of one's own."""
    changed = opts.result_settings()
    if opts.solver:
        changed["solver"] = os.path.abspath(opts.solver)
        changed["weights"] = file_digest(opts.weights)
        return os.path.join("runs", "compress-%s-%s" % (src.file_stem, fingerprint(changed)[:8]))
    name = "%s-%s%s" % (src.name, info.name, "-quick" if preset == "quick" else "")
    if changed:
        name += "-" + fingerprint(changed)[:8]
    return os.path.join("runs", name)


def command_line() -> str:
    return shlex.join(["caffe-dc"] + sys.argv[1:])
