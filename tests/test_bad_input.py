"""Bad input never costs data or shows a traceback (issue 12).

Each case runs the real command line in a subprocess and must end with exit
status 2, exactly one line on stderr naming the problem, no traceback, and
every input file byte-identical afterwards. All cases fail before any
training; the inputs are tiny files made here.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from conftest import REPO, cli_argv, run_cli

from caffe_dc.pycaffe import caffemodel as cm

try:
    import caffe  # noqa: F401
    HAVE_CAFFE = True
except ImportError:
    HAVE_CAFFE = False

DEPLOY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 8 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" inner_product_param { num_output: 4 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 2 } }
"""
TRAIN_VAL = """name: "tiny"
layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TEST }
        data_param { source: "no/such/lmdb" batch_size: 4 backend: LMDB } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" inner_product_param { num_output: 4 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 2 } }
"""


def _dims(*d):
    return b"".join(cm._key(1, 0) + cm._enc_varint(x) for x in d)


def _layer(name, blobs=(), declared=None):
    """A NetParameter.layer record: real float blobs, or one blob that only declares a shape."""
    body = cm._field(1, name.encode()) + cm._field(2, b"InnerProduct")
    for a in blobs:
        body += cm._field(7, cm._field(7, _dims(*a.shape)) + cm._field(5, a.astype("<f4").tobytes()))
    if declared:
        body += cm._field(7, cm._field(7, _dims(*declared)))
    return cm._field(100, body)


def make_inputs(d):
    """The files the cases read, written into folder ``d``; returns nothing, names are fixed."""
    r = np.random.RandomState(0)
    files = {
        "P.prototxt": DEPLOY.encode(),
        "TV.prototxt": TRAIN_VAL.encode(),
        "T.prototxt": DEPLOY.replace('"InnerProduct" bottom: "ip1"', '"InnerProdukt" bottom: "ip1"').encode(),
        "B.prototxt": DEPLOY.replace('bottom: "ip1"', 'bottom: "ipX"').encode(),
        "Z.prototxt": DEPLOY.replace("num_output: 4", "num_output: 0").encode(),
        "S.prototxt": b'name: "s"\nlayer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 '
                      b'dim: 4 dim: 4 } } }\nlayer { name: "pool" type: "Pooling" bottom: "data" top: "pool" '
                      b'pooling_param { pool: MAX kernel_size: 2 stride: 0 } }\n',
        "E.prototxt": DEPLOY.encode() + b'layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "ip1" top: "sum" }\n',
        "EMPTY.prototxt": b"# only a comment\n",
        "BIN.prototxt": bytes(range(256)) * 4,
        "Q.caffemodel": _layer("ip1", [r.randn(4, 8), r.randn(4)]) + _layer("ip2", [r.randn(2, 4), r.randn(2)]),
        "H40.caffemodel": _layer("ip1", declared=(1 << 40,)),    # 33 bytes asking for 4 TiB
        "H28.caffemodel": _layer("ip1", declared=(1 << 28,)),    # 32 bytes asking for 1 GiB
        "M.dcz": b"\x93CAFFEDC not really a blob, but decode must refuse before reading it",
        "N.net": b"an authors' .net file, as far as the output checks care",
        "F": b"an ordinary file",
    }
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    os.symlink("M.dcz", os.path.join(d, "link.dcz"))
    os.link(os.path.join(d, "Q.caffemodel"), os.path.join(d, "hard.caffemodel"))
    os.makedirs(os.path.join(d, "dir"))
    os.makedirs(os.path.join(d, "run"))
    shutil.copyfile(os.path.join(d, "Q.caffemodel"), os.path.join(d, "run", "pruned.caffemodel"))
    os.makedirs(os.path.join(d, "ro"))
    shutil.copyfile(os.path.join(d, "Q.caffemodel"), os.path.join(d, "ro", "Q.caffemodel"))
    os.chmod(os.path.join(d, "ro"), 0o555)


