"""Caffe's net messages, declared here, for reading prototxts without pycaffe.

The codec commands (encode, decode, inspect, import-net, export-net) need a
prototxt's layer names, types, bottoms/tops and the handful of parameters
that fix the parameter blobs' shapes. Importing pycaffe to reach its
``caffe_pb2`` costs a second (it pulls in scikit-image) and needs Caffe at
all, so the subset of messages the codec reads is declared here with
``descriptor_pb2`` (our own declarations; the field numbers and names are
Caffe's, so the messages read the same text and bytes). Works with the
image's protobuf 3.12 and newer ones.

Fields this subset does not declare (``loss_param``, ``lrn_param``'s
neighbours, newer Caffe forks' additions) are skipped when text is parsed,
and kept as unknown fields when binary is parsed. The parameter blobs of a
caffemodel are not read through these messages (see ``codec.caffemodel``).
"""
from __future__ import annotations

import types

from caffe_dc.base.errors import InputError
from caffe_dc.base.fileio import require_file

_PACKAGE = "caffe_dc_proto"

# (name, number, label, type, type name or default, ...) per message. Labels: o optional, r repeated,
# p repeated packed. Scalar types by protobuf's names; a message or enum type by its name here.
_ENUMS = {
    "Phase": ["TRAIN", "TEST"],
    "DimCheckMode": ["STRICT", "PERMISSIVE"],
    "VarianceNorm": ["FAN_IN", "FAN_OUT", "AVERAGE"],
    "Engine": ["DEFAULT", "CAFFE", "CUDNN"],
    "PoolMethod": ["MAX", "AVE", "STOCHASTIC"],
    "DB": ["LEVELDB", "LMDB"],
    "EltwiseOp": ["PROD", "SUM", "MAX"],
    "NormRegion": ["ACROSS_CHANNELS", "WITHIN_CHANNEL"],
}
# Enums live inside the message that uses them, as in Caffe (``data_param.LMDB``): their values are
# scoped by the message, so PoolMethod's MAX and EltwiseOp's MAX do not clash.
_NESTED = {"ParamSpec": ["DimCheckMode"], "FillerParameter": ["VarianceNorm"],
           "ConvolutionParameter": ["Engine"], "PoolingParameter": ["PoolMethod", "Engine"],
           "DataParameter": ["DB"], "EltwiseParameter": ["EltwiseOp"], "LRNParameter": ["NormRegion", "Engine"],
           "ReLUParameter": ["Engine"], "SoftmaxParameter": ["Engine"], "V1LayerParameter": ["V1LayerType"]}
# V1 layer types: enum value -> (enum name, the V2 type string Caffe upgrades it to).
V1_TYPES = {
    0: ("NONE", ""), 1: ("ACCURACY", "Accuracy"), 2: ("BNLL", "BNLL"), 3: ("CONCAT", "Concat"),
    4: ("CONVOLUTION", "Convolution"), 5: ("DATA", "Data"), 6: ("DROPOUT", "Dropout"),
    7: ("EUCLIDEAN_LOSS", "EuclideanLoss"), 8: ("FLATTEN", "Flatten"), 9: ("HDF5_DATA", "HDF5Data"),
    10: ("HDF5_OUTPUT", "HDF5Output"), 11: ("IM2COL", "Im2col"), 12: ("IMAGE_DATA", "ImageData"),
    13: ("INFOGAIN_LOSS", "InfogainLoss"), 14: ("INNER_PRODUCT", "InnerProduct"), 15: ("LRN", "LRN"),
    16: ("MULTINOMIAL_LOGISTIC_LOSS", "MultinomialLogisticLoss"), 17: ("POOLING", "Pooling"),
    18: ("RELU", "ReLU"), 19: ("SIGMOID", "Sigmoid"), 20: ("SOFTMAX", "Softmax"),
    21: ("SOFTMAX_LOSS", "SoftmaxWithLoss"), 22: ("SPLIT", "Split"), 23: ("TANH", "TanH"),
    24: ("WINDOW_DATA", "WindowData"), 25: ("ELTWISE", "Eltwise"), 26: ("POWER", "Power"),
    27: ("SIGMOID_CROSS_ENTROPY_LOSS", "SigmoidCrossEntropyLoss"), 28: ("HINGE_LOSS", "HingeLoss"),
    29: ("MEMORY_DATA", "MemoryData"), 30: ("ARGMAX", "ArgMax"), 31: ("THRESHOLD", "Threshold"),
    32: ("DUMMY_DATA", "DummyData"), 33: ("SLICE", "Slice"), 34: ("MVN", "MVN"), 35: ("ABSVAL", "AbsVal"),
    36: ("SILENCE", "Silence"), 37: ("CONTRASTIVE_LOSS", "ContrastiveLoss"), 38: ("EXP", "Exp"),
    39: ("DECONVOLUTION", "Deconvolution"),
}
_ENUMS["V1LayerType"] = {k: v[0] for k, v in V1_TYPES.items()}

