"""The report of a ``reproduce`` run: report.md, PNG figures and metrics.json."""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os

from caffe_dc.codec import model as codec
from caffe_dc.codec import frontend
from caffe_dc.report import figures
from caffe_dc.base import mnist, paper
from caffe_dc.base.blobs import CODEBOOK, blob_name
from caffe_dc.base.fileio import atomic_write
from caffe_dc.pycaffe.caffemodel import load_params
from caffe_dc.codec.storage_table import human, layer_headers, storage_rows
from caffe_dc.base.tables import markdown_table, pct
from caffe_dc.algorithms import prune_plan, stats
from caffe_dc.base.provenance import blas_note, environment
from caffe_dc.stages.run import Run, RunRecord, StageRecord

FULL_SIZES = {"fashion-mnist": (60000, 10000), "mnist": (60000, 10000)}   # (train, test) as published


def dataset_note(info) -> str:
    """Name the data set with its sizes; "as in the paper" only for the paper's own, whole data set."""
    n_train_all = info.n_train + (info.n_val or 0)
    sizes = "%d training images (%d for training, %d held out for validation) and %d test images" % (
        n_train_all, info.n_train, info.n_val or 0, info.n_test) if info.has_val else \
        "%d training and %d validation/test images" % (info.n_train, info.n_test)
    canonical = mnist.is_canonical(info.checksums)
    whole = FULL_SIZES.get("mnist" if canonical else info.name) == (n_train_all, info.n_test)
    if info.name == "fashion-mnist":
        what = ("Fashion-MNIST (Debian's `dataset-fashion-mnist`)%s: same format as MNIST but a much harder task "
                "(a LeNet reaches ~89-91%% rather than ~99%%), so accuracies are not comparable with the paper's "
                "MNIST figures; the comparison that matters is reference vs compressed on the same images."
                % ("" if whole else ", a subset"))
    elif canonical and whole:
        what = "MNIST, the paper's data set: the four published files, md5-checked, from %s." % info.source
    else:
        what = "%s (MNIST format%s), not the paper's data set." % (info.name, "" if whole else ", a subset")
    return "%s %s." % (what, sizes[0].upper() + sizes[1:])


def user_data_note(info) -> str:
    """Where a user's net read its splits, with their sizes; says so when no held-out test split was given."""
    train = "training: the TRAIN Data layer's %s (%d images)" % (info.train_lmdb, info.n_train)
    if info.has_val:
        return ("Data: %s; validation: the TEST Data layer's %s (%d images); test: `--test-lmdb` %s (%d images), "
                "held out from every choice." % (train, info.val_lmdb, info.n_val, info.test_lmdb, info.n_test))
    return ("Data: %s; validation = test: the TEST Data layer's %s (%d images). **No separate held-out test split "
            "was given** (`--test-lmdb`), so the test figures below are read on the same images every choice was "
            "made on." % (train, info.test_lmdb, info.n_test))


def _kn(r) -> str:
    """'9012/10000 = 90.12% [89.53, 90.69]': exact count, percentage, Wilson 95% interval."""
    lo, hi = r["wilson"]
    return "%d/%d = %.2f%% [%.2f, %.2f]" % (r["correct"], r["n"], 100 * r["accuracy"], 100 * lo, 100 * hi)


def _paired_line(label: str, c) -> str:
    return ("%s: **%+.2f pp**, 95%% CI [%+.2f, %+.2f] pp (Tango's score interval; %d images right only before, %d only "
            "after; McNemar exact p = %.3g) — %s (docs/statistics.md)."
            % (label, 100 * c["diff"], 100 * c["diff_low"], 100 * c["diff_high"], c["only_a"], c["only_b"],
               c["mcnemar_p"], stats.claim(c)))


def _sizes(stats) -> list:
    """Bytes after each stage: dense, pruned (float32 values + relative index), P+Q, P+Q+H."""
    t = stats.totals()
    q = stats.quantized
    raw_bits = 32 * t["raw_values"]
    pruned_bits = sum(b.entries * (32 + b.index_bits) for b in q) + raw_bits
    return [t["original_bits"] / 8, pruned_bits / 8, t["pq_bits"] / 8, t["file_bytes"]]


def _pp_change(before: float, after: float) -> float:
    """Accuracy change in percentage points. Accuracies are float32 means: the last bits are
    rounded off, so that equal accuracies read +0.00, not -0.00."""
    return round(100 * (after - before), 6) + 0.0