# (id, command line, fragment of the one error line, needs pycaffe)
CASES = [
    # outputs over inputs or over each other
    ("inspect-json-on-blob", "inspect M.dcz --json M.dcz", "overwrite", False),
    ("encode-out-on-prototxt", "encode P.prototxt Q.caffemodel -o P.prototxt", "overwrite", False),
    ("encode-json-on-caffemodel", "encode P.prototxt Q.caffemodel -o X.dcz --json Q.caffemodel", "overwrite", False),
    ("encode-json-on-prototxt", "encode P.prototxt Q.caffemodel -o X.dcz --json P.prototxt", "overwrite", False),
    ("encode-json-on-out", "encode P.prototxt Q.caffemodel -o X.dcz --json X.dcz", "same file", False),
    ("encode-out-on-hard-link", "encode P.prototxt Q.caffemodel -o hard.caffemodel", "overwrite", False),
    ("decode-out-on-verify", "decode M.dcz -o Q.caffemodel --verify Q.caffemodel", "overwrite", False),
    ("decode-out-on-own-input", "decode M.dcz -o M.dcz", "overwrite", False),
    ("decode-through-symlink", "decode link.dcz -o M.dcz", "overwrite", False),
    ("import-net-out-on-deploy", "import-net P.prototxt N.net -o P.prototxt", "overwrite", False),
    ("import-net-dcz-on-netfile", "import-net P.prototxt N.net -o X.caffemodel --dcz N.net", "overwrite", False),
    ("import-net-dcz-on-deploy", "import-net P.prototxt N.net -o X.caffemodel --dcz P.prototxt", "overwrite", False),
    ("export-net-out-on-caffemodel", "export-net P.prototxt Q.caffemodel -o Q.caffemodel", "overwrite", False),
    ("storage-json-on-weights", "storage alexnet --weights Q.caffemodel --json Q.caffemodel --out o", "overwrite",
     False),
    ("prune-out-folder-holds-input", "prune lenet-5 run/pruned.caffemodel --out run --data-root data", "overwrite",
     True),
    # outputs that cannot be written (each an OSError before)
    ("output-is-a-folder", "decode M.dcz -o dir", "is a folder", False),
    ("output-below-a-file", "decode M.dcz -o F/x.caffemodel", "not a folder", False),
    ("json-below-a-file", "inspect M.dcz --json F/sub/x.json", "not a folder", False),
    ("out-folder-is-a-file", "storage alexnet --out F", "not a folder", False),
    ("data-root-below-a-file", "data --data-root F/data", "not a folder", False),
    ("train-out-below-a-file", "train lenet-5 --out F/ref --data-root data", "not a folder", True),
    ("read-only-folder", "decode M.dcz -o ro/x.caffemodel", "cannot write", False),
    ("default-output-next-to-read-only-input", "encode P.prototxt ro/Q.caffemodel", "cannot write", False),
    # files that are not what they claim
    ("binary-prototxt", "encode BIN.prototxt Q.caffemodel -o X.dcz", "not a text prototxt", True),
    ("binary-deploy", "import-net BIN.prototxt N.net -o X.caffemodel", "not a text prototxt", True),
    ("caffemodel-declares-4TiB", "encode P.prototxt H40.caffemodel -o X.dcz", "needs 1099511627776", True),
    ("caffemodel-declares-1GiB", "encode P.prototxt H28.caffemodel -o X.dcz", "needs 268435456", True),
    # prototxts on which Caffe would abort the process
    ("unknown-layer-type", "encode T.prototxt Q.caffemodel -o X.dcz", "InnerProdukt", True),
    ("undefined-bottom", "encode B.prototxt Q.caffemodel -o X.dcz", "ipX", True),
    ("num-output-0", "encode Z.prototxt Q.caffemodel -o X.dcz", "num_output 0", True),
    ("export-net-unknown-type", "export-net T.prototxt Q.caffemodel -o X.net", "InnerProdukt", True),
    ("import-net-train-val", "import-net TV.prototxt N.net -o X.caffemodel", "deploy", True),
    ("pooling-stride-0", "encode S.prototxt Q.caffemodel -o X.dcz", "stride of 0", True),
    ("no-layers", "encode EMPTY.prototxt Q.caffemodel -o X.dcz", "no layers", True),
    # what no check foresees aborts a child process, not this one
    ("shapes-do-not-fit", "import-net E.prototxt N.net -o X.caffemodel", "Caffe cannot build", True),
    # option values, refused when parsed
    ("train-iters-0", "train lenet-5 --iters 0", "--iters", False),
    ("train-limit-0", "train lenet-5 --limit 0", "--limit", False),
    ("train-test-every-negative", "train lenet-5 --test-every -1", "--test-every", False),
    ("train-base-lr-nan", "train lenet-5 --base-lr nan", "--base-lr", False),
    ("train-batch-0", "train lenet-5 --batch 0", "--batch", False),
    ("data-limit-negative", "data --limit -1", "--limit", False),
    ("prune-iters-negative", "prune lenet-5 Q.caffemodel --iters -1", "--iters", False),
    ("prune-lr-factor-inf", "prune lenet-5 Q.caffemodel --lr-factor inf", "--lr-factor", False),
    ("quantize-bits-13", "quantize lenet-5 Q.caffemodel --bits 13", "1..12", False),
    ("quantize-centroid-grad-unknown", "quantize lenet-5 Q.caffemodel --centroid-grad median", "--centroid-grad",
     False),
    ("choose-reference-iters-0", "choose S.json --target-rate 36 --reference-iters 0", "--reference-iters", False),
    ("quantize-bits-layer-0", "quantize lenet-5 Q.caffemodel --bits ip1=0", "ip1", False),
    ("reproduce-density-0", "reproduce lenet-5 --density 0", "--density", False),
    ("reproduce-bits-0", "reproduce lenet-5 --bits 0", "--bits", False),
    ("encode-density-1.5", "encode P.prototxt Q.caffemodel --density 1.5", "--density", False),
    ("encode-density-nan", "encode P.prototxt Q.caffemodel --density nan", "--density", False),
    ("encode-density-inf", "encode P.prototxt Q.caffemodel --density inf", "--density", False),
    ("encode-density-layer-2", "encode P.prototxt Q.caffemodel --density ip1=2", "ip1", False),
    ("encode-bits-0", "encode P.prototxt Q.caffemodel --bits 0", "--bits", False),
    ("encode-index-bits-13", "encode P.prototxt Q.caffemodel --index-bits 13", "--index-bits", False),
    ("encode-density-twice", "encode P.prototxt Q.caffemodel --density 0.1,0.2", "twice", False),
    ("encode-unknown-layer", "encode P.prototxt Q.caffemodel -o X.dcz --density ipX=0.5", "ipX", True),
    ("decode-max-weights-0", "decode M.dcz -o X.caffemodel --max-weights 0", "--max-weights", False),
    ("bench-sparse-min-time-nan", "bench-sparse --min-time nan", "--min-time", False),
    ("reproduce-target-rate-1", "reproduce lenet-5 --target-rate 1", "--target-rate", False),
    ("compress-target-rate-nan", "compress --solver S.prototxt --weights Q.caffemodel --target-rate nan", "--target-rate",
     False),
    ("reproduce-max-drop-negative", "reproduce lenet-5 --max-drop -1", "--max-drop", False),
    ("reproduce-two-budgets", "reproduce lenet-5 --target-rate 30 --max-drop 1", "not allowed with", False),
    ("reproduce-budget-and-density", "reproduce lenet-5 --target-rate 30 --density 0.1", "--density", True),
    ("reproduce-margin-negative", "reproduce lenet-5 --margin -0.1", "--margin", False),
    ("compress-margin-100", "compress --solver S.prototxt --weights Q.caffemodel --margin 100", "--margin", False),
]


