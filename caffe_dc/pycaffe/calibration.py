"""Calibration images for post-hoc compression, and the forward pass that turns them into activations.

``encode --calib DATA`` measures what compression costs on a few images the
user has. DATA is one of:

* an MNIST-format IDX pair: a folder (its ``train-images`` file, else its only
  images file) or an images file, the labels beside it by name
  (``...images...`` -> ``...labels...``) when there;
* an LMDB of Caffe ``Datum`` records (raw bytes or float data, labelled), read
  without Caffe;
* a folder of images (png, jpg, bmp...), read by OpenCV as Caffe's
  ``convert_imageset`` reads them (BGR), resized to the net's input; no labels.

They are preprocessed as the net's Data layer says (``transform_param``:
centre crop as in TEST, mean file or mean values, scale), with
``Preprocess`` options where the prototxt says nothing (a deploy net).

The forward pass runs the net, with its Data and label layers replaced by an
Input layer, in pycaffe where it is installed, else in OpenCV 4.x's own Caffe
importer (``cv2.dnn``); without either, calibration is refused in one line.
"""
from __future__ import annotations

import os
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from caffe_dc.base.errors import InputError
from caffe_dc.base.limits import MIN_CALIBRATION_IMAGES
from caffe_dc.codec.caffe_proto import layer_type
from caffe_dc.codec.net_shapes import TEST, included

MIN_IMAGES = MIN_CALIBRATION_IMAGES
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp")
DATA_TYPES = ("Data", "ImageData", "HDF5Data", "MemoryData", "DummyData", "WindowData")
LABEL_SINKS = ("Accuracy", "SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss",
               "InfogainLoss", "MultinomialLogisticLoss", "ContrastiveLoss", "Silence")


class Preprocess(NamedTuple):
    """What the prototxt's ``transform_param`` says, or the options given where it says nothing."""
    scale: float = 1.0
    mean_values: Tuple[float, ...] = ()
    mean_file: Optional[str] = None
    crop: int = 0
    rgb: bool = False          # images from a folder in RGB order rather than Caffe's BGR


class Calibration(NamedTuple):
    images: np.ndarray         # (N, C, H, W) float32, preprocessed for the net
    labels: Optional[np.ndarray]
    source: str
    kind: str                  # "idx", "lmdb" or "images"


# ---------------------------------------------------------------- reading

def read(path: str, limit: Optional[int] = None, seed: int = 0) -> Tuple[np.ndarray, Optional[np.ndarray], str]:
    """(raw images (N, C, H, W) uint8 or float, labels or None, kind) from DATA; ``limit``: a seeded sample."""
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "data.mdb")):
        x, y, kind = _read_lmdb(path, limit, seed) + ("lmdb",)
    elif os.path.isdir(path) and _idx_images(path):
        x, y, kind = _read_idx(_idx_images(path)) + ("idx",)
    elif os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise InputError("%s holds no IDX files, no LMDB and no images (%s)" % (path, ", ".join(IMAGE_EXTENSIONS)))
        if limit is not None and len(files) > limit:
            pick = np.sort(np.random.RandomState(seed).permutation(len(files))[:limit])
            files = [files[i] for i in pick]
        return [os.path.join(path, f) for f in files], None, "images"
    elif os.path.isfile(path):
        x, y, kind = _read_idx(path) + ("idx",)
    else:
        raise InputError("no such calibration data: %s" % path)
    if limit is not None and x.shape[0] > limit:
        pick = _sample(x.shape[0], limit, seed)
        x, y = x[pick], (None if y is None else y[pick])
    return x, y, kind


def _sample(n: int, limit: int, seed: int) -> np.ndarray:
    """The seeded sample of ``limit`` of ``n`` records, ascending."""
    return np.sort(np.random.RandomState(seed).permutation(n)[:limit])