def _figures(rec: RunRecord, layers: list, sizes: list) -> dict:
    s, d, net = rec.records, rec.run_dir, rec.net
    ref = load_params(s["reference"].caffemodel)
    pruned = load_params(s["prune"].caffemodel)
    figs = {"weights": figures.weight_histograms({n: ref[n].blobs[0] for n in layers},
                                                 {n: pruned[n].blobs[0] for n in layers},
                                                 os.path.join(d, "weights_before_after_pruning.png"),
                                                 "%s: weights before and after pruning" % net)}
    with open(os.path.join(rec.folders["quantize"], "clusters.json")) as f:
        clusters = json.load(f)
    qp = load_params(s["quantize"].caffemodel)
    figs["codebook"] = figures.codebooks({n: pruned[n].blobs[0] for n in layers},
                                         {n: clusters[n]["codebook_init"] for n in layers},
                                         {n: qp[blob_name(n, CODEBOOK)].blobs[0] for n in layers},
                                         os.path.join(d, "codebook.png"),
                                         "%s: centroids at %s init and after fine-tuning"
                                         % (net, s["quantize"].init))
    figs["waterfall"] = figures.waterfall(["dense", "pruned", "+quantized", "+Huffman"], sizes,
                                          os.path.join(d, "size_waterfall.png"), "%s: storage by stage" % net)
    return figs


def _table1(rec: RunRecord, t: dict, test: dict) -> str:
    """Table 1's row for this run, beside the paper's for one of the paper's nets."""
    p1 = paper.TABLE1[rec.net] if rec.paper else None
    ref_acc, final_acc = test["reference"]["accuracy"], test["decode"]["accuracy"]
    head = ["", "top-1 error ref → compressed", "parameters ref → compressed", "compress rate"]
    ours = ["caffe-dc (%s)" % rec.info.name, "%s → %s" % (pct(1 - ref_acc, 2), pct(1 - final_acc, 2)),
            "%s → %s" % (human(t["original_bits"] / 8), human(t["file_bytes"])), "**%.1fx**" % (1 / t["rate_pqh"])]
    top5_ref = test["reference"].get("accuracy_top5")
    top5 = test["decode"].get("accuracy_top5")
    rows = [ours]
    if p1 is not None:
        paper_row = ["paper (%s)" % p1.dataset, "%s → %s" % (pct(p1.top1_ref, 2), pct(p1.top1, 2)),
                     "%s → %s" % (p1.params_ref, p1.params), "%dx" % p1.rate]
        rows.insert(0, paper_row)
    if (p1 is not None and p1.top5 is not None) or (p1 is None and top5 is not None):
        head.insert(2, "top-5 error ref → compressed")
        if p1 is not None:
            paper_row.insert(2, "%s → %s" % (pct(p1.top5_ref, 2), pct(p1.top5, 2)))
        ours.insert(2, "%s → %s" % (pct(None if top5_ref is None else 1 - top5_ref, 2),
                                    pct(None if top5 is None else 1 - top5, 2)))
    return markdown_table(head, rows)


def _by_stage(rec: RunRecord, test: dict, sizes: list) -> str:
    s = rec.records
    control = s.get("control") if "control" in test else None
    control_rows = [["dense control: reference retrained %d iterations in %d restarts, uncompressed"
                     % (control.iters, control.restarts), pct(control.accuracy, 2), _kn(test["control"]),
                     human(sizes[0]), "1x"]] if control else []
    return markdown_table(
        ["stage", "val accuracy", "test: correct/n = accuracy [Wilson 95%]", "size", "vs dense"],
        [["reference", pct(s["reference"].accuracy, 2), _kn(test["reference"]), human(sizes[0]), "1x"]]
        + control_rows + [
         ["pruned + retrained (%s kept)" % pct(s["prune"].density, 1), pct(s["prune"].accuracy, 2),
          _kn(test["prune"]), human(sizes[1]), "%.1fx" % (sizes[0] / sizes[1])],
         ["quantized, before fine-tuning", pct(s["quantize"].accuracy_before_finetune, 2), "–", human(sizes[2]),
          "%.1fx" % (sizes[0] / sizes[2])],
         ["quantized + fine-tuned", pct(s["quantize"].accuracy, 2), _kn(test["quantize"]), human(sizes[2]),
          "%.1fx" % (sizes[0] / sizes[2])],
         ["Huffman-coded blob, decoded", "–", _kn(test["decode"]), human(sizes[3]), "%.1fx" % (sizes[0] / sizes[3])]])