def _snapshot(d):
    """Every file's bytes (a symlink's target) and every folder under ``d``: a refused command may not even
    leave an empty folder behind."""
    out = {}
    for root, dirs, names in os.walk(d):
        for n in names:
            p = os.path.join(root, n)
            out[os.path.relpath(p, d)] = (os.path.islink(p), os.readlink(p) if os.path.islink(p) else open(p, "rb").read())
        for n in dirs:
            out[os.path.relpath(os.path.join(root, n), d) + "/"] = None
    return out


def _as_nobody():
    os.setgid(65534)
    os.setuid(65534)


_NOBODY = []


def nobody_can_run():
    """Root writes into read-only folders, so those cases run as nobody, which needs to reach this
    Python and the checkout (true in the image; not for a Python under /root)."""
    if not _NOBODY:
        try:
            r = subprocess.run([sys.executable, "-c", "import os, sys; sys.path.insert(0, %r); import caffe_dc" % REPO],
                               preexec_fn=_as_nobody, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
            _NOBODY.append(r.returncode == 0)
        except OSError:
            _NOBODY.append(False)
    return _NOBODY[0]


@pytest.fixture(scope="module")
def work():
    # Not tmp_path: the read-only cases run as nobody when the tests run as root, and pytest's
    # base folder is private to root.
    d = tempfile.mkdtemp(prefix="caffe-dc-bad-input.")
    os.chmod(d, 0o777)
    try:
        make_inputs(d)
        yield d
    finally:
        os.chmod(os.path.join(d, "ro"), 0o755)
        shutil.rmtree(d)


def run_case(argv, cwd, demote=False):
    argv, env = cli_argv(*argv)
    return subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=120, env=env, preexec_fn=_as_nobody if demote else None)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(work, case):
    _, command, fragment, needs_caffe = case
    if needs_caffe and not HAVE_CAFFE:
        pytest.skip("needs pycaffe")
    demote = " ro/" in command and os.geteuid() == 0
    if demote and not nobody_can_run():
        pytest.skip("running as root, and user nobody cannot run this Python")
    before = _snapshot(work)
    p = run_case(command.split(), work, demote)
    after = _snapshot(work)
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert fragment in lines[0], lines[0]
    for name, content in before.items():
        assert after.get(name) == content, "%s changed" % name
    # nothing is written when a command is refused (new files would be half-done outputs)
    assert sorted(after) == sorted(before), sorted(set(after) - set(before))