def _idx_images(folder: str) -> Optional[str]:
    names = sorted(f for f in os.listdir(folder) if "images" in f and ("idx" in f or f.endswith(".gz")))
    train = [f for f in names if f.startswith("train")]
    if train or len(names) == 1:
        return os.path.join(folder, (train or names)[0])
    if names:
        raise InputError("%s holds several IDX image files (%s): name one" % (folder, ", ".join(names)))
    return None


def _read_idx(images_path: str):
    from caffe_dc.base.idx import labels_beside, load_idx

    x = load_idx(images_path)
    if x.ndim not in (3, 4):
        raise InputError("%s: IDX images need 3 (N, H, W) or 4 (N, C, H, W) dimensions, found %d" % (images_path, x.ndim))
    x = x[:, None] if x.ndim == 3 else x
    labels_path = labels_beside(images_path)
    if labels_path is None or not os.path.isfile(labels_path):
        return x, None
    y = load_idx(labels_path, ndim=1)
    if y.shape[0] != x.shape[0]:
        raise InputError("%s has %d images but %s has %d labels" % (images_path, x.shape[0], labels_path, y.shape[0]))
    return x, y.astype(np.int64)


def _read_lmdb(path: str, limit: Optional[int] = None, seed: int = 0):
    """Datum records (channels 1, height 2, width 3, data 4, label 5, float_data 6, encoded 7), no Caffe;
    ``limit``: only the records of ``read``'s seeded sample are decoded (a training LMDB may not fit in memory)."""
    try:
        import lmdb
    except ImportError:
        raise InputError("%s is an LMDB: reading it needs the lmdb package (pip install lmdb)" % path)

    from caffe_dc.codec.caffemodel import fields

    try:
        env = lmdb.open(path, readonly=True, lock=False)
    except lmdb.Error as e:
        raise InputError("%s is not a readable LMDB (%s)" % (path, e))
    images, labels = [], []
    with env.begin() as txn:
        n = txn.stat()["entries"]
        wanted = None if limit is None or n <= limit else set(_sample(n, limit, seed).tolist())
        cursor = txn.cursor()
        for i, k in enumerate(cursor.iternext(keys=True, values=False)):
            if wanted is not None and i not in wanted:
                continue
            v = cursor.value()
            rec = {1: 0, 2: 0, 3: 0, 5: None}
            data = None
            try:
                for num, wt, val in fields(v, 0, len(v)):
                    if num in (1, 2, 3, 5) and wt == 0:
                        rec[num] = val
                    elif num == 4 and wt == 2:
                        data = np.frombuffer(v[val[0]:val[1]], np.uint8)
                    elif num == 6 and wt == 2:
                        data = np.frombuffer(v[val[0]:val[1]], "<f4")
                    elif num == 7 and wt == 0 and val:
                        raise InputError("%s holds encoded (compressed) images: decode them into raw Datum "
                                         "records or give a folder of images" % path)
                shape = (rec[1], rec[2], rec[3])
                if data is None or data.size != shape[0] * shape[1] * shape[2]:
                    raise ValueError("record %r holds %s values for shape %s" % (k, None if data is None else data.size, shape))
            except ValueError as e:
                raise InputError("%s is not an LMDB of Caffe Datum records (%s)" % (path, e))
            if images and shape != images[0].shape:
                raise InputError("%s: record %r has shape %s, the first %s" % (path, k, shape, images[0].shape))
            images.append(data.reshape(shape))
            labels.append(rec[5])
    env.close()
    if not images:
        raise InputError("LMDB %s is empty" % path)
    y = None if any(l is None for l in labels) else np.asarray(labels, np.int64)
    return np.stack(images), y


def _read_images(files: Sequence[str], shape: Tuple[int, int, int], rgb: bool) -> np.ndarray:
    cv2 = _cv2()
    if cv2 is None:
        raise InputError("reading a folder of images needs OpenCV (python3-opencv, or opencv-python-headless<5)")
    c, h, w = shape
    out = np.empty((len(files), c, h, w), np.float32)
    for i, f in enumerate(files):
        im = cv2.imread(f, cv2.IMREAD_COLOR if c == 3 else cv2.IMREAD_GRAYSCALE)
        if im is None:
            raise InputError("cannot read image %s" % f)
        if im.shape[:2] != (h, w):
            im = cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR)
        im = im.reshape(h, w, -1)
        if rgb and c == 3:
            im = im[:, :, ::-1]
        out[i] = im.transpose(2, 0, 1)
    return out