_FILLER = ("FillerParameter", [
    ("type", 1, "o", "string", "constant"), ("value", 2, "o", "float", None), ("min", 3, "o", "float", None),
    ("max", 4, "o", "float", 1), ("mean", 5, "o", "float", None), ("std", 6, "o", "float", 1),
    ("sparse", 7, "o", "int32", -1), ("variance_norm", 8, "o", "VarianceNorm", "FAN_IN")])

_MESSAGES = [
    ("BlobShape", [("dim", 1, "p", "int64", None)]),
    ("BlobProto", [("shape", 7, "o", "BlobShape", None), ("data", 5, "p", "float", None),
                   ("diff", 6, "p", "float", None), ("double_data", 8, "p", "double", None),
                   ("double_diff", 9, "p", "double", None), ("num", 1, "o", "int32", None),
                   ("channels", 2, "o", "int32", None), ("height", 3, "o", "int32", None),
                   ("width", 4, "o", "int32", None)]),
    ("NetState", [("phase", 1, "o", "Phase", "TEST"), ("level", 2, "o", "int32", None),
                  ("stage", 3, "r", "string", None)]),
    ("NetStateRule", [("phase", 1, "o", "Phase", None), ("min_level", 2, "o", "int32", None),
                      ("max_level", 3, "o", "int32", None), ("stage", 4, "r", "string", None),
                      ("not_stage", 5, "r", "string", None)]),
    ("ParamSpec", [("name", 1, "o", "string", None), ("share_mode", 2, "o", "DimCheckMode", None),
                   ("lr_mult", 3, "o", "float", 1), ("decay_mult", 4, "o", "float", 1)]),
    _FILLER,
    ("ConvolutionParameter", [
        ("num_output", 1, "o", "uint32", None), ("bias_term", 2, "o", "bool", True), ("pad", 3, "r", "uint32", None),
        ("kernel_size", 4, "r", "uint32", None), ("stride", 6, "r", "uint32", None),
        ("dilation", 18, "r", "uint32", None), ("pad_h", 9, "o", "uint32", 0), ("pad_w", 10, "o", "uint32", 0),
        ("kernel_h", 11, "o", "uint32", None), ("kernel_w", 12, "o", "uint32", None),
        ("stride_h", 13, "o", "uint32", None), ("stride_w", 14, "o", "uint32", None),
        ("group", 5, "o", "uint32", 1), ("weight_filler", 7, "o", "FillerParameter", None),
        ("bias_filler", 8, "o", "FillerParameter", None), ("engine", 15, "o", "Engine", None),
        ("axis", 16, "o", "int32", 1), ("force_nd_im2col", 17, "o", "bool", False)]),
    ("InnerProductParameter", [
        ("num_output", 1, "o", "uint32", None), ("bias_term", 2, "o", "bool", True),
        ("weight_filler", 3, "o", "FillerParameter", None), ("bias_filler", 4, "o", "FillerParameter", None),
        ("axis", 5, "o", "int32", 1), ("transpose", 6, "o", "bool", False)]),
    ("PoolingParameter", [
        ("pool", 1, "o", "PoolMethod", "MAX"), ("pad", 4, "o", "uint32", 0), ("pad_h", 9, "o", "uint32", 0),
        ("pad_w", 10, "o", "uint32", 0), ("kernel_size", 2, "o", "uint32", None),
        ("kernel_h", 5, "o", "uint32", None), ("kernel_w", 6, "o", "uint32", None),
        ("stride", 3, "o", "uint32", 1), ("stride_h", 7, "o", "uint32", None), ("stride_w", 8, "o", "uint32", None),
        ("engine", 11, "o", "Engine", None), ("global_pooling", 12, "o", "bool", False)]),
    ("InputParameter", [("shape", 1, "r", "BlobShape", None)]),
    ("DataParameter", [
        ("source", 1, "o", "string", None), ("batch_size", 4, "o", "uint32", None),
        ("rand_skip", 7, "o", "uint32", 0), ("backend", 8, "o", "DB", "LEVELDB"), ("scale", 2, "o", "float", 1),
        ("mean_file", 3, "o", "string", None), ("crop_size", 5, "o", "uint32", 0), ("mirror", 6, "o", "bool", False),
        ("force_encoded_color", 9, "o", "bool", False), ("prefetch", 10, "o", "uint32", 4)]),
    ("ImageDataParameter", [("source", 1, "o", "string", None)]),
    ("HDF5DataParameter", [("source", 1, "o", "string", None)]),
    ("WindowDataParameter", [("source", 1, "o", "string", None)]),
    ("TransformationParameter", [
        ("scale", 1, "o", "float", 1), ("mirror", 2, "o", "bool", False), ("crop_size", 3, "o", "uint32", 0),
        ("mean_file", 4, "o", "string", None), ("mean_value", 5, "r", "float", None),
        ("force_color", 6, "o", "bool", False), ("force_gray", 7, "o", "bool", False)]),
    ("BatchNormParameter", [("use_global_stats", 1, "o", "bool", None),
                            ("moving_average_fraction", 2, "o", "float", 0.999), ("eps", 3, "o", "float", 1e-5)]),
    ("ScaleParameter", [("axis", 1, "o", "int32", 1), ("num_axes", 2, "o", "int32", 1),
                        ("filler", 3, "o", "FillerParameter", None), ("bias_term", 4, "o", "bool", False),
                        ("bias_filler", 5, "o", "FillerParameter", None)]),
    ("BiasParameter", [("axis", 1, "o", "int32", 1), ("num_axes", 2, "o", "int32", 1),
                       ("filler", 3, "o", "FillerParameter", None)]),
    ("EltwiseParameter", [("operation", 1, "o", "EltwiseOp", "SUM"), ("coeff", 2, "r", "float", None),
                          ("stable_prod_grad", 3, "o", "bool", True)]),
    ("ConcatParameter", [("axis", 2, "o", "int32", 1), ("concat_dim", 1, "o", "uint32", 1)]),
    ("FlattenParameter", [("axis", 1, "o", "int32", 1), ("end_axis", 2, "o", "int32", -1)]),
    ("SoftmaxParameter", [("engine", 1, "o", "Engine", None), ("axis", 2, "o", "int32", 1)]),
    ("AccuracyParameter", [("top_k", 1, "o", "uint32", 1), ("axis", 2, "o", "int32", 1),
                           ("ignore_label", 3, "o", "int32", None)]),
    ("DropoutParameter", [("dropout_ratio", 1, "o", "float", 0.5)]),
    ("LRNParameter", [("local_size", 1, "o", "uint32", 5), ("alpha", 2, "o", "float", 1),
                      ("beta", 3, "o", "float", 0.75), ("norm_region", 4, "o", "NormRegion", None),
                      ("k", 5, "o", "float", 1), ("engine", 6, "o", "Engine", None)]),
    ("ReLUParameter", [("negative_slope", 1, "o", "float", 0), ("engine", 2, "o", "Engine", None)]),
]
_LAYER_PARAMS = [  # LayerParameter's per-type parameter fields this subset reads
    ("transform_param", 100, "TransformationParameter"), ("accuracy_param", 102, "AccuracyParameter"),
    ("concat_param", 104, "ConcatParameter"), ("convolution_param", 106, "ConvolutionParameter"),
    ("data_param", 107, "DataParameter"), ("dropout_param", 108, "DropoutParameter"),
    ("eltwise_param", 110, "EltwiseParameter"), ("hdf5_data_param", 112, "HDF5DataParameter"),
    ("image_data_param", 115, "ImageDataParameter"), ("inner_product_param", 117, "InnerProductParameter"),
    ("lrn_param", 118, "LRNParameter"), ("pooling_param", 121, "PoolingParameter"),
    ("relu_param", 123, "ReLUParameter"), ("softmax_param", 125, "SoftmaxParameter"),
    ("window_data_param", 129, "WindowDataParameter"), ("flatten_param", 135, "FlattenParameter"),
    ("batch_norm_param", 139, "BatchNormParameter"), ("bias_param", 141, "BiasParameter"),
    ("scale_param", 142, "ScaleParameter"), ("input_param", 143, "InputParameter"),
]
_MESSAGES += [
    ("LayerParameter", [
        ("name", 1, "o", "string", None), ("type", 2, "o", "string", None), ("bottom", 3, "r", "string", None),
        ("top", 4, "r", "string", None), ("phase", 10, "o", "Phase", None), ("loss_weight", 5, "r", "float", None),
        ("param", 6, "r", "ParamSpec", None), ("blobs", 7, "r", "BlobProto", None),
        ("propagate_down", 11, "r", "bool", None), ("include", 8, "r", "NetStateRule", None),
        ("exclude", 9, "r", "NetStateRule", None)] + [(n, k, "o", t, None) for n, k, t in _LAYER_PARAMS]),
    ("V1LayerParameter", [
        ("bottom", 2, "r", "string", None), ("top", 3, "r", "string", None), ("name", 4, "o", "string", None),
        ("include", 32, "r", "NetStateRule", None), ("exclude", 33, "r", "NetStateRule", None),
        ("type", 5, "o", "V1LayerType", None), ("blobs", 6, "r", "BlobProto", None),
        ("convolution_param", 10, "o", "ConvolutionParameter", None),
        ("inner_product_param", 17, "o", "InnerProductParameter", None),
        ("pooling_param", 19, "o", "PoolingParameter", None)]),
    ("NetParameter", [
        ("name", 1, "o", "string", None), ("input", 3, "r", "string", None),
        ("input_shape", 8, "r", "BlobShape", None), ("input_dim", 4, "r", "int32", None),
        ("force_backward", 5, "o", "bool", False), ("state", 6, "o", "NetState", None),
        ("debug_info", 7, "o", "bool", False), ("layer", 100, "r", "LayerParameter", None),
        ("layers", 2, "r", "V1LayerParameter", None)]),
]