def _provenance(rec: RunRecord, env: dict) -> list:
    return ["- command: `%s`" % rec.command,
            "- commit: %s%s" % (env.get("git_commit") or "unknown",
                                " (uncommitted changes)" if env.get("git_dirty") else ""),
            "- schedule: %s (the document as the run followed it: below, under Settings)" % rec.schedule_source,
            "- net: %s" % ", ".join("%s %s" % kv for kv in rec.origin),
            "- seeds: training and k-means %d; validation split %d" % (rec.seed, 0),
            "- data: %s, train %d / val %s / test %d images" % (rec.info.name, rec.info.n_train, rec.info.n_val,
                                                                 rec.info.n_test),
            "- environment: CPU %s (%s cores), BLAS %s (%s threads); Caffe %s, numpy %s, scikit-learn %s, protobuf %s"
            % (env.get("cpu"), env.get("cpus"), env.get("blas"), env.get("blas_threads"), env.get("caffe"),
               env.get("numpy"), env.get("scikit-learn"), env.get("protobuf")),
            "- BLAS kernels: %s" % blas_note(env)]


def _stage_list(rec: RunRecord) -> str:
    """The stage table as this run walked it: what each stage did, in order."""
    rows = []
    for i, name in enumerate(rec.stages, 1):
        st = rec.state.get(name)
        if name == "report":   # this very stage: being written now
            rows.append([i, "report", "this file", "–", "–"])
            continue
        ran = st is not None and (name != "control" or "control" in getattr(rec.records.get("test"), "models", {}))
        rows.append([i, name.replace("_", " "), "done" if ran else "skipped",
                     "%.1f" % st["seconds"] if ran and "seconds" in st else "–",
                     "`%s`" % st["fingerprint"] if ran and "fingerprint" in st else "–"])
    return markdown_table(["#", "stage", "", "seconds", "fingerprint"], rows)


def _loop_outcome(loop: dict) -> str:
    if loop.get("past_targets"):
        where = ("%.2f times as far as the chosen densities (each layer keeps its chosen density ** %.2f)"
                 % (loop["progress"], loop["progress"]) if loop["progress"] >= 1.0 else
                 "%s of the way to the chosen densities, which did not hold" % pct(loop["progress"]))
        return ("; it searched for the largest rate within the drop, past the chosen densities if they held, and "
                "keeps round %d: %s" % (loop["held_round"], where))
    if loop.get("reached_targets", True):
        return ""
    return ", **short of the targets**: the file holds the last round that held"


def _rounds(rec: RunRecord) -> list:
    """Pruning round by round, planned against measured (the closed loop's own record, else the open plan's)."""
    prune = rec.records["prune"]
    ref = rec.records["reference"].accuracy
    if prune.rounds:
        loop = prune.closed_loop or {}
        table = prune_plan.rounds_table(prune.rounds)
        figure = loop.get("reference_figure") or {"accuracy": ref, "what": "the reference's validation accuracy"}
        note = ("Closed loop (`closed_loop` %s): each round's drop after retraining, measured against %s (%s) and "
                "judged by the upper bound of its 95%% paired interval on validation, re-planned the rounds left; "
                "it stopped on `%s`%s."
                % (json.dumps({k: loop[k] for k in ("max_drop_pp", "max_rounds", "past_targets") if k in loop}),
                   figure["what"], pct(figure["accuracy"], 2), loop.get("stopped"), _loop_outcome(loop)))
    else:
        with open(os.path.join(rec.folders["prune"], "metrics.json")) as f:
            done = json.load(f)["rounds"]
        weights = {n: v["weights"] for n, v in prune.layers.items() if n != "total"}
        plan = prune.config.get("round_densities") or {}
        planned = [sum(weights[n] * (plan[n][i] if n in plan else 1.0) for n in weights) / sum(weights.values())
                   if plan else None for i in range(len(done))]
        table = markdown_table(
            ["round", "planned density", "density", "val before retraining", "val after", "drop vs reference (pp)"],
            [[m["round"], pct(planned[i], 2) if planned[i] is not None else "–", pct(m["density"], 2),
              pct(m["accuracy_before_retrain"], 2), pct(m["accuracy"], 2), "%+.2f" % (100 * (ref - m["accuracy"]))]
             for i, m in enumerate(done)])
        note = "Open loop: the rounds follow the schedule's densities whatever is measured."
    return ["## Pruning, round by round", "", note, "", table, ""]