@pytest.mark.skipif(not HAVE_CAFFE, reason="needs pycaffe")
def test_a_bare_density_leaves_named_layers_their_own(work, tmp_path):
    shutil.copyfile(os.path.join(work, "P.prototxt"), str(tmp_path / "P.prototxt"))
    shutil.copyfile(os.path.join(work, "Q.caffemodel"), str(tmp_path / "Q.caffemodel"))
    p = run_case(["encode", "P.prototxt", "Q.caffemodel", "-o", "X.dcz", "--density", "0.5,ip1=0.25",
                  "--json", "X.json"], str(tmp_path))
    assert p.returncode == 0, p.stderr
    layers = {l["name"]: l for l in json.load(open(str(tmp_path / "X.json")))["layers"] if l["blob"] == 0}
    assert layers["ip1"]["nonzero"] == 8 and layers["ip2"]["nonzero"] == 4, layers


def test_one_bit_limit_for_options_and_container():
    from caffe_dc.base.limits import MAX_BITS
    from caffe_dc.codec import container

    assert container.MAX_BITS == MAX_BITS


# ============================================================================ block: contract (issue 19)
# bench-sparse on blobs whose fully connected layers hold no weights (it died reshaping them before).

def make_contract_inputs(d):
    from caffe_dc.codec import container

    for name, shape in (("EW0.dcz", (0,)), ("EW08.dcz", (0, 8)), ("EW40.dcz", (4, 0))):
        data, _ = container.write("tiny", [container.RawBlob("ip1", "InnerProduct", 0, np.zeros(shape, np.float32))])
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


CONTRACT_CASES = [
    ("bench-sparse-blob-without-weights-0", "bench-sparse --blob EW0.dcz --out bs", "holds no weights", False),
    ("bench-sparse-blob-without-weights-0x8", "bench-sparse --blob EW08.dcz --out bs", "holds no weights", False),
    ("bench-sparse-blob-without-weights-4x0", "bench-sparse --blob EW40.dcz --out bs", "holds no weights", False),
]


@pytest.mark.parametrize("case", CONTRACT_CASES, ids=[c[0] for c in CONTRACT_CASES])
def test_contract_bad_input_is_one_line_and_exit_2(tmp_path, case):
    make_contract_inputs(str(tmp_path))
    test_bad_input_is_one_line_and_exit_2(str(tmp_path), case)
# ---------------------------------------------------------------------------------------------------------
# The Caffe-free path (issue 22): the codec commands with pycaffe hidden (``sys.modules["caffe"] = None``),
# so these run on a machine without Caffe and in the image alike. Same rules: exit 2, one line, no
# traceback, inputs unchanged, nothing written.

