"""Audit of bad input through the real CLI (issues 12 and 30): about 700 cases, each must end with exit
status 2, one line on stderr, no traceback, no Caffe abort, no hang, its inputs unchanged and nothing
new left behind (no partial run folder, no empty folder); a few inputs that used to crash must now be
accepted (exit 0).

    CAFFE_DC_NO_BUILD=1 ./dc dev python3 /src/tools/audit_bad_input.py [OUT.json]

Builds its inputs under runs/audit_bad_input/ (a LeNet-5 deploy prototxt, random weights, a .dcz,
and broken variants of each), runs every case in a fresh copy, and writes the per-case results and
the counts as JSON (default runs/audit_bad_input.json). Cases that need a read-only folder run as
user nobody when the audit runs as root (root writes anywhere). Exit status 1 if any case fails.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from caffe_dc.pycaffe import caffemodel as cm  # noqa: E402

ROOT = os.path.abspath(os.path.join("runs", "audit_bad_input"))
PRISTINE = os.path.join(ROOT, "pristine")
WORK = os.path.join(ROOT, "work")
TIMEOUT = float(os.environ.get("AUDIT_TIMEOUT", "90"))

ZOO = os.path.join(REPO, "caffe_dc", "zoo", "prototxt")
DEPLOY = open(os.path.join(ZOO, "lenet5_deploy.prototxt")).read()
TV = open(os.path.join(ZOO, "lenet5_train_val.prototxt")).read()


def dims(*d):
    return b"".join(cm._key(1, 0) + cm._enc_varint(x) for x in d)


def layer(name, blobs=(), declared=None, ltype=b"InnerProduct"):
    body = cm._field(1, name.encode()) + cm._field(2, ltype)
    for a in blobs:
        body += cm._field(7, cm._field(7, dims(*a.shape)) + cm._field(5, a.astype("<f4").tobytes()))
    if declared is not None:
        body += cm._field(7, cm._field(7, dims(*declared)))
    return cm._field(100, body)


def build():
    """Builds every bad input the audit feeds the commands: one flat list of small files, long only because the cases are many."""
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(PRISTINE)
    import caffe
    caffe.set_mode_cpu()
    def p(n):
        return os.path.join(PRISTINE, n)
    open(p("D.prototxt"), "w").write(DEPLOY)
    open(p("TV.prototxt"), "w").write(TV)
    net = caffe.Net(p("D.prototxt"), caffe.TEST)
    rs = np.random.RandomState(0)
    for name in net.params:
        for b in net.params[name]:
            b.data[...] = rs.randn(*b.data.shape) * 0.05
    net.save(p("Q.caffemodel"))
    for argv in (["encode", p("D.prototxt"), p("Q.caffemodel"), "-o", p("M.dcz")],
                 ["decode", p("M.dcz"), "-o", p("QZ.caffemodel")]):
        r = subprocess.run([sys.executable, "-m", "caffe_dc"] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, env=_env())
        if r.returncode != 0:
            sys.exit("audit: could not make its inputs: " + r.stderr)
    # broken prototxts
    variants = {
        "badtype": DEPLOY.replace('type: "ReLU"', 'type: "ReLUX"'),
        "badbottom": DEPLOY.replace('bottom: "pool2"', 'bottom: "poolX"'),
        "zeroout": DEPLOY.replace("num_output: 500", "num_output: 0"),
        "zeroconvout": DEPLOY.replace("num_output: 20", "num_output: 0"),
        "nokernel": DEPLOY.replace("kernel_size: 5", "", 1),
        "zerostride": DEPLOY.replace("stride: 2", "stride: 0", 1),
        "duptop": DEPLOY + 'layer { name: "dup" type: "ReLU" bottom: "data" top: "ip2" }\n',
        "noinputshape": 'name: "x"\ninput: "data"\nlayer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                        'inner_product_param { num_output: 2 } }\n',
        "syntax": DEPLOY[:200] + " {{{ ",
        "empty": "",
        "negative": DEPLOY.replace("num_output: 500", "num_output: -5"),
        "bigkernel": DEPLOY.replace("kernel_size: 5", "kernel_size: 50", 1),
        "badconcat": DEPLOY + 'layer { name: "cat" type: "Concat" bottom: "data" bottom: "ip2" top: "cat" }\n',
        "hugeout": DEPLOY.replace("num_output: 500", "num_output: 4000000000"),
    }
    for k, v in variants.items():
        open(p("%s.prototxt" % k), "w").write(v)
    open(p("bin.prototxt"), "wb").write(bytes(range(256)) * 8)
    open(p("latin1.prototxt"), "wb").write(DEPLOY.replace("LeNet", "L\xe9Net").encode("latin-1"))
    open(p("nul.prototxt"), "wb").write(DEPLOY.encode() + b"\0")
    # broken caffemodels
    q = open(p("Q.caffemodel"), "rb").read()
    cms = {
        "h40": layer("ip1", declared=(1 << 40,)),
        "h28": layer("ip1", declared=(1 << 28,)),
        "hmul": layer("ip1", declared=(1 << 30, 1 << 30, 1 << 30)),
        "trunc": q[: len(q) // 2],
        "trunc1": q[:-1],
        "rand": np.random.RandomState(1).bytes(5000),
        "empty": b"",
        "text": DEPLOY.encode(),
        "mismatch": layer("ip1", [np.ones(3)]) [:-4] + b"\0\0\0\0",
        "wrongshape": layer("conv1", [np.ones((3, 3))], ltype=b"Convolution"),
        "varint": b"\xa2\x06" + b"\xff" * 12,
    }
    for k, v in cms.items():
        open(p("%s.caffemodel" % k), "wb").write(v)
    # broken blobs
    m = open(p("M.dcz"), "rb").read()
    blobs = {"btrunc": m[: len(m) // 2], "brand": np.random.RandomState(2).bytes(3000), "bempty": b"",
             "bhead": m[:12], "bflip": m[:40] + bytes([m[40] ^ 0xFF]) + m[41:]}
    for k, v in blobs.items():
        open(p("%s.dcz" % k), "wb").write(v)
    contract_inputs(p)
    open(p("N.net"), "wb").write(b"not a net file" * 10)
    open(p("F"), "wb").write(b"ordinary file")
    os.makedirs(p("dir"))
    os.makedirs(p("ro"))
    shutil.copyfile(p("Q.caffemodel"), p("ro/Q.caffemodel"))
    shutil.copyfile(p("M.dcz"), p("ro/M.dcz"))
    shutil.copyfile(p("D.prototxt"), p("ro/D.prototxt"))
    os.symlink("M.dcz", p("link.dcz"))
    os.symlink("Q.caffemodel", p("linkq.caffemodel"))
    os.symlink("D.prototxt", p("linkd.prototxt"))
    os.link(p("Q.caffemodel"), p("hardq.caffemodel"))
    os.chmod(p("ro"), 0o555)
    os.chmod(ROOT, 0o777)
    for dp, dn, fn in os.walk(PRISTINE):
        os.chmod(dp, 0o755 if not dp.endswith("/ro") else 0o555)


def _env():
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def snapshot(d):
    """Every file's bytes (a symlink's target) and every folder (``None``) under ``d``."""
    out = {}
    for dp, dn, fn in os.walk(d):
        for n in fn:
            f = os.path.join(dp, n)
            out[os.path.relpath(f, d)] = os.readlink(f) if os.path.islink(f) else open(f, "rb").read()
        for n in dn:
            out[os.path.relpath(os.path.join(dp, n), d) + "/"] = os.readlink(os.path.join(dp, n)) \
                if os.path.islink(os.path.join(dp, n)) else None
    return out


def fresh():
    if os.path.exists(WORK):
        subprocess.run(["chmod", "-R", "u+w", WORK])
        shutil.rmtree(WORK)
    subprocess.run(["cp", "-a", PRISTINE, WORK], check=True)


def nobody():
    os.setgid(65534)
    os.setuid(65534)


def cases():
    """The audit's cases, one line each: long only because the cases are many."""
    c = []

    def add(cmd, demote=False):
        c.append((cmd, demote))

    def spell(f):
        return [f, "./" + f, os.path.join(WORK, f), "dir/../" + f]

    # --- outputs over inputs: every output option against every input, spelled several ways
    for f in spell("D.prototxt") + spell("Q.caffemodel") + ["linkq.caffemodel", "hardq.caffemodel", "linkd.prototxt"]:
        add("encode D.prototxt Q.caffemodel -o %s" % f)
        add("encode D.prototxt Q.caffemodel -o X.dcz --json %s" % f)
    add("encode D.prototxt Q.caffemodel -o X.dcz --json X.dcz")
    add("encode D.prototxt linkq.caffemodel -o Q.caffemodel")
    for f in spell("M.dcz") + ["link.dcz"]:
        add("inspect M.dcz --json %s" % f)
        add("decode M.dcz -o %s" % f)
        add("decode link.dcz -o %s" % f)
        add("bench-sparse --blob %s --out %s" % (f, f))
    for f in ["QZ.caffemodel", "./QZ.caffemodel"]:
        add("decode M.dcz -o %s --verify %s" % (f, f))
    add("decode M.dcz -o M.caffemodel --verify M.caffemodel")
    for f in ["D.prototxt", "N.net", "linkd.prototxt", "./N.net"]:
        add("import-net D.prototxt N.net -o %s" % f)
        add("import-net D.prototxt N.net -o X.caffemodel --dcz %s" % f)
    add("import-net D.prototxt N.net -o X.caffemodel --dcz X.caffemodel")
    for f in ["D.prototxt", "QZ.caffemodel", "linkq.caffemodel"]:
        add("export-net D.prototxt QZ.caffemodel -o %s" % f)
    add("storage alexnet --weights Q.caffemodel --json Q.caffemodel --out so")
    add("storage alexnet --weights Q.caffemodel --out Q.caffemodel")
    add("train lenet-5 --out Q.caffemodel --data-root data")
    add("data --data-root Q.caffemodel")
    add("reproduce lenet-5 --weights Q.caffemodel --out Q.caffemodel")
    add("prune lenet-5 Q.caffemodel --out Q.caffemodel")
    add("quantize lenet-5 Q.caffemodel --out Q.caffemodel")
    # --- unwritable outputs
    for o in ["dir", "F/x", "F/a/b/x", "/proc/x", "/sys/x", "ro/x", "ro/sub/x"]:
        demote = o.startswith("ro")
        if o == "dir":  # a folder is a fine output folder: only the file outputs are bad here
            add("decode M.dcz -o dir")
            add("encode D.prototxt Q.caffemodel -o dir")
            add("inspect M.dcz --json dir")
            add("import-net D.prototxt N.net -o dir")
            add("export-net D.prototxt QZ.caffemodel -o dir")
            continue
        add("decode M.dcz -o %s" % o, demote)
        add("encode D.prototxt Q.caffemodel -o %s" % o, demote)
        add("inspect M.dcz --json %s" % o, demote)
        add("import-net D.prototxt N.net -o %s" % o, demote)
        add("export-net D.prototxt QZ.caffemodel -o %s" % o, demote)
        add("storage alexnet --out %s" % o, demote)
        add("train lenet-5 --out %s --data-root data" % o, demote)
        add("data --data-root %s" % o, demote)
        add("bench-sparse --blob M.dcz --out %s" % o, demote)
    add("encode ro/D.prototxt ro/Q.caffemodel", True)
    add("decode ro/M.dcz", True)
    # --- prototxts
    for k in ["badtype", "badbottom", "zeroout", "zeroconvout", "nokernel", "zerostride", "duptop", "noinputshape",
              "syntax", "empty", "negative", "bin", "latin1", "nul", "bigkernel", "badconcat", "hugeout"]:
        add("encode %s.prototxt Q.caffemodel -o X.dcz" % k)
        add("import-net %s.prototxt N.net -o X.caffemodel" % k)
        add("export-net %s.prototxt QZ.caffemodel -o X.net" % k)
    add("import-net missing.prototxt N.net -o X.caffemodel")
    add("encode dir Q.caffemodel -o X.dcz")
    # --- caffemodels
    for k in ["h40", "h28", "hmul", "trunc", "trunc1", "rand", "empty", "text", "mismatch", "wrongshape", "varint"]:
        add("encode D.prototxt %s.caffemodel -o X.dcz" % k)
        add("export-net D.prototxt %s.caffemodel -o X.net" % k)
        add("decode M.dcz -o X.caffemodel --verify %s.caffemodel" % k)
        add("storage alexnet --weights %s.caffemodel --out so" % k)
    add("encode D.prototxt dir -o X.dcz")
    # --- blobs
    for k in ["btrunc", "brand", "bempty", "bhead", "bflip"]:
        add("decode %s.dcz -o X.caffemodel" % k)
        add("inspect %s.dcz" % k)
        add("bench-sparse --blob %s.dcz --out bs" % k)
    add("decode dir -o X.caffemodel")
    # --- option values
    bad_int = ["0", "-1", "x", "1.5", "", "nan"]
    for v in bad_int:
        for opt in ["--iters", "--limit", "--batch"]:
            add("train lenet-5 %s %s" % (opt, v) if v else "train lenet-5 %s ''" % opt)
    for v in ["-1", "x", "1.5"]:
        add("train lenet-5 --test-every %s" % v)
    for v in ["nan", "inf", "0", "-0.1", "x", "-inf"]:
        add("train lenet-5 --base-lr %s" % v)
        add("prune lenet-5 Q.caffemodel --lr-factor %s" % v)
        add("quantize lenet-5 Q.caffemodel --lr-factor %s" % v)
    for v in ["0", "-1", "x"]:
        add("data --limit %s" % v)
        add("prune lenet-5 Q.caffemodel --iters %s" % v)
        add("prune lenet-5 Q.caffemodel --rounds %s" % v)
        add("quantize lenet-5 Q.caffemodel --iters %s" % v)
        for opt in ["--ref-iters", "--rounds", "--prune-iters", "--quant-iters", "--batch", "--test-batch", "--crop"]:
            add("reproduce lenet-5 %s %s" % (opt, v))
        add("decode M.dcz -o X.caffemodel --max-weights %s" % v)
        add("storage alexnet --fit-sample %s" % v)
        add("bench-sparse --threads %s" % v)
    for v in ["1.5", "nan", "inf", "0", "-0.5", "ip1=2", "ipX=0.5", "0.1,0.2", "ip1=", "=0.5", ",", "x"]:
        add("encode D.prototxt Q.caffemodel -o X.dcz --density %s" % v)
        add("prune lenet-5 Q.caffemodel --density %s" % v)
        add("reproduce lenet-5 --density %s" % v)
    for v in ["0", "13", "-1", "x", "ip1=0", "ip1=13", "ipX=5", "5.5", "1e9"]:
        add("encode D.prototxt Q.caffemodel -o X.dcz --bits %s" % v)
        if v not in ("0", "ip1=0"):   # index width 0 is valid: a dense record (format 1.1)
            add("encode D.prototxt QZ.caffemodel -o X.dcz --index-bits %s" % v)
        add("quantize lenet-5 Q.caffemodel --bits %s" % v)
        add("reproduce lenet-5 --bits %s" % v)
    for v in ["nan", "-1", "x"]:
        add("bench-sparse --min-time %s" % v)
        add("prune lenet-5 Q.caffemodel --quality %s" % v)
    add("bench-sparse --batches 1,x")
    add("bench-sparse --batches 0")
    add("train vgg99")
    add("storage lenet-5")
    add("prune lenet-5 missing.caffemodel")
    add("import-net TV.prototxt N.net -o X.caffemodel")
    add("export-net TV.prototxt QZ.caffemodel -o X.net")
    contract_cases(add)
    return c