def _cv2():
    try:
        import cv2
    except ImportError:
        return None
    if int(cv2.__version__.split(".")[0]) >= 5 or not hasattr(cv2, "dnn"):
        return None
    return cv2


# ---------------------------------------------------------------- the net's view of them

def data_layer(net_param):
    """The TEST-phase data layer (Data, ImageData...), or None for a net with an Input layer."""
    cands = [l for l in net_param.layer if layer_type(l) in DATA_TYPES and included(l, TEST)]
    return cands[0] if cands else None


def preprocess_from(net_param, given: Preprocess, given_fields: Sequence[str]) -> Preprocess:
    """The net's ``transform_param`` where it has one, the given options for what it does not say;
    a given option that contradicts the prototxt is refused."""
    layer = data_layer(net_param)
    if layer is None or not layer.HasField("transform_param"):
        return given
    tp = layer.transform_param
    found = {"scale": float(tp.scale) if tp.HasField("scale") else None,
             "mean_values": tuple(float(v) for v in tp.mean_value) or None,
             "mean_file": tp.mean_file if tp.HasField("mean_file") else None,
             "crop": int(tp.crop_size) if tp.crop_size else None}
    out = given._asdict()
    for k, v in found.items():
        if v is None:
            continue
        if k in given_fields and out[k] != v:
            raise InputError("--calib-%s %s contradicts the prototxt's transform_param (%s: %s)"
                             % (k.replace("_", "-"), out[k], k, v))
        out[k] = v
    return Preprocess(**out)


def transform(x: np.ndarray, p: Preprocess) -> np.ndarray:
    """Caffe's TEST-phase DataTransformer: centre crop, minus the mean, times the scale."""
    x = np.asarray(x, np.float32)
    mean = None
    if p.mean_file:
        mean = _mean_file(p.mean_file)
        if mean.shape[-3] != x.shape[1] or mean.shape[-2:] != x.shape[2:]:
            raise InputError("the mean file %s is %s, the images %s" % (p.mean_file, mean.shape, x.shape[1:]))
    if p.crop:
        h, w = x.shape[2:]
        if p.crop > min(h, w):
            raise InputError("crop %d is larger than the %dx%d calibration images" % (p.crop, h, w))
        top, left = (h - p.crop) // 2, (w - p.crop) // 2
        x = x[:, :, top:top + p.crop, left:left + p.crop]
        mean = None if mean is None else mean[..., top:top + p.crop, left:left + p.crop]
    if mean is not None:
        x = x - mean.reshape((1,) + mean.shape[-3:])
    elif p.mean_values:
        mv = np.asarray(p.mean_values, np.float32)
        if mv.size not in (1, x.shape[1]):
            raise InputError("%d mean values for %d-channel images" % (mv.size, x.shape[1]))
        x = x - mv.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(x * np.float32(p.scale), np.float32)


def _mean_file(path: str) -> np.ndarray:
    from caffe_dc.codec.caffemodel import _blob, _Budget

    if not os.path.isfile(path):
        raise InputError("no such mean file: %s" % path)
    with open(path, "rb") as f:
        buf = f.read()
    try:
        return _blob(buf, 0, len(buf), _Budget(len(buf), 1 << 30, path))
    except ValueError as e:
        raise InputError("%s is not a Caffe mean file (BlobProto): %s" % (path, e))