CAFFE_FREE_FILES = {
    "C.prototxt": b'name: "c"\nlayer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 '
                  b'dim: 4 dim: 4 } } }\nlayer { name: "ip1" type: "Convolution" bottom: "data" top: "ip1" '
                  b'convolution_param { num_output: 4 kernel_size: 9 } }\n',
    "W.prototxt": DEPLOY.replace("num_output: 2", "num_output: 5").encode(),
    "PR.prototxt": DEPLOY.encode() + b'layer { name: "pr" type: "PReLU" bottom: "ip2" top: "pr" }\n',
    "X.prototxt": b'layer { name: "a" type: }\n',
    "J.caffemodel": b"\x07\x07\x07",
    "NEG.caffemodel": _layer("ip1", declared=((1 << 64) - 3, 4)),   # -3 as protobuf writes an int64
    "V1.caffemodel": cm._field(2, cm._field(4, b"relu") + cm._key(5, 0) + cm._enc_varint(18)),
}
CAFFE_FREE_CASES = [
    ("cf-encode-three-files", "encode P.prototxt Q.caffemodel F -o X.dcz", "[PROTOTXT] CAFFEMODEL"),
    ("cf-binary-prototxt", "encode BIN.prototxt Q.caffemodel -o X.dcz", "not a text prototxt"),
    ("cf-prototxt-does-not-parse", "encode X.prototxt Q.caffemodel -o X.dcz", "does not parse"),
    ("cf-no-layers", "encode EMPTY.prototxt Q.caffemodel -o X.dcz", "no layers"),
    ("cf-num-output-0", "encode Z.prototxt Q.caffemodel -o X.dcz", "num_output 0"),
    ("cf-undefined-bottom", "encode B.prototxt Q.caffemodel -o X.dcz", "ipX"),
    ("cf-pooling-stride-0", "encode S.prototxt Q.caffemodel -o X.dcz", "stride of 0"),
    ("cf-kernel-larger-than-input", "import-net C.prototxt N.net -o X.caffemodel", "does not fit"),
    ("cf-shapes-differ", "encode W.prototxt Q.caffemodel -o X.dcz", "layer 'ip2' has blobs"),
    ("cf-declares-4TiB", "encode H40.caffemodel -o X.dcz", "needs 1099511627776"),
    ("cf-declares-4TiB-with-prototxt", "encode P.prototxt H40.caffemodel -o X.dcz", "needs 1099511627776"),
    ("cf-negative-dimension", "encode NEG.caffemodel -o X.dcz", "negative dimension"),
    ("cf-garbage-caffemodel", "encode J.caffemodel -o X.dcz", "not a valid caffemodel"),
    ("cf-no-parameters", "encode V1.caffemodel -o X.dcz", "no layers with parameters"),
    ("cf-prototxt-for-caffemodel", "encode Q.caffemodel -o Q.caffemodel", "overwrite"),
    ("cf-decode-garbage", "decode M.dcz -o X.caffemodel", "unsupported format version"),
    ("cf-import-net-unknown-type", "import-net T.prototxt N.net -o X.caffemodel", "need Caffe"),
    ("cf-import-net-unmodelled-layer", "import-net PR.prototxt N.net -o X.caffemodel", "PReLU"),
    ("cf-import-net-train-val", "import-net TV.prototxt N.net -o X.caffemodel", "deploy"),
    ("cf-export-net-garbage-caffemodel", "export-net P.prototxt J.caffemodel -o X.net", "not a valid caffemodel"),
    ("cf-export-net-binary-deploy", "export-net BIN.prototxt Q.caffemodel -o X.net", "not a text prototxt"),
]


@pytest.fixture(scope="module")
def caffe_free_work(work):
    for name, data in CAFFE_FREE_FILES.items():
        with open(os.path.join(work, name), "wb") as f:
            f.write(data)
    return work


@pytest.mark.parametrize("case", CAFFE_FREE_CASES, ids=[c[0] for c in CAFFE_FREE_CASES])
def test_bad_input_without_caffe(caffe_free_work, case):
    _, command, fragment = case
    before = _snapshot(caffe_free_work)
    p = run_cli(*command.split(), cwd=caffe_free_work, timeout=120, caffe=False)
    after = _snapshot(caffe_free_work)
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and fragment in lines[0], p.stderr
    assert after == before