_messages = None


def _add_enum(e, values) -> None:
    numbers = values if isinstance(values, dict) else dict(enumerate(values))
    for n in sorted(numbers):
        e.value.add(name=numbers[n], number=n)


def _file_proto():
    from google.protobuf import descriptor_pb2

    fdp = descriptor_pb2.FileDescriptorProto(name="caffe_dc_net.proto", package=_PACKAGE, syntax="proto2")
    F = descriptor_pb2.FieldDescriptorProto
    _add_enum(fdp.enum_type.add(name="Phase"), _ENUMS["Phase"])
    for mname, fields in _MESSAGES:
        m = fdp.message_type.add(name=mname)
        nested = _NESTED.get(mname, ())
        for e in nested:
            _add_enum(m.enum_type.add(name=e), _ENUMS[e])
        for fname, num, label, ftype, default in fields:
            f = m.field.add(name=fname, number=num,
                            label=F.LABEL_OPTIONAL if label == "o" else F.LABEL_REPEATED)
            if ftype in nested or ftype == "Phase":
                f.type = F.TYPE_ENUM
                f.type_name = ".%s.%s" % (_PACKAGE, ftype if ftype == "Phase" else mname + "." + ftype)
            elif ftype[0].isupper():
                f.type, f.type_name = F.TYPE_MESSAGE, ".%s.%s" % (_PACKAGE, ftype)
            else:
                f.type = getattr(F, "TYPE_" + ftype.upper())
            if label == "p":
                f.options.packed = True
            if default is not None:
                f.default_value = ("true" if default else "false") if isinstance(default, bool) else str(default)
    return fdp