def load(path: str, net_param, input_shape: Optional[Sequence[int]], p: Preprocess, limit: Optional[int],
         seed: int = 0) -> Calibration:
    """The calibration images, preprocessed; ``input_shape`` (C, H, W) if the prototxt gives it (a
    deploy net's Input), checked against the data; None: taken from the data (a train_val's Data layer)."""
    raw, labels, kind = read(path, limit, seed)
    if kind == "images":
        if input_shape is None:
            raise InputError("a folder of images needs a prototxt with an Input shape (a deploy net) to size them")
        c, h, w = input_shape
        if p.crop:
            raise InputError("a folder of images is resized to the net's input, so crop does not apply")
        x = transform(_read_images(raw, (c, h, w), p.rgb), p)
    else:
        x = transform(raw, p)
        if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
            raise InputError("the calibration images are %s after preprocessing, the net takes %s"
                             % ("x".join(map(str, x.shape[1:])), "x".join(map(str, input_shape))))
    if x.shape[0] < MIN_IMAGES:
        raise InputError("%s has %d images: calibration needs at least %d" % (path, x.shape[0], MIN_IMAGES))
    return Calibration(x, labels, path, kind)


# ---------------------------------------------------------------- the forward pass

def input_net(net_param, shape: Sequence[int]):
    """A copy of the net for arrays: TEST-phase layers only, its data layers replaced by one Input layer
    ``data`` of ``shape`` (N, C, H, W), and every layer that reads the labels (Accuracy, losses) dropped.
    Returns (net, name of the input blob)."""
    out = type(net_param)()
    out.CopyFrom(net_param)
    del out.layer[:]
    src = data_layer(net_param)
    data_top = src.top[0] if src is not None else None
    labels = set(src.top[1:]) if src is not None else set()
    for l in net_param.layer:
        if not included(l, TEST) or l is src or layer_type(l) in DATA_TYPES:
            continue
        if layer_type(l) in LABEL_SINKS or labels & set(l.bottom):
            continue
        new = out.layer.add()
        new.CopyFrom(l)
        del new.include[:]
        del new.exclude[:]
    if data_top is None:
        inputs = [l for l in out.layer if layer_type(l) == "Input"]
        if not inputs and len(net_param.input):
            data_top = net_param.input[0]
        elif inputs:
            data_top = inputs[0].top[0]
            out.layer.remove(inputs[0])
        else:
            raise InputError("the net has neither a Data nor an Input layer to feed calibration images through")
        del out.input[:]
        del out.input_shape[:]
        del out.input_dim[:]
    kept = [type(l)() for l in out.layer]
    for m, l in zip(kept, out.layer):
        m.CopyFrom(l)
    del out.layer[:]
    layer = out.layer.add()
    layer.name, layer.type = "calibration_input", "Input"
    layer.top.append(data_top)
    layer.input_param.shape.add().dim.extend(int(d) for d in shape)
    out.layer.extend(kept)
    return out, data_top


def net_input_shape(net_param) -> Optional[Tuple[int, int, int]]:
    """(C, H, W) of a deploy net's Input layer or ``input_shape``; None for a train_val."""
    for l in net_param.layer:
        if layer_type(l) == "Input" and len(l.input_param.shape):
            d = list(l.input_param.shape[0].dim)
            return tuple(int(v) for v in d[1:]) if len(d) == 4 else None
    if len(net_param.input_shape):
        d = list(net_param.input_shape[0].dim)
        return tuple(int(v) for v in d[1:]) if len(d) == 4 else None
    if len(net_param.input_dim) >= 4:
        return tuple(int(v) for v in net_param.input_dim[1:4])
    return None