# ============================================================================ block: one run (issue 30)
# Check first, write after: every refusal of reproduce / compress comes before the run folder, the data
# root or anything else is touched, including a finished run's folder (``done/``, its files compared
# byte for byte, folders included) and a folder not yet made (``fresh``). Schedules holding numbers
# no float holds, NaN, Infinity, strings or booleans are one line naming the key. Seeds are checked
# when parsed. decode --verify checks before it replaces an earlier output (``OLD.caffemodel``).

HUGE = "1" + "0" * 400      # an integer JSON reads fine and float() cannot hold


def _schedule(**changes):
    doc = {"rounds": 1, "iters_per_round": 1, "finetune_iters": 1, "lr_factor": 0.1, "densities": {"*": 0.5}}
    doc.update(changes)
    return json.dumps(doc)


ONE_RUN_SCHEDULES = {
    "big-target.json": _schedule(densities=None, budget="@").replace('"densities": null, ', "")
                                                            .replace('"@"', '{"target_rate": %s}' % HUGE),
    "big-loop.json": _schedule(closed_loop="@").replace('"@"', '{"max_drop_pp": %s, "max_rounds": 3}' % HUGE),
    "big-lr.json": _schedule(lr_factor="@").replace('"@"', HUGE),
    "big-density.json": _schedule(densities="@").replace('"@"', '{"*": %s}' % HUGE),
    "big-bits.json": _schedule(bits="@").replace('"@"', '{"*": %s}' % HUGE),
    "big-rounds.json": _schedule(rounds=10 ** 20),
    "nan.json": _schedule(lr_factor="@").replace('"@"', "NaN"),
    "inf.json": _schedule(densities="@").replace('"@"', '{"*": Infinity}'),
    "string.json": _schedule(rounds="3"),
    "bool.json": _schedule(lr_factor=True),
    "deep.json": _schedule(description="@").replace('"@"', "[" * 100000 + "]" * 100000),
    "budget-list.json": _schedule(budget=[30]),
    "loop-rounds.json": _schedule(closed_loop={"max_drop_pp": 1, "max_rounds": "x"}),
    "densities-list.json": _schedule(densities=[0.5]),
    "none-match.json": _schedule(densities={"nosuchlayer": 0.5}),
}
ONE_RUN_DONE = {   # a finished run's folder: no refused run may change a byte of it
    "schedule.json": _schedule(), "pipeline.json": '{"report": {"done": true}}', "model.dcz": "the model",
    ".caffe-dc.lock": '{"pid": 1, "command": "the run that made it"}\n', "reference/lenet-300-100.caffemodel": "w"}


def _tiny_net(d, name, body):
    """A solver and train_val of one's own reading 1x4x4 LMDBs beside them (``compress``)."""
    tv = ('name: "%s"\n' % name +
          'layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }\n'
          '  data_param { source: "u_train" batch_size: 4 backend: LMDB } }\n'
          'layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }\n'
          '  data_param { source: "u_val" batch_size: 4 backend: LMDB } }\n' + body +
          'layer { name: "acc" type: "Accuracy" bottom: "out" bottom: "label" top: "acc" include { phase: TEST } }\n'
          'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "out" bottom: "label" top: "loss" }\n')
    with open(os.path.join(d, "%s.prototxt" % name), "w") as f:
        f.write(tv)
    with open(os.path.join(d, "%s-solver.prototxt" % name), "w") as f:
        f.write('net: "%s.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 10\ntest_iter: 1\n'
                'test_interval: 1000\nsolver_mode: CPU\n' % name)