def messages():
    """The message classes, by name (``messages().NetParameter``), built once per process."""
    global _messages
    if _messages is None:
        from google.protobuf import descriptor_pool, message_factory

        pool = descriptor_pool.DescriptorPool()   # our own pool: never clashes with pycaffe's caffe.proto
        pool.AddSerializedFile(_file_proto().SerializeToString())
        get = getattr(message_factory, "GetMessageClass", None)
        factory = None if get else message_factory.MessageFactory(pool)
        classes = {}
        for name, _ in _MESSAGES:
            desc = pool.FindMessageTypeByName("%s.%s" % (_PACKAGE, name))
            classes[name] = get(desc) if get else factory.GetPrototype(desc)
        _messages = types.SimpleNamespace(**classes)
    return _messages


def parse_net_text(text: str, where: str):
    """A NetParameter from prototxt text; undeclared fields are skipped (see the module docstring)."""
    import logging

    from google.protobuf import text_format

    net = messages().NetParameter()
    log = logging.getLogger("google.protobuf")   # newer protobuf logs each skipped field
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        text_format.Merge(text, net, allow_unknown_field=True)
    except (text_format.ParseError, ValueError) as e:
        raise InputError("%s does not parse as a Caffe net: %s" % (where, " ".join(str(e).split())))
    finally:
        log.setLevel(level)
    return net


def read_text(path: str, what: str) -> str:
    """A text file's contents; a missing file, or a binary one (a caffemodel given for a prototxt), is refused."""
    require_file(path, what)
    with open(path, "rb") as f:
        data = f.read()
    try:
        if b"\0" in data:
            raise UnicodeError
        return data.decode("utf-8")
    except UnicodeError:
        raise InputError("%s is not a text %s (it holds binary data or is not UTF-8)" % (path, what))


def load_net_text(path: str):
    """A prototxt file parsed into our NetParameter, with one clear error if it cannot be."""
    return parse_net_text(read_text(path, "prototxt"), path)


def layer_type(layer) -> str:
    """A layer's type string; a V1 layer's enum becomes the name Caffe upgrades it to."""
    t = layer.type
    return t if isinstance(t, str) else V1_TYPES.get(int(t), ("", str(t)))[1]