class Forward:
    """A net run on calibration arrays: the inputs each layer reads, and the scores.

    ``layers``: the net's layers in order (name, type, bottoms, tops); ``inputs(batch, names)``: for
    each named layer the array its first bottom holds when it runs (after any in-place layer before it);
    ``scores(batch)``: the net's output blob."""

    def __init__(self, net_param, shape, params):
        self.param, self.data = input_net(net_param, shape)
        self.batch = int(shape[0])
        self.layers = [(l.name, layer_type(l), list(l.bottom), list(l.top)) for l in self.param.layer]
        consumed = {b for _, _, bots, _ in self.layers for b in bots}
        tops = [t for _, _, _, ts in self.layers for t in ts]
        outs = [t for t in tops if t not in consumed]
        if not outs:
            raise InputError("the net has no output blob")
        self.output = outs[-1]

    # -- stepping through the net: a *state* is where a batch stands before some layer runs. Here
    # (the OpenCV path) it is the batch itself, and each step runs the net from its input again;
    # pycaffe (``CaffeForward``) keeps the blobs live at that point and runs only the layers between.

    def start(self, x: np.ndarray):
        """The state of batch ``x`` before the net's first layer."""
        return x

    def advance(self, state, layer: str):
        """(the array ``layer`` reads, the state just before ``layer`` runs), with the weights as now set."""
        return self.inputs(state, [layer])[layer], state

    def finish(self, state) -> np.ndarray:
        """The net's output from ``state`` on, with the weights as now set."""
        return self.scores(state)

    def param_names(self) -> List[str]:
        """The layers of the net whose parameters ``set`` takes."""
        raise NotImplementedError

    def writer_before(self, layer: str, blob: str) -> str:
        """The last layer before ``layer`` that writes ``blob`` (in-place layers included)."""
        last = None
        for name, _, _, tops in self.layers:
            if name == layer:
                return last
            if blob in tops:
                last = name
        raise KeyError(layer)


class CaffeForward(Forward):
    def __init__(self, net_param, shape, params, work_dir: str):
        from caffe_dc.pycaffe.caffemodel import caffe_pb2, save_net_proto
        from caffe_dc.pycaffe.solving import import_caffe
        from google.protobuf import text_format

        caffe = import_caffe()
        full = caffe_pb2().NetParameter()
        text_format.Merge(text_format.MessageToString(net_param), full)   # pycaffe's own messages, every field
        super().__init__(full, shape, params)
        path = os.path.join(work_dir, "calibration_net.prototxt")
        save_net_proto(self.param, path)
        self.net = caffe.Net(path, caffe.TEST)
        for name in self.net.params:
            self.set(name, params[name].blobs)

        # Caffe's own layer list (with the Split layers it inserts where a blob feeds several layers):
        # a blob is live before position q if written before q (the input: before 0) and read at or after q
        self.order = list(self.net._layer_names)
        self.pos = {n: i for i, n in enumerate(self.order)}
        written, read = {self.data: -1}, {}
        for i, n in enumerate(self.order):
            for b in self.net.bottom_names[n]:
                read[b] = i
            for t in self.net.top_names[n]:
                written.setdefault(t, i)
        self._live = lambda q: [b for b, w in written.items() if w < q <= read.get(b, -1)]

    def start(self, x: np.ndarray):
        return 0, {self.data: np.array(x, np.float32)}

    def _load(self, state) -> int:
        p, blobs = state
        for k, v in blobs.items():
            self.net.blobs[k].data[...] = v
        return p

    def advance(self, state, layer: str):
        """Runs only the layers between the state's position and ``layer``; the state it returns holds
        copies of the blobs live there (for a residual net, the stream and its shortcut)."""
        p, q = self._load(state), self.pos[layer]
        if q < p:
            raise ValueError("%s runs before the state's position" % layer)
        if q > p:
            self.net._forward(p, q - 1)
        x = self.net.blobs[self.net.bottom_names[layer][0]].data.copy()
        return x, (q, {b: self.net.blobs[b].data.copy() for b in self._live(q)})

    def finish(self, state) -> np.ndarray:
        p = self._load(state)
        self.net._forward(p, len(self.order) - 1)
        return self.net.blobs[self.output].data.reshape(self.batch, -1).copy()

    def param_names(self) -> List[str]:
        return list(self.net.params.keys())

    def set(self, layer: str, blobs) -> None:
        for dst, src in zip(self.net.params[layer], blobs):
            dst.data[...] = np.asarray(src).reshape(dst.data.shape)

    def inputs(self, x: np.ndarray, names: Sequence[str]) -> Dict[str, np.ndarray]:
        self.net.blobs[self.data].data[...] = x
        out = {}
        done = 0                                   # layers order[:done] have run on this batch
        for i in sorted(self.pos[n] for n in names):
            if i > done:
                self.net._forward(done, i - 1)
                done = i
            out[self.order[i]] = self.net.blobs[self.net.bottom_names[self.order[i]][0]].data.copy()
        return out

    def scores(self, x: np.ndarray) -> np.ndarray:
        self.net.blobs[self.data].data[...] = x
        return self.net.forward()[self.output].reshape(x.shape[0], -1).copy()