def make_one_run_inputs(d):
    r = np.random.RandomState(1)
    for name, text in ONE_RUN_SCHEDULES.items():
        with open(os.path.join(d, "sched-" + name), "w") as f:
            f.write(text)
    for name, text in ONE_RUN_DONE.items():
        os.makedirs(os.path.dirname(os.path.join(d, "done", name)), exist_ok=True)
        with open(os.path.join(d, "done", name), "w") as f:
            f.write(text)
    os.symlink("loop.caffemodel", os.path.join(d, "loop.caffemodel"))
    os.symlink("loop.dcz", os.path.join(d, "loop.dcz"))
    with open(os.path.join(d, "G.caffemodel"), "wb") as f:
        f.write(b"\x07\x07\x07 not a caffemodel")
    from caffe_dc.codec import container

    w = r.randn(4, 8).astype(np.float32)
    data, _ = container.write("tiny", [container.RawBlob("ip1", "InnerProduct", 0, w),
                                       container.RawBlob("ip1", "InnerProduct", 1, np.zeros(4, np.float32))])
    with open(os.path.join(d, "GOOD.dcz"), "wb") as f:
        f.write(data)
    with open(os.path.join(d, "OLD.caffemodel"), "wb") as f:   # an earlier decode's output
        f.write(b"the previous output")
    with open(os.path.join(d, "U.caffemodel"), "wb") as f:
        f.write(_layer("ip", [r.randn(4, 16), r.randn(4)]))
    if HAVE_CAFFE:
        from caffe_dc.pycaffe import datasets

        for split, n in (("u_train", 16), ("u_val", 8)):
            datasets._write_lmdb(os.path.join(d, split), r.randint(0, 255, (n, 4, 4)).astype(np.uint8),
                                 np.arange(n) % 4)
        _tiny_net(d, "U", 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "out" '
                          'inner_product_param { num_output: 4 } }\n')
        _tiny_net(d, "NP", 'layer { name: "flat" type: "Flatten" bottom: "data" top: "out" }\n')


