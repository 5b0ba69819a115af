"""The report of a ``reproduce`` run: report.md, PNG figures and metrics.json."""
from __future__ import annotations

import datetime
import json
import os

from caffe_dc.codec import model as codec
from caffe_dc.stages import encode as encoding
from caffe_dc.report import figures
from caffe_dc.base import paper
from caffe_dc.base.blobs import CODEBOOK, blob_name
from caffe_dc.base.fileio import atomic_write
from caffe_dc.pycaffe.caffemodel import load_params
from caffe_dc.report.storage_table import human, storage_markdown
from caffe_dc.base.tables import markdown_table, pct
from caffe_dc.stages.reference import environment

DATASET_NOTE = {
    "fashion-mnist": "Fashion-MNIST (Debian's `dataset-fashion-mnist`): same format as MNIST but a much harder "
                     "task (a LeNet reaches ~89-91% rather than ~99%), so accuracies are not comparable with the "
                     "paper's MNIST figures; the comparison that matters is reference vs compressed on the same data.",
    "mnist": "MNIST, as in the paper.",
}


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


def write_report(p) -> str:
    s = p.state
    net = p.spec.name
    d = p.run_dir
    data = encoding.read_blob(s["encode"]["blob"])
    _, stats = codec.decode_model_report(data)
    t = stats.totals()
    ref_acc = s["reference"]["accuracy"]
    final_acc = s["caffe_test"]["accuracy"]
    layers = [b.name for b in stats.quantized]

    # figures
    ref = load_params(s["reference"]["caffemodel"])
    pruned = load_params(s["prune"]["caffemodel"])
    figs = {}
    figs["weights"] = figures.weight_histograms({n: ref[n].blobs[0] for n in layers},
                                                {n: pruned[n].blobs[0] for n in layers},
                                                os.path.join(d, "weights_before_after_pruning.png"),
                                                "%s: weights before and after pruning" % net)
    with open(os.path.join(d, "quantize", "clusters.json")) as f:
        clusters = json.load(f)
    qp = load_params(s["quantize"]["caffemodel"])
    figs["codebook"] = figures.codebooks({n: pruned[n].blobs[0] for n in layers},
                                         {n: clusters[n]["codebook_init"] for n in layers},
                                         {n: qp[blob_name(n, CODEBOOK)].blobs[0] for n in layers},
                                         os.path.join(d, "codebook.png"),
                                         "%s: centroids at %s init and after fine-tuning" % (net, s["quantize"].get("init", "linear")))
    sizes = _sizes(stats)
    figs["waterfall"] = figures.waterfall(["dense", "pruned", "+quantized", "+Huffman"], sizes,
                                          os.path.join(d, "size_waterfall.png"), "%s: storage by stage" % net)

    # Table 1, ours beside the paper's
    p1 = paper.TABLE1[net]
    ratio = 1 / t["rate_pqh"]
    head = ["", "top-1 error ref → compressed", "parameters ref → compressed", "compress rate"]
    paper_row = ["paper (%s)" % p1.dataset, "%s → %s" % (pct(p1.top1_ref, 2), pct(p1.top1, 2)),
                 "%s → %s" % (p1.params_ref, p1.params), "%dx" % p1.rate]
    ours = ["caffe-dc (%s)" % p.info.name, "%s → %s" % (pct(1 - ref_acc, 2), pct(1 - final_acc, 2)),
            "%s → %s" % (human(t["original_bits"] / 8), human(t["file_bytes"])), "**%.1fx**" % ratio]
    top5_ref = s["reference"].get("accuracy_top5")
    top5 = s["caffe_test"]["decoded"].get("accuracy_top5")
    if p1.top5 is not None:
        head.insert(2, "top-5 error ref → compressed")
        paper_row.insert(2, "%s → %s" % (pct(p1.top5_ref, 2), pct(p1.top5, 2)))
        ours.insert(2, "%s → %s" % (pct(None if top5_ref is None else 1 - top5_ref, 2),
                                    pct(None if top5 is None else 1 - top5, 2)))
    t1 = markdown_table(head, [paper_row, ours])
    delta_pp = _pp_change(ref_acc, final_acc)
    control = s.get("control") if s.get("control", {}).get("done") else None
    control_rows, control_lines = [], []
    if control:
        control_rows = [["dense control: reference retrained %d iterations in %d restarts, uncompressed"
                         % (control["iters"], control["restarts"]), pct(control["accuracy"], 2), human(sizes[0]), "1x"]]
        control_lines = ["Accuracy change, dense control → compressed: **%+.2f pp** (the same retraining without "
                         "compression, so this is what compression itself costs)." % _pp_change(control["accuracy"], final_acc), ""]
    stages = markdown_table(
        ["stage", "test accuracy", "size", "vs dense"],
        [["reference", pct(ref_acc, 2), human(sizes[0]), "1x"]] + control_rows + [
         ["pruned + retrained (%s kept)" % pct(s["prune"]["density"], 1), pct(s["prune"]["accuracy"], 2),
          human(sizes[1]), "%.1fx" % (sizes[0] / sizes[1])],
         ["quantized, before fine-tuning", pct(s["quantize"]["accuracy_before_finetune"], 2), human(sizes[2]),
          "%.1fx" % (sizes[0] / sizes[2])],
         ["quantized + fine-tuned", pct(s["quantize"]["accuracy"], 2), human(sizes[2]), "%.1fx" % (sizes[0] / sizes[2])],
         ["Huffman-coded blob, decoded (`caffe test`)", pct(final_acc, 2), human(sizes[3]), "%.1fx" % (sizes[0] / sizes[3])]])

    lines = [
        "# Deep Compression of %s on %s" % (net, p.info.name), "",
        "Made by `%s` (preset `%s`, seed %d) on %s." % (p.command, p.preset_name, p.args.seed,
                                                        datetime.date.today().isoformat()), "",
        DATASET_NOTE.get(p.info.name, ""), "",
        "## Table 1: ours beside the paper's", "", t1, "",
        "Accuracy change, reference → compressed: **%+.2f pp** (goal: no loss beyond 0.1 pp)." % delta_pp, "",
    ] + control_lines + [
        "## By stage", "", stages, "",
        "## Table %d: per layer, ours / paper" % paper.TABLE_NUMBER[net], "",
        storage_markdown(stats, net), "",
        "Rates are compressed size over dense float32 size, codebooks included (as in the paper). Our total row also "
        "counts the biases (stored raw) and the file header, so the total is exactly the `.dcz` file size. "
        "↓ = smaller than the paper's, ↑ = larger, = within 3%.", "",
        "Weight bits +H and index bits +H are Huffman bits per stored entry (fillers included); "
        "the entropy of the code stream is %.2f bits and of the gap stream %.2f bits per entry."
        % (t["code_entropy"] or 0, t["gap_entropy"] or 0), "",
        "## Figures", "",
        "![weights](%s)" % os.path.basename(figs["weights"]), "",
        "![codebook](%s)" % os.path.basename(figs["codebook"]), "",
        "![waterfall](%s)" % os.path.basename(figs["waterfall"]), "",
    ]
    sweep = os.path.join(d, "sweep.png")
    if os.path.isfile(sweep):
        lines += ["![sweep](sweep.png)", ""]
    lines += ["## Settings", "",
              "- densities (final, per layer): %s" % ", ".join("%s %s" % (k, pct(v, 1)) for k, v in
                                                               s["prune"]["config"]["densities"].items()),
              "- prune rounds × retraining iterations: %d × %d; quantization fine-tuning: %d iterations"
              % (p.preset.rounds, p.preset.prune_iters, p.preset.quant_iters),
              "- weight bits: %s; index bits: %s" % (", ".join("%s %d" % kv for kv in s["quantize"]["bits"].items()),
                                                     ", ".join("%s %d" % (b.name, b.index_bits) for b in stats.quantized)),
              "- reference training: %s iterations" % s["reference"].get("iters"),
              "- environment: %s" % json.dumps(environment()), ""]
    path = os.path.join(d, "report.md")
    atomic_write(path, "\n".join(lines).encode())
    metrics = {"net": net, "dataset": p.info.name, "preset": p.preset_name, "command": p.command,
               "seed": p.args.seed, "reference_accuracy": ref_acc, "final_accuracy": final_acc,
               "accuracy_delta_pp": delta_pp, "control_accuracy": control["accuracy"] if control else None,
               "compression": ratio, "file_bytes": t["file_bytes"],
               "dense_bytes": t["original_bits"] // 8, "stage_bytes": dict(zip(["dense", "pruned", "pq", "pqh"], sizes)),
               "storage": stats.to_dict(), "stages": s, "environment": environment()}
    atomic_write(os.path.join(d, "metrics.json"), json.dumps(metrics, indent=2, default=float).encode())
    return path
