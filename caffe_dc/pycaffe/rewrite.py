"""Prototxt surgery: add mask and codebook blobs that Caffe itself stores.

Each compressed layer ``L`` gets ``Parameter`` layers beside it, in the
spirit of ``torch.nn.utils.prune``'s ``weight_mask``: a blob ``L_mask`` (1.0
kept, 0.0 pruned) and, once quantized, ``L_codebook`` (the 2**bits shared
values, entry 0 being the pruned zero) and ``L_codes`` (the codebook index of
every weight, stored as float). Their ``lr_mult``/``decay_mult`` are 0, so
the solver never moves them, and a ``Silence`` layer consumes their tops so
that they need no consumer. Caffe saves them in every caffemodel and
snapshot; an unchanged deploy net loading such a file just ignores them.
The solver hooks (``hooks.py``) read them back from the net, so a pruned or
quantized caffemodel is self-describing and a run can resume from it.
"""
from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

from caffe_dc.base.blobs import CODEBOOK, CODES, MASK, blob_name
from caffe_dc.base.layer_policy import PRUNABLE_TYPES
from caffe_dc.algorithms.pruning import dropout_ratio
from caffe_dc.base.errors import InputError

SILENCE_NAME = "dc_silence"


def prunable_layers(net_param) -> list:
    """Names of Convolution (any group, dilation), Deconvolution and InnerProduct layers, in net order,
    without duplicates."""
    seen = []
    for layer in net_param.layer:
        if layer.type in PRUNABLE_TYPES and layer.name not in seen:
            seen.append(layer.name)
    return seen


def shared_parameters(net_param) -> Dict[str, list]:
    """{param name: [layers]} for every ``param { name: ... }`` that more than one layer uses."""
    users: Dict[str, list] = {}
    for layer in net_param.layer:
        for spec in layer.param:
            if spec.name and layer.name not in users.setdefault(spec.name, []):
                users[spec.name].append(layer.name)
    return {k: v for k, v in users.items() if len(v) > 1}


def check_unshared(net_param, where: str) -> None:
    """Refuse prunable layers that share weights: one mask and one codebook per blob is all the
    hooks and the codec know, and a shared blob would be pruned twice by different rules."""
    prunable = set(prunable_layers(net_param))
    for pname, layers in shared_parameters(net_param).items():
        if prunable & set(layers):
            raise InputError("%s: layers %s share parameters through param { name: %r }; caffe-dc cannot prune or "
                             "quantize shared weights: give each layer its own" % (where, ", ".join(layers), pname))


def select_layers(net_param, names: Optional[Iterable[str]] = None) -> list:
    """Check user-chosen layer names against the net: a clear error for a typo or an unprunable layer."""
    available = prunable_layers(net_param)
    if names is None:
        return available
    names = list(names)
    types = {l.name: l.type for l in net_param.layer}
    for n in names:
        if n not in types:
            raise InputError("no layer named %r in the net (prunable layers: %s)" % (n, ", ".join(available)))
        if n not in available:
            raise InputError("layer %r is a %s layer and cannot be pruned (only %s)" % (n, types[n], "/".join(PRUNABLE_TYPES)))
    return [n for n in available if n in names]


def _strip(net_param) -> None:
    """Remove blobs a previous rewrite added, so rewriting is idempotent."""
    keep = [l for l in net_param.layer
            if not (l.type == "Parameter" and any(l.name.endswith("_" + k) for k in (MASK, CODEBOOK, CODES)))
            and l.name != SILENCE_NAME]
    del net_param.layer[:]
    net_param.layer.extend(keep)