REPRO = "reproduce lenet-300-100 --data fashion-mnist --data-root data --out "   # offline data, as the image has it
COMPRESS = "compress --solver U-solver.prototxt --weights U.caffemodel --out "
ONE_RUN_CASES = [
    # schedule numbers, through reproduce (into a finished folder) and compress (into a fresh one)
    ("reproduce-schedule-huge-target-rate", REPRO + "done --schedule sched-big-target.json", "budget.target_rate is too large", True),
    ("reproduce-schedule-huge-max-drop", REPRO + "done --schedule sched-big-loop.json", "closed_loop max_drop_pp is too large", True),
    ("reproduce-schedule-huge-lr-factor", REPRO + "done --schedule sched-big-lr.json", "lr_factor is too large", True),
    ("reproduce-schedule-huge-density", REPRO + "done --schedule sched-big-density.json", "is too large", True),
    ("reproduce-schedule-huge-bits", REPRO + "done --schedule sched-big-bits.json", "is too large", True),
    ("reproduce-schedule-rounds-10^20", REPRO + "done --schedule sched-big-rounds.json", "rounds must be an integer in 1..1000", True),
    ("reproduce-schedule-nan", REPRO + "done --schedule sched-nan.json", "lr_factor must be a finite number", True),
    ("reproduce-schedule-infinity", REPRO + "done --schedule sched-inf.json", "must be a finite number", True),
    ("reproduce-schedule-string", REPRO + "done --schedule sched-string.json", "rounds must be an integer", True),
    ("reproduce-schedule-bool", REPRO + "done --schedule sched-bool.json", "lr_factor must be a number", True),
    ("reproduce-schedule-nested-deep", REPRO + "done --schedule sched-deep.json", "not valid JSON", True),
    ("reproduce-schedule-budget-list", REPRO + "done --schedule sched-budget-list.json --target-rate 30", "budget must be an object", True),
    ("reproduce-schedule-loop-rounds-string", REPRO + "done --schedule sched-loop-rounds.json --max-drop 1", "closed_loop max_rounds", True),
    ("reproduce-schedule-densities-list", REPRO + "done --schedule sched-densities-list.json --density 0.5", "densities must be an object", True),
    ("reproduce-schedule-matches-no-layer", REPRO + "done --schedule sched-none-match.json", "nosuchlayer", True),
    ("compress-schedule-huge-target-rate", COMPRESS + "fresh --schedule sched-big-target.json", "budget.target_rate is too large", True),
    ("compress-schedule-huge-max-drop", COMPRESS + "fresh --schedule sched-big-loop.json", "closed_loop max_drop_pp is too large", True),
    ("compress-schedule-huge-lr-factor", COMPRESS + "fresh --schedule sched-big-lr.json", "lr_factor is too large", True),
    ("compress-schedule-huge-density", COMPRESS + "fresh --schedule sched-big-density.json", "is too large", True),
    ("compress-schedule-nan", COMPRESS + "fresh --schedule sched-nan.json", "lr_factor must be a finite number", True),
    # seeds, when parsed
    ("reproduce-seed-negative", "reproduce lenet-300-100 --seed -5", "--seed", False),
    ("reproduce-seed-0", "reproduce lenet-300-100 --seed 0", "--seed", False),
    ("reproduce-seed-2^31", "reproduce lenet-300-100 --seed 2147483648", "--seed", False),
    ("reproduce-seed-huge", "reproduce lenet-300-100 --seed " + HUGE, "--seed", False),
    ("reproduce-seeds-101", "reproduce lenet-300-100 --seeds 101", "--seeds", False),
    ("reproduce-seeds-10^20", "reproduce lenet-300-100 --seeds 100000000000000000000", "--seeds", False),
    ("reproduce-last-seed-too-large", REPRO + "fresh --seed 2147483647 --seeds 2", "above Caffe's largest seed", True),
    ("compress-seed-negative", "compress --solver S.prototxt --weights Q.caffemodel --seed -5", "--seed", False),
    ("train-seed-negative", "train lenet-5 --seed -1", "--seed", False),
    ("storage-seed-negative", "storage alexnet --seed -1", "--seed", False),
    # weights against the net, before anything is written
    ("reproduce-weights-mismatched", REPRO + "done --weights Q.caffemodel", "Q.caffemodel", True),
    ("reproduce-weights-garbage", REPRO + "done --weights G.caffemodel", "G.caffemodel", True),
    ("reproduce-weights-symlink-loop", REPRO + "fresh --weights loop.caffemodel", "symlink loop", True),
    ("compress-weights-mismatched", "compress --solver U-solver.prototxt --weights Q.caffemodel --out fresh",
     "Q.caffemodel", True),
    # a net with nothing to prune, a rate its sizes cannot reach, data that is not there
    ("compress-no-prunable-layer", "compress --solver NP-solver.prototxt --weights U.caffemodel --out fresh",
     "no prunable layer", True),
    ("compress-no-prunable-layer-with-schedule",
     "compress --solver NP-solver.prototxt --weights U.caffemodel --schedule sched-bool.json --out fresh",
     "no prunable layer", True),
    ("reproduce-target-rate-out-of-reach", REPRO + "done --target-rate 1e9", "out of reach", True),
    ("compress-target-rate-out-of-reach", COMPRESS + "fresh --target-rate 1e9", "out of reach", True),
    ("reproduce-idx-without-files", "reproduce lenet-300-100 --data-root data --out fresh --idx dir",
     "no train-images-idx3-ubyte", True),
    # decode --verify: every check before the output is replaced
    ("decode-verify-missing", "decode GOOD.dcz -o OLD.caffemodel --verify missing.caffemodel", "no such caffemodel",
     False),
    ("decode-verify-garbage", "decode GOOD.dcz -o OLD.caffemodel --verify G.caffemodel", "G.caffemodel", False),
    ("decode-verify-mismatched", "decode GOOD.dcz -o OLD.caffemodel --verify Q.caffemodel", "not bit-identical",
     False),
    ("decode-verify-symlink-loop", "decode GOOD.dcz -o OLD.caffemodel --verify loop.caffemodel", "symlink loop",
     False),
    ("decode-symlink-loop", "decode loop.dcz -o X.caffemodel", "symlink loop", False),
]


@pytest.fixture(scope="module")
def one_run_work():
    d = tempfile.mkdtemp(prefix="caffe-dc-one-run.")
    try:
        make_inputs_plain(d)
        make_one_run_inputs(d)
        yield d
    finally:
        shutil.rmtree(d)


def make_inputs_plain(d):
    """``make_inputs`` without its read-only folder (these cases run as whoever runs the tests)."""
    make_inputs(d)
    os.chmod(os.path.join(d, "ro"), 0o755)
    shutil.rmtree(os.path.join(d, "ro"))


@pytest.mark.parametrize("case", ONE_RUN_CASES, ids=[c[0] for c in ONE_RUN_CASES])
def test_one_run_refusals_touch_nothing(one_run_work, case):
    test_bad_input_is_one_line_and_exit_2(one_run_work, case)