class OpenCVForward(Forward):
    """The same on OpenCV 4.x's own Caffe importer (``cv2.dnn``), for a machine without Caffe.

    OpenCV fuses layers (a BatchNorm and Scale into the convolution before them) when it first
    runs a net, and a parameter set afterwards would not reach the fused copy; so the net is read
    afresh from the prototxt and a caffemodel of the current weights whenever they have changed."""

    def __init__(self, net_param, shape, params, work_dir: str):
        from google.protobuf import text_format

        super().__init__(net_param, shape, params)
        self.cv2 = _cv2()
        self.work = work_dir
        self.prototxt = os.path.join(work_dir, "calibration_net.prototxt")
        with open(self.prototxt, "w") as f:
            f.write(text_format.MessageToString(self.param))
        self.params = dict(params)
        self.net = None

    def param_names(self) -> List[str]:
        names = {l[0] for l in self.layers}
        return [n for n in self.params if n in names]

    def set(self, layer: str, blobs) -> None:
        from caffe_dc.base.params import LayerParams

        self.params[layer] = LayerParams(self.params[layer].type, [np.asarray(b, np.float32) for b in blobs])
        self.net = None

    def _net(self):
        if self.net is None:
            from caffe_dc.codec.caffemodel import save_params

            model = os.path.join(self.work, "calibration.caffemodel")
            save_params(self.params, model)
            self.net = self.cv2.dnn.readNetFromCaffe(self.prototxt, model)
            self.net.setPreferableBackend(self.cv2.dnn.DNN_BACKEND_OPENCV)
        return self.net

    def _outputs(self, x: np.ndarray, layers: Sequence[str]) -> List[np.ndarray]:
        net = self._net()
        net.setInput(np.ascontiguousarray(x, np.float32))
        return [np.asarray(o) for o in net.forward(list(layers))]

    def inputs(self, x: np.ndarray, names: Sequence[str]) -> Dict[str, np.ndarray]:
        bottoms = {n: [l for l in self.layers if l[0] == n][0][2][0] for n in names}
        writers = {n: self.writer_before(n, b) for n, b in bottoms.items()}
        inner = [n for n in names if writers[n] != self.layers[0][0]]   # the first reads the input itself
        outs = dict(zip(inner, self._outputs(x, [writers[n] for n in inner]) if inner else []))
        return {n: np.array(outs[n] if n in outs else x, np.float32).reshape((x.shape[0],) + (outs[n].shape[1:] if n in outs else x.shape[1:]))
                for n in names}

    def scores(self, x: np.ndarray) -> np.ndarray:
        last = [l[0] for l in self.layers if self.output in l[3]][-1]
        return self._outputs(x, [last])[0].reshape(x.shape[0], -1).copy()


def forward_for(net_param, shape, params, work_dir: str) -> Forward:
    """pycaffe where it is importable, else OpenCV's dnn; neither: a one-line refusal."""
    from caffe_dc.pycaffe.validate import caffe_available

    if caffe_available() and os.environ.get("CAFFE_DC_CALIB_BACKEND") != "opencv":
        return CaffeForward(net_param, shape, params, work_dir)
    if _cv2() is not None:
        return OpenCVForward(net_param, shape, params, work_dir)
    raise InputError("calibration runs the net: it needs pycaffe (the image, ./dc) or OpenCV 4.x "
                     "(opencv-python-headless<5), and neither is importable here")