def _reference_line(ref: dict) -> str:
    """How the reference was made: given, a fixed length, or until validation accuracy stopped improving."""
    if ref.source:
        return "- reference: given (%s)" % ref.source
    if ref.best_iter is None:
        return "- reference training: %s iterations" % ref.iters
    line = ("- reference training: %s; the best validation accuracy at iteration %d, stopped at %d (%s)"
            % (ref.rule, ref.best_iter, ref.stopped_at, ref.stop_reason))
    a = ref.anneal
    if a:
        line += ("; then annealed at the retraining rate under the same rule: best at %d more iterations "
                 "(%s on validation), stopped at %d" % (a["best_iter"], pct(a["accuracy"], 2), a["stopped_at"]))
    return line


def _settings(rec: RunRecord, stats) -> list:
    s = rec.records
    lines = ["## Settings", "",
             "- densities (final, per layer): %s" % ", ".join("%s %s" % (k, pct(v, 1)) for k, v in
                                                              s["prune"].config["densities"].items()),
             "- prune rounds × retraining iterations: %d × %d; quantization fine-tuning: %d iterations; "
             "learning rate × %g" % (rec.rounds, rec.iters_per_round, rec.finetune_iters, rec.lr_factor),
             "- weight bits: %s; index bits: %s" % (", ".join("%s %d" % kv for kv in s["quantize"].bits.items()),
                                                    ", ".join("%s %s" % (b.name, "raw" if b.stored_raw else b.index_bits)
                                                              for b in stats.quantized)),
             _reference_line(s["reference"]), ""]
    if s["quantize"].fine_tune_discarded:
        lines.insert(-1, "- **quantization: %s**" % s["quantize"].fine_tune_discarded)
    lines += _schedule_block(rec)
    solver_changes = s["prune"].solver_changes
    if solver_changes is not None:
        lines += ["## What was changed in the net's solver and train_val", "",
                  "Retraining (every prune round, the fine-tuning and the control) uses the net's own solver "
                  "(%s) with only these changes: the learning rate × %g, the iterations, and snapshots, which caffe-dc "
                  "takes itself every %d iterations with the codebooks synced; it also tests the net itself, on the "
                  "validation split, so Caffe's own testing and display are switched off. Shown for the first "
                  "pruning round:" % (dict(rec.origin).get("solver"), rec.lr_factor, rec.snapshot_every), ""]
        lines += ["- solver %s" % c for c in solver_changes] + ["- train_val: %s" % c for c in rec.changes] + [""]
    return lines


def _schedule_block(rec: RunRecord) -> list:
    """The schedule the run followed, collapsed: its description once, as text, then the document without it."""
    doc = {k: v for k, v in rec.schedule_doc.items() if k != "description"}
    return ["<details><summary>The schedule (%s)</summary>" % rec.schedule_source, ""] + (
        [rec.schedule_description, ""] if rec.schedule_description else []) + [
        "```json", json.dumps(doc, indent=2, sort_keys=True), "```", "", "</details>", ""]