def add_blobs(net_param, shapes: Mapping[str, Sequence[int]], kinds: Sequence[str] = (MASK,),
              codebook_sizes: Optional[Mapping[str, int]] = None):
    """Return a copy of ``net_param`` with ``kinds`` blobs for every layer in ``shapes``.

    ``kinds`` is one list for all layers, or a mapping layer -> list (e.g. masks
    everywhere but codebooks only on the layers being quantized).

    ``shapes`` maps layer name to its weight shape (from the caffemodel);
    ``codebook_sizes`` gives K per layer when CODEBOOK is among ``kinds``.
    """
    out = type(net_param)()
    out.CopyFrom(net_param)
    _strip(out)
    names = [l.name for l in out.layer]
    tops = []
    for layer_name, shape in shapes.items():
        if layer_name not in names:
            raise InputError("caffemodel layer %r is not in the prototxt" % layer_name)
        for kind in (kinds.get(layer_name, ()) if isinstance(kinds, Mapping) else kinds):
            if kind == CODEBOOK:
                if not codebook_sizes or layer_name not in codebook_sizes:
                    raise InputError("no codebook size for layer %r" % layer_name)
                dims: Tuple[int, ...] = (int(codebook_sizes[layer_name]),)
            else:
                dims = tuple(int(d) for d in shape)
            p = out.layer.add()
            p.name = blob_name(layer_name, kind)
            p.top.append(p.name)
            p.type = "Parameter"
            spec = p.param.add()
            spec.lr_mult = 0
            spec.decay_mult = 0
            p.parameter_param.shape.dim.extend(dims)
            tops.append(p.name)
    if tops:
        s = out.layer.add()
        s.name = SILENCE_NAME
        s.type = "Silence"
        s.bottom.extend(tops)
    return out


def adjust_dropout(net_param, kept: Mapping[str, float]) -> Dict[str, Tuple[float, float]]:
    """Scale dropout after pruned layers: D_r = D_o * sqrt(C_ir / C_io).

    *Learning both Weights and Connections*: a pruned layer has fewer
    connections, so it needs less regularisation. The dropout layer that
    reads a pruned layer's output is the one adjusted. ``kept`` maps layer
    name to the kept fraction C_ir / C_io. Returns {dropout: (old, new)}
    and edits ``net_param`` in place.
    """
    producer = {}
    for layer in net_param.layer:
        for t in layer.top:
            if layer.name in kept:
                producer[t] = layer.name
    changed = {}
    for layer in net_param.layer:
        if layer.type != "Dropout" or not layer.bottom:
            continue
        src = producer.get(layer.bottom[0])
        if src is None:
            continue
        old = layer.dropout_param.dropout_ratio if layer.HasField("dropout_param") else 0.5
        new = dropout_ratio(old, 1.0, float(kept[src]))
        layer.dropout_param.dropout_ratio = new
        changed[layer.name] = (old, new)
    return changed


def retrain_solver(solver_param, lr_factor: float, **overrides):
    """A copy of a solver for retraining: base_lr scaled (1/10 for LeNet, 1/100 for AlexNet)."""
    if not lr_factor > 0:
        raise InputError("learning-rate factor must be > 0, got %r" % lr_factor)
    out = type(solver_param)()
    out.CopyFrom(solver_param)
    out.base_lr = solver_param.base_lr * lr_factor
    for k, v in overrides.items():
        if v is not None:
            set_solver_field(out, k, v)
    return out


def set_solver_field(sp, key: str, value) -> None:
    """Set one SolverParameter field from a Python value (enums by name, repeated from a list)."""
    field = sp.DESCRIPTOR.fields_by_name.get(key)
    if field is None:
        raise InputError("a Caffe solver has no field %r" % key)
    if field.message_type is not None:
        raise InputError("solver field %r is a message; override it in the solver prototxt instead" % key)
    try:
        if field.enum_type is not None and isinstance(value, str):
            value = field.enum_type.values_by_name[value.upper()].number
        if field.label == field.LABEL_REPEATED:
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            del getattr(sp, key)[:]
            getattr(sp, key).extend(values)
        elif field.type in (field.TYPE_FLOAT, field.TYPE_DOUBLE):
            setattr(sp, key, float(value))
        else:
            setattr(sp, key, value)
    except (TypeError, ValueError, KeyError) as e:
        raise InputError("bad value %r for solver field %r (%s)" % (value, key, e))