# ============================================================================ block: contract (issue 19)
# Blobs whose fully connected layers hold no weights: bench-sparse died reshaping them before.

def contract_inputs(p):
    from caffe_dc.codec import container

    for name, shape in (("ew0", (0,)), ("ew08", (0, 8)), ("ew40", (4, 0)), ("ew0x0", (0, 0))):
        data, _ = container.write("tiny", [container.RawBlob("ip1", "InnerProduct", 0, np.zeros(shape, np.float32))])
        open(p("%s.dcz" % name), "wb").write(data)


def contract_cases(add):
    for k in ("ew0", "ew08", "ew40", "ew0x0"):
        add("bench-sparse --blob %s.dcz --out bs" % k)
        add("bench-sparse --blob M.dcz --blob %s.dcz --out bs" % k)


def main():
    """Runs every case and writes the audit's table; the options, the loop and the report kept together."""
    import shlex

    out_json = sys.argv[1] if len(sys.argv) > 1 else os.path.join("runs", "audit_bad_input.json")
    build()
    todo = cases()
    results = []
    t0 = time.time()
    for i, case in enumerate(todo):
        cmd, demote = case[:2]
        expect = case[2] if len(case) > 2 else 2
        fresh()
        before = snapshot(WORK)
        argv = shlex.split(cmd)
        env = _env()
        t = time.time()
        try:
            r = subprocess.run(launcher(argv), cwd=WORK, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, universal_newlines=True, errors="replace", timeout=TIMEOUT,
                               env=env, preexec_fn=nobody if demote else None)
            rc, err = r.returncode, r.stderr
        except subprocess.TimeoutExpired as e:
            rc, err = "timeout", (e.stderr or b"").decode("utf-8", "replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        after = snapshot(WORK)
        changed = sorted(k for k, v in before.items() if after.get(k) != v)
        # what a refused command left behind: a half-made run folder, data, even an empty folder
        new = sorted(k for k in after if k not in before) if rc != 0 else []
        lines = [l for l in err.splitlines() if l.strip()]
        res = {"cmd": cmd, "demote": demote, "expect": expect, "rc": rc, "seconds": round(time.time() - t, 2),
               "changed": changed, "new": new, "traceback": "Traceback" in err, "abort": rc in (134, -6),
               "silent": rc not in (0, "timeout") and not lines, "lines": len(lines),
               "first": lines[0][:300] if lines else ""}
        results.append(res)
        flag = []
        if changed:
            flag.append("OVERWROTE %s" % changed)
        if new:
            flag.append("LEFT %s" % new[:5])
        if res["silent"]:
            flag.append("SILENT")
        if res["traceback"]:
            flag.append("TRACEBACK")
        if res["abort"]:
            flag.append("ABORT")
        if rc == "timeout":
            flag.append("HANG")
        if rc == 0 and expect != 0:
            flag.append("ACCEPTED")
        elif rc != expect and not flag:
            flag.append("RC=%s" % rc)
        if rc not in (0, "timeout") and lines and len(lines) != 1:
            flag.append("LINES=%d" % len(lines))
        print("%3d %-6s %5.1fs %s%s" % (i, rc, res["seconds"], cmd, ("   <-- " + " ".join(flag)) if flag else ""),
              flush=True)
    refusals = [r for r in results if r["expect"] == 2]
    summary = {
        "cases": len(results),
        "changed_inputs": sum(bool(r["changed"]) for r in results),
        "partial_folders": sum(bool(r["new"]) for r in results),
        "silent_exits": sum(r["silent"] for r in results),
        "tracebacks": sum(r["traceback"] for r in results),
        "caffe_aborts": sum(r["abort"] for r in results),
        "hangs": sum(r["rc"] == "timeout" for r in results),
        "exit_2_one_line": sum(r["rc"] == 2 and r["lines"] == 1 for r in refusals),
        "refusals": len(refusals),
        "accepted_as_expected": sum(r["rc"] == 0 for r in results if r["expect"] == 0),
        "must_be_accepted": len(results) - len(refusals),
        "exit_0_refusal_expected": sum(r["rc"] == 0 for r in refusals),
        "other": sum(r["rc"] not in (0, 2, "timeout") for r in results),
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(summary, indent=1))
    with open(out_json, "w") as f:
        json.dump({"summary": summary, "results": results}, f, indent=1)
    print("wrote %s" % out_json)
    ok = (summary["exit_2_one_line"] == summary["refusals"] and summary["accepted_as_expected"] == summary["must_be_accepted"]
          and not (summary["changed_inputs"] or summary["partial_folders"] or summary["silent_exits"]
                   or summary["tracebacks"]))
    return 0 if ok else 1



# ---------------------------------------------------------------------------------------------------------
# The Caffe-free path (issue 22): the codec commands again, with pycaffe hidden from the child
# (``sys.modules["caffe"] = None``), as on a machine where only numpy and protobuf are installed.
NO_CAFFE = "--no-caffe"
_HIDE_CAFFE = "import sys; sys.modules['caffe'] = None; from caffe_dc.cli import main; sys.exit(main(sys.argv[1:]))"
_all_cases = cases


def launcher(argv):
    """The child's command line: ``caffe_dc`` as usual, or with pycaffe hidden for a ``--no-caffe`` case."""
    if argv and argv[0] == NO_CAFFE:
        return [sys.executable, "-c", _HIDE_CAFFE] + argv[1:]
    return [sys.executable, "-m", "caffe_dc"] + argv


def cases():
    c = _all_cases()
    codec = ("encode ", "decode ", "inspect ", "import-net ", "export-net ")
    # Without Caffe there is no registry of layer types to check a prototxt against (forks add their own
    # layers): an unknown type is accepted there with a note, by design, so that case is Caffe's alone.
    c += [("%s %s" % (NO_CAFFE, cmd), demote) for cmd, demote in list(c)
          if cmd.startswith(codec) and not cmd.startswith("encode badtype.prototxt")]
    for cmd in ["encode h40.caffemodel -o X.dcz", "encode trunc.caffemodel -o X.dcz", "encode rand.caffemodel",
                "encode D.prototxt Q.caffemodel F -o X.dcz", "encode text.caffemodel -o X.dcz",
                "encode varint.caffemodel -o X.dcz"]:
        c.append(("%s %s" % (NO_CAFFE, cmd), False))
    return c



# ---------------------------------------------------------------------------------------------------------
# One run per run folder (issue 30): reproduce and compress refuse before anything is written, into a
# finished run's folder (``done/``) or one not yet made (``fresh``); every number of a schedule file goes
# through one checked conversion; seeds are checked when parsed; decode --verify checks before it replaces
# ``OLD.caffemodel``; a symlink loop is named as one. The inputs and the test suite's cases are declared
# once, in tests/test_bad_input.py; here they run again with more variants. bench-sparse must accept
# every record kind decode accepts (expected exit 0).
sys.path.insert(0, os.path.join(REPO, "tests"))
import test_bad_input as one_run  # noqa: E402
from test_sparse_bench import _record  # noqa: E402

_build_before_30, _cases_before_30 = build, cases
RECORDS = [(k, s) for k in ("quantized", "raw", "quantized-raw") for s in ((), (5,), (3, 4), (2, 3, 2, 2))]


def _record_name(kind, shape):
    return "rec-%s-%s.dcz" % (kind, "x".join(map(str, shape)) or "scalar")


def build():
    _build_before_30()
    one_run.make_one_run_inputs(PRISTINE)
    os.symlink("loop.net", os.path.join(PRISTINE, "loop.net"))
    for kind, shape in RECORDS:
        with open(os.path.join(PRISTINE, _record_name(kind, shape)), "wb") as f:
            f.write(_record(kind, shape)[0])


def cases():
    c = _cases_before_30()
    for _, cmd, _, _ in one_run.ONE_RUN_CASES:
        c.append((cmd, False))
    heads = [one_run.REPRO + "done", one_run.REPRO + "fresh", one_run.COMPRESS + "done", one_run.COMPRESS + "fresh"]
    for name in one_run.ONE_RUN_SCHEDULES:
        for head in heads:
            c.append(("%s --schedule sched-%s" % (head, name), False))
    for head in heads:
        for v in ("1e9", "1e300", "1e308"):
            c.append(("%s --target-rate %s" % (head, v), False))
    for v in ("-5", "-1", "0", "2147483648", one_run.HUGE, "x", "1.5", "nan"):    # Caffe's seeds: 1..2^31-1
        c.append(("reproduce lenet-300-100 --seed %s" % v, False))
        c.append(("compress --solver U-solver.prototxt --weights U.caffemodel --seed %s" % v, False))
        c.append(("train lenet-5 --seed %s" % v, False))
    for v in ("-5", "-1", "4294967296", one_run.HUGE, "x", "1.5", "nan"):          # numpy's: 0..2^32-1
        c.append(("quantize lenet-5 Q.caffemodel --seed %s" % v, False))
        c.append(("bench-sparse --seed %s" % v, False))
    for v in ("0", "-1", "101", "1000", "100000000000000000000", "x"):
        c.append(("reproduce lenet-300-100 --seeds %s" % v, False))
    c.append((one_run.REPRO + "fresh --seed 2147483600 --seeds 100", False))
    for w in ("Q", "G", "h40", "h28", "trunc", "empty", "text", "mismatch", "loop", "missing"):
        for out in ("done", "fresh"):
            c.append((one_run.REPRO + "%s --weights %s.caffemodel" % (out, w), False))
        c.append(("compress --solver U-solver.prototxt --weights %s.caffemodel --out fresh" % w, False))
        c.append(("decode GOOD.dcz -o OLD.caffemodel --verify %s.caffemodel" % w, False))
    for solver in ("NP-solver.prototxt",):
        for extra in ("", "--schedule sched-bool.json", "--target-rate 30", "--max-drop 1"):
            c.append(("compress --solver %s --weights U.caffemodel --out fresh %s" % (solver, extra), False))
    for idx in ("dir", "F", "missing", "loop.dcz"):
        c.append(("reproduce lenet-300-100 --data-root data --out fresh --idx %s" % idx, False))
    for cmd in ("encode D.prototxt loop.caffemodel -o X.dcz", "inspect loop.dcz", "decode loop.dcz -o X.caffemodel",
                "bench-sparse --blob loop.dcz --out bs", "storage alexnet --weights loop.caffemodel --out so",
                "export-net D.prototxt loop.caffemodel -o X.net", "import-net D.prototxt loop.net -o X.caffemodel",
                "prune lenet-5 loop.caffemodel", "quantize lenet-5 loop.caffemodel",
                "compress --solver loop.caffemodel --weights U.caffemodel"):
        c.append((cmd, False))
    for kind, shape in RECORDS:   # accepted: each is timed
        c.append(("bench-sparse --blob %s --batches 1 --min-time 0 --out bs" % _record_name(kind, shape), False, 0))
    return c


if __name__ == "__main__":
    sys.exit(main())