def write_report(rec: RunRecord) -> str:
    """report.md, its figures and metrics.json in the run folder; returns report.md's path."""
    s, net, d = rec.records, rec.net, rec.run_dir
    paper_net = net if rec.paper else None
    _, stats = codec.decode_model_report(frontend.read_blob(s["encode"].blob))
    t = stats.totals()
    test = s["test"].models
    sizes = _sizes(stats)
    figs = _figures(rec, [b.name for b in stats.quantized], sizes)
    paired = s["test"].paired
    control_lines = [_paired_line("Accuracy change, dense control → compressed (the same retraining without "
                                  "compression, so this is what compression itself costs)",
                                  paired["control->compressed"]), ""] if "control" in test else []
    env = environment()
    lines = [
        "# Deep Compression of %s on %s" % (net, rec.info.name), "",
        "Made by `%s` (preset `%s`, seed %d) on %s." % (rec.command, rec.preset, rec.seed,
                                                        datetime.date.today().isoformat()), "",
        dataset_note(rec.info) if paper_net else user_data_note(rec.info), "",
        "**Protocol.** Every choice in this run (the schedule, and the accuracy watched while retraining) was made "
        "on the validation split; the test split was read only for the final figures below, each test image "
        "counted exactly once (the TEST batch divides the test set's size), and all models on the same images, "
        "so they are compared image by image.", "",
    ] + _provenance(rec, env) + ["",
        "## Table 1: ours beside the paper's" if paper_net else "## Result", "", _table1(rec, t, test), "",
        _paired_line("Accuracy change, reference → compressed", paired["reference->compressed"]), "",
    ] + control_lines + [
        "## By stage", "", _by_stage(rec, test, sizes), "",
        ("## Table %d: per layer, ours / paper" % paper.TABLE_NUMBER[net]) if paper_net
        else "## Per layer, in net order", "",
        markdown_table(layer_headers(paper_net), storage_rows(stats, paper_net)), "",
        "Rates are compressed size over dense float32 size, codebooks included (as in the paper). Layers not listed "
        "(BatchNorm, Scale, biases ...) are stored raw. The total row also "
        "counts the biases (stored raw) and the file header, so the total is exactly the `.dcz` file size."
        + (" ↓ = smaller than the paper's, ↑ = larger, = within 3%." if paper_net else ""), "",
        "Weight bits +H and index bits +H are Huffman bits per stored entry (fillers included); "
        "the entropy of the code stream is %.2f bits and of the gap stream %.2f bits per entry."
        % (t["code_entropy"] or 0, t["gap_entropy"] or 0), "",
        "## Figures", "",
    ] + ["![%s](%s)\n" % (k, os.path.basename(v)) for k, v in figs.items()]
    if os.path.isfile(os.path.join(d, "sweep.png")):
        lines += ["![sweep](sweep.png)", ""]
    lines += _rounds(rec) + _settings(rec, stats) + ["## Stages", "", "In the order of the stage table "
                                      "(`caffe_dc/pipeline/stage_table.py`); a stage is redone when its fingerprint "
                                      "(its settings, the stages it reads and its code) changes.", "",
                                      _stage_list(rec), ""]
    path = os.path.join(d, "report.md")
    atomic_write(path, "\n".join(lines).encode())
    _write_metrics(rec, stats, sizes, env)
    return path


def _write_metrics(rec: RunRecord, stats, sizes: list, env: dict) -> None:
    s = rec.records
    t = stats.totals()
    test = s["test"].models
    ref_acc, final_acc = test["reference"]["accuracy"], test["decode"]["accuracy"]
    with open(s["encode"].blob, "rb") as f:
        blob_sha = hashlib.sha256(f.read()).hexdigest()
    metrics = {"net": rec.net, "paper_net": rec.paper, "dataset": rec.info.name, "preset": rec.preset,
               "schedule": rec.schedule_doc, "schedule_source": rec.schedule_source,
               "command": rec.command, "seed": rec.seed, "val_seed": 0,
               "data": {"name": rec.info.name, "n_train": rec.info.n_train, "n_val": rec.info.n_val,
                        "n_test": rec.info.n_test, "source": rec.info.source, "checksums": rec.info.checksums},
               "reference_accuracy": ref_acc, "final_accuracy": final_acc,
               "reference_test": dict(test["reference"]), "final_test": dict(test["decode"]),
               "paired": s["test"].paired,
               "accuracy_delta_pp": _pp_change(ref_acc, final_acc),
               "control_accuracy": test["control"]["accuracy"] if "control" in test else None,
               "compression": 1 / t["rate_pqh"], "file_bytes": t["file_bytes"], "model_sha256": blob_sha,
               "dense_bytes": t["original_bits"] // 8, "stage_bytes": dict(zip(["dense", "pruned", "pq", "pqh"], sizes)),
               "storage": stats.to_dict(), "stages": rec.state, "stage_order": list(rec.stages), "environment": env}
    atomic_write(os.path.join(rec.run_dir, "metrics.json"), json.dumps(metrics, indent=2, default=float).encode())


# ---------------------------------------------------------------- the pipeline's stage

def stage_inputs(r: Run) -> dict:
    return {"control": r.opts.dense_control, "schedule": r.schedule_source}


@dataclasses.dataclass(frozen=True)
class Record(StageRecord):
    report: str                        # report.md


def run_stage(r: Run) -> Record:
    path = write_report(r.record())
    print("  wrote %s" % path)
    return Record(report=path)
