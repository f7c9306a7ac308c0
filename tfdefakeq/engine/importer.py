"""A user's tf.keras detector -> the flat single-logit Functional graph tfmot and our schemes take.

    >>> model, fields = load_user_model("det.keras", preprocess="tf")           # doctest: +SKIP
    >>> Manifest(input_shape=..., format="keras", **fields)                     # doctest: +SKIP

Loading: `.keras` and full-model `.h5` files are read with Keras safe mode and `compile=False`.
Before Keras sees the file, its architecture JSON is read as data and checked: a `Lambda` layer
(Python bytecode in the file) or a class that is not a stock tf-keras layer is refused in one line
naming it, so nothing in the file runs as code. An in-memory `keras.Model` is taken as it is.

Normalisation (the graph is rebuilt layer by layer, weights copied):
- nested models (keras.applications bases called inside a Functional model, Sequential blocks) are
  inlined into ONE flat graph; layer names stay unique (a clash gets the sub-model's name prefixed);
- the affine preprocessing at the input (`Rescaling`, `Normalization`, and the TFOpLambda arithmetic
  of keras.applications' `preprocess_input` written into the graph: multiply / divide / add /
  subtract by constants, bias_add, the caffe channel flip `x[..., ::-1]`) is folded into the
  manifest's `Preprocess`, composed after `preprocess` ("caffe" | "tf" | "torch" | "none": what the
  user fed the model outside it); the runtime then applies exactly the same transform;
- TFOpLambda ops with a layer twin become that layer (relu / relu6 -> ReLU, sigmoid / tanh / swish
  -> Activation; multiply or add by a constant -> a fixed 1x1 DepthwiseConv2D, which every scheme
  quantizes, so MobileNetV3's hard-swish arithmetic works); any other op is refused naming it;
- fused activations (`Conv2D(..., activation="relu")`) are split into a separate activation layer
  (our QuantizeConfigs put the FakeQuant after it);
- the head becomes ONE logit whose sigmoid is P(fake): a linear `Dense(1)` as it is, `Dense(1,
  sigmoid)` without its sigmoid (negated for `fake_class=0`), a 2-class `Dense(2)` (softmax or
  logits) folded into `Dense(1)` with kernel and bias `w_fake - w_real` (softmax([a, b])[1] =
  sigmoid(b - a) exactly). More than 2 classes are refused: P(class k) of a softmax over 3+ classes
  is not the sigmoid of any one linear logit, so no single-logit head reproduces it.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from tfdefakeq.core.errors import UserError

PREPROCESS_CHOICES = ("caffe", "tf", "torch", "none")

# keras.applications' preprocess_input modes, as (channel order, mean, std) on 0..255 pixels.
_PRESETS = {
    "none": ("rgb", [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]),
    "tf": ("rgb", [127.5] * 3, [127.5] * 3),  # x / 127.5 - 1
    "torch": ("rgb", [0.485 * 255, 0.456 * 255, 0.406 * 255], [0.229 * 255, 0.224 * 255, 0.225 * 255]),
    "caffe": ("bgr", [103.939, 116.779, 123.68], [1.0, 1.0, 1.0]),  # BGR, mean subtracted, no scaling
}

USER_SUFFIXES = (".keras", ".h5", ".hdf5")

# TFOpLambda activations with a layer twin.
_ACTIVATION_OPS = {"nn.relu": ("relu", None), "nn.relu6": ("relu", 6.0), "math.sigmoid": ("sigmoid", None),
                   "nn.sigmoid": ("sigmoid", None), "math.tanh": ("tanh", None), "nn.tanh": ("tanh", None),
                   "nn.silu": ("swish", None), "nn.swish": ("swish", None)}
_AFFINE_OPS = {"math.multiply", "__operators__.mul", "math.truediv", "math.divide", "__operators__.truediv",
               "math.add", "__operators__.add", "math.subtract", "__operators__.sub", "nn.bias_add", "math.negative"}


def is_user_model_file(path) -> bool:
    """A whole-model Keras file (not our `.weights.h5`)."""
    name = Path(path).name
    return name.endswith(USER_SUFFIXES) and not name.endswith(".weights.h5")


# ---------------------------------------------------------------- reading the file as data

def read_architecture(path) -> dict:
    """The model config JSON stored in a `.keras` or full-model `.h5` file, read as data only."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such model file")
    if path.suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as z:
                return json.loads(z.read("config.json"))
        except (zipfile.BadZipFile, KeyError, OSError, ValueError) as e:
            raise UserError(f"{path}: not a Keras .keras file ({e.__class__.__name__}: {str(e)[:120]})") from e
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as e:
        raise UserError(f"{path}: not an HDF5 Keras model ({str(e)[:120]})") from e
    if raw is None:
        raise UserError(f"{path}: holds weights only, no model (save the whole model: model.save('det.keras'))")
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def _walk_layer_configs(config: dict):
    """Every layer config in a (possibly nested) model config, depth first."""
    inner = config.get("config", {}) if isinstance(config, dict) else {}
    for layer in inner.get("layers", []) if isinstance(inner, dict) else []:
        yield layer
        yield from _walk_layer_configs(layer)


def _allowed_classes() -> set[str]:
    from tfdefakeq.core.tfcompat import keras

    names = {n for n in dir(keras.layers) if isinstance(getattr(keras.layers, n, None), type)}
    return names | {"Functional", "Sequential", "Model", "TFOpLambda", "SlicingOpLambda"}


def check_architecture(config: dict, label) -> None:
    """Refuses what would run code or is not a stock layer: Lambda, custom classes."""
    allowed = _allowed_classes()
    for layer in _walk_layer_configs(config):
        cls = layer.get("class_name", "?")
        name = layer.get("config", {}).get("name", "?")
        if cls == "Lambda":
            raise UserError(f"{label}: layer {name!r} is a Lambda layer (Python code stored in the file); "
                            "rewrite it with stock Keras layers")
        if cls not in allowed:
            raise UserError(f"{label}: layer {name!r} is of class {cls!r}, not a stock tf-keras layer "
                            "(custom code is not loaded)")


def load_keras_file(path):
    """Loads a user's `.keras` / `.h5` model with safe mode, after `check_architecture`."""
    from tfdefakeq.core.tfcompat import keras

    path = Path(path)
    check_architecture(read_architecture(path), path)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types on a malformed file
        raise UserError(f"{path}: Keras cannot load this model ({e.__class__.__name__}: {str(e).splitlines()[0][:160]})") from e


# ---------------------------------------------------------------- the input transform

class _Affine:
    """y_c = scale_c * q_c + offset_c, q = the 0..255 pixels in `order` ('rgb' or 'bgr')."""

    def __init__(self, preset: str):
        order, mean, std = _PRESETS[preset]
        self.order = order
        self.scale = 1.0 / np.asarray(std, np.float64)
        self.offset = -np.asarray(mean, np.float64) / np.asarray(std, np.float64)

    def then(self, scale, offset) -> None:
        """Composes `y -> y * scale + offset` (per channel) after the transform so far."""
        scale = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (3,))
        offset = np.broadcast_to(np.asarray(offset, np.float64).reshape(-1), (3,))
        self.scale, self.offset = self.scale * scale, self.offset * scale + offset

    def flip(self) -> None:
        self.order = "bgr" if self.order == "rgb" else "rgb"
        self.scale, self.offset = self.scale[::-1].copy(), self.offset[::-1].copy()

    def preprocess(self):
        from tfdefakeq.core.manifest import Preprocess

        mean = -self.offset / self.scale
        std = 1.0 / self.scale

        def compact(v):
            v = [float(x) for x in v]
            return v[0] if max(v) == min(v) else v

        return Preprocess(mean=compact(mean), std=compact(std), channel_order=self.order)


def _const_channels(value, channels: int | None):
    """A python number / numpy array / tensor constant broadcastable over channels -> float64 (C,) or None."""
    if hasattr(value, "_keras_history") or value is None or isinstance(value, (str, bool)):
        return None
    try:
        arr = np.asarray(value.numpy() if hasattr(value, "numpy") else value, np.float64)
    except (TypeError, ValueError):
        return None
    if arr.size == 1:
        return np.full((channels or 1,), float(arr.reshape(-1)[0]))
    if channels and arr.size == channels and arr.reshape(-1).shape[0] == arr.shape[-1]:
        return arr.reshape(-1)
    return None


def _op_affine(layer, args, kwargs, channels):
    """(tensor, scale (C,), offset (C,)) when a TFOpLambda is x*c, x/c, x+c, x-c, c-x, bias_add, -x."""
    fn = layer.get_config().get("function", "")
    if kwargs.get("data_format", "NHWC") not in ("NHWC", "channels_last", None):
        return None
    operands = list(args) + [v for k, v in kwargs.items() if k not in ("name", "data_format")]
    tensors = [i for i, v in enumerate(operands) if hasattr(v, "_keras_history")]
    if len(tensors) != 1:
        return None
    t = tensors[0]
    x = operands[t]
    if fn == "math.negative" and len(operands) == 1:
        return x, np.full(channels, -1.0), np.zeros(channels)
    if len(operands) != 2:
        return None
    c = _const_channels(operands[1 - t], channels)
    if c is None:
        return None
    ones, zeros = np.ones(channels), np.zeros(channels)
    if fn in ("math.multiply", "__operators__.mul"):
        return x, c, zeros
    if fn in ("math.truediv", "math.divide", "__operators__.truediv") and t == 0 and np.all(c != 0):
        return x, 1.0 / c, zeros
    if fn in ("math.add", "__operators__.add", "nn.bias_add"):
        return x, ones, c
    if fn in ("math.subtract", "__operators__.sub"):
        return (x, ones, -c) if t == 0 else (x, -ones, c)
    return None


def _is_channel_flip(layer, args, kwargs) -> bool:
    fn = layer.get_config().get("function", "")
    if fn != "__operators__.getitem":
        return False
    spec = kwargs.get("slice_spec", args[1] if len(args) > 1 else None)
    spec = spec if isinstance(spec, (tuple, list)) else (spec,)
    if len(spec) != 2 or spec[0] is not Ellipsis:
        return False
    last = spec[1]
    if isinstance(last, slice):
        last = {"start": last.start, "stop": last.stop, "step": last.step}
    return isinstance(last, dict) and last.get("start") is None and last.get("stop") is None and last.get("step") == -1


# ---------------------------------------------------------------- the rebuild

class _Repeat:
    """A tensor_dict entry that Node.map_arguments may pop any number of times."""

    def __init__(self, value):
        self.value = value

    def pop(self):
        return self.value


class _Flattener:
    def __init__(self, label, preset: str):
        from tfdefakeq.core.tfcompat import keras

        self.keras = keras
        self.label = label
        self.affine = _Affine(preset)
        self.raw = None  # the new Input: while only preprocessing has consumed it, folding goes on
        self.folding = True
        self.folded = False  # some preprocessing in the graph went into the manifest
        self.names: set[str] = set()
        self.copies = []  # (new layer, old layer) whose weights are copied after the graph is built
        self.fixed = []  # (new layer, weights) set after the build

    def unique(self, name: str, scope: str = "") -> str:
        candidates = [name] + ([f"{scope}_{name}"] if scope else []) + [f"{name}_{i}" for i in range(1, 10_000)]
        for c in candidates:
            if c not in self.names:
                self.names.add(c)
                return c
        raise AssertionError(name)

    def run(self, model, inputs, scope: str = ""):
        """Calls a rebuilt copy of every layer of `model` on `inputs` (new tensors); returns its outputs."""
        if not getattr(model, "_is_graph_network", False):
            raise UserError(f"{self.label}: {model.name} is a subclassed or unbuilt model; save a Functional or Sequential one")
        tensor_dict = {str(id(x)): _Repeat(y) for x, y in zip(model.inputs, inputs)}
        usage = model._tensor_usage_count
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                if node.is_input or any(t not in tensor_dict for t in node.flat_input_ids):
                    continue
                args, kwargs = node.map_arguments(tensor_dict)
                single_use = all(usage.get(t, 1) <= 1 for t in node.flat_input_ids)
                outputs = self.apply(node.layer, args, kwargs, scope, single_use)
                for x_id, y in zip(node.flat_output_ids, _flatten(outputs)):
                    tensor_dict[x_id] = _Repeat(y)
        return [tensor_dict[str(id(x))].pop() for x in model.outputs]

    def apply(self, layer, args, kwargs, scope, single_use):
        keras = self.keras
        layers = keras.layers
        if isinstance(layer, keras.Model):
            inner = [a for a in _flatten((args, kwargs)) if hasattr(a, "_keras_history")]
            outs = self.run(layer, inner, scope=layer.name)
            return outs[0] if len(outs) == 1 else outs
        cls = type(layer).__name__
        if cls == "Lambda":
            raise UserError(f"{self.label}: layer {layer.name!r} is a Lambda layer (Python code); rewrite it with stock Keras layers")
        x = args[0] if args else None
        on_raw = x is self.raw and self.folding and single_use
        if isinstance(layer, layers.Rescaling) or isinstance(layer, layers.Normalization):
            scale, offset = _layer_affine(layer)
            if on_raw:
                self.affine.then(scale, offset)
                self.folded = True
                return x
            return self.fixed_affine(x, scale, offset, layer.name)
        if cls in ("TFOpLambda", "SlicingOpLambda"):
            fn = layer.get_config().get("function", "?")
            channels = int(x.shape[-1]) if x is not None and hasattr(x, "shape") and x.shape.rank else None
            if on_raw and _is_channel_flip(layer, args, kwargs):
                self.affine.flip()
                self.folded = True
                return x
            affine = _op_affine(layer, args, kwargs, channels) if channels else None
            if affine is not None:
                t, scale, offset = affine
                if t is self.raw and self.folding and single_use:
                    self.affine.then(scale, offset)
                    self.folded = True
                    return t
                return self.fixed_affine(t, scale, offset, layer.name)
            if fn in _ACTIVATION_OPS and len([a for a in _flatten((args, kwargs)) if hasattr(a, "_keras_history")]) == 1:
                self.folding = self.folding and x is not self.raw
                kind, max_value = _ACTIVATION_OPS[fn]
                name = self.unique(_op_name(layer.name), scope)
                twin = layers.ReLU(max_value=max_value, name=name) if kind == "relu" else layers.Activation(kind, name=name)
                return twin(x)
            raise UserError(f"{self.label}: layer {layer.name!r} applies TensorFlow op tf.{fn}, which has no quantizable "
                            "layer twin (mapped: relu, relu6, sigmoid, tanh, swish, multiply/add/subtract/divide by a constant)")
        if x is self.raw:
            self.folding = False
        config = layer.get_config()
        config["name"] = self.unique(layer.name, scope)
        activation = config.get("activation")
        split = activation not in (None, "linear") and isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D,
                                                                            layers.SeparableConv2D, layers.Dense))
        if split:
            config["activation"] = "linear"
        new = type(layer).from_config(config)
        y = new(*args, **kwargs)
        self.copies.append((new, layer))
        if split:
            twin_name = self.unique(f"{layer.name}_{activation}", scope)
            y = (layers.ReLU(name=twin_name) if activation == "relu" else layers.Activation(activation, name=twin_name))(y)
        return y

    def fixed_affine(self, x, scale, offset, name):
        """x * scale + offset per channel as a frozen 1x1 DepthwiseConv2D (quantizes like any depthwise)."""
        layers = self.keras.layers
        if x is None or x.shape.rank != 4:
            raise UserError(f"{self.label}: layer {name!r} scales a tensor of rank {x.shape.rank if x is not None else '?'}; "
                            "only image-shaped (4-D) constant arithmetic has a layer twin")
        if x is self.raw:
            self.folding = False
        channels = int(x.shape[-1])
        scale = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (channels,))
        offset = np.broadcast_to(np.asarray(offset, np.float64).reshape(-1), (channels,))
        new = layers.DepthwiseConv2D(1, use_bias=True, name=self.unique(_op_name(name)))
        y = new(x)
        new.trainable = False
        self.fixed.append((new, [scale.reshape(1, 1, channels, 1).astype(np.float32), offset.astype(np.float32)]))
        return y


def _op_name(name: str) -> str:
    """A TFOpLambda's name ('tf.__operators__.add') as a layer name TensorFlow accepts ('operators_add')."""
    import re

    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", name.removeprefix("tf."))).strip("_") or "op"


def _flatten(structure) -> list:
    from tfdefakeq.core.tfcompat import tf

    return tf.nest.flatten(structure)


def _layer_affine(layer):
    """Rescaling / Normalization as (scale, offset) over the last axis."""
    from tfdefakeq.core.tfcompat import keras

    if isinstance(layer, keras.layers.Rescaling):
        return np.asarray(layer.scale, np.float64), np.asarray(layer.offset, np.float64)
    mean = np.asarray(layer.mean, np.float64).reshape(-1)
    std = np.maximum(np.sqrt(np.asarray(layer.variance, np.float64).reshape(-1)), keras.backend.epsilon())
    if getattr(layer, "invert", False):
        return std, mean
    return 1.0 / std, -mean / std


# ---------------------------------------------------------------- the head

def _single_logit_head(model, fake_class: int | None, label):
    """The flat model with its head turned into ONE logit (see the module docstring)."""
    from tfdefakeq.core.tfcompat import keras

    layers = keras.layers
    out = model.outputs[0]
    layer = out._keras_history.layer
    activation = None
    if isinstance(layer, layers.Softmax) or (isinstance(layer, layers.Activation) and
                                             layer.get_config()["activation"] in ("softmax", "sigmoid")):
        activation = "softmax" if isinstance(layer, layers.Softmax) else layer.get_config()["activation"]
        feature = layer.input
        layer = feature._keras_history.layer
    if not isinstance(layer, layers.Dense):
        if out.shape[-1] == 1 and fake_class in (None, 1) and activation is None:
            return model  # some other layer already gives one logit
        raise UserError(f"{label}: the output comes from {type(layer).__name__} {layer.name!r}; the head must be a Dense "
                        "layer (1 logit, 1 sigmoid, or 2 softmax units)")
    units = int(layer.units)
    if activation is None:
        activation = layer.get_config()["activation"]
    if units > 2:
        raise UserError(f"{label}: the head has {units} classes; a detector scores P(fake) as one logit, and P(class k) of a "
                        f"{units}-way softmax is not the sigmoid of any one linear logit (--fake-class "
                        f"{'K picks' if fake_class is None else str(fake_class) + ' picks'} a class of a 1- or 2-unit head): "
                        "fine-tune a Dense(2) fake-vs-rest head first")
    if units == 1 and activation not in ("linear", "sigmoid"):
        raise UserError(f"{label}: a 1-unit head with activation {activation!r}; expected linear (a logit) or sigmoid")
    if units == 2 and activation not in ("linear", "softmax"):
        raise UserError(f"{label}: a 2-unit head with activation {activation!r}; expected softmax (or linear logits)")
    k = 1 if fake_class is None else int(fake_class)
    if k not in (0, 1):
        raise UserError(f"{label}: --fake-class {k} but the head has {max(units, 2)} classes (0 or 1)")
    kernel, bias = layer.get_weights() if layer.use_bias else (layer.get_weights()[0], np.zeros(units, np.float32))
    if units == 1:
        sign = 1.0 if k == 1 else -1.0
        w, b = sign * kernel, sign * bias
    else:
        w = (kernel[:, k] - kernel[:, 1 - k])[:, None]
        b = np.asarray([bias[k] - bias[1 - k]])
    if units == 1 and k == 1 and activation == "linear" and layer is model.layers[-1]:
        return model
    head = layers.Dense(1, name=layer.name)
    logit = head(layer.input)
    head.set_weights([w.astype(np.float32), b.astype(np.float32)])
    return keras.Model(model.inputs, logit, name=model.name)


# ---------------------------------------------------------------- the entry point

def architecture_json(model) -> str:
    """The normalised model's architecture, canonical JSON (what the sha256 is taken of)."""
    return json.dumps(model.get_config(), sort_keys=True, separators=(",", ":"), default=str)


def architecture_sha256(model) -> str:
    return hashlib.sha256(architecture_json(model).encode()).hexdigest()


def load_user_model(path_or_model, fake_class: int | None = None, preprocess: str | None = None):
    """A user's Keras detector -> (flat keras.Model with one logit output, Manifest fields).

    `path_or_model`: a `.keras` / full-model `.h5` path, or a `keras.Model`. `fake_class`: which
    class of the head is "fake" (default 1). `preprocess`: what the model expects outside its graph
    ("caffe" | "tf" | "torch" | "none"); required when the graph starts with no preprocessing of its
    own (the pixels' meaning cannot be guessed). The fields are those of a float Keras manifest:
    backbone "custom", input_shape, preprocess, source, fake_class, architecture_sha256.
    """
    from tfdefakeq.core.tfcompat import keras

    if isinstance(path_or_model, keras.Model):
        model, label, source = path_or_model, f"model {path_or_model.name!r}", {"file": f"<in-memory {path_or_model.name}>"}
        for sub in _all_layers(model):
            if type(sub).__name__ == "Lambda":
                raise UserError(f"{label}: layer {sub.name!r} is a Lambda layer (Python code); rewrite it with stock Keras layers")
    else:
        path = Path(path_or_model)
        model, label, source = load_keras_file(path), path, {"file": path.name}
    if preprocess is not None and preprocess not in PREPROCESS_CHOICES:
        raise UserError(f"--preprocess {preprocess!r}: choose one of {', '.join(PREPROCESS_CHOICES)}")
    if len(model.inputs) != 1:
        raise UserError(f"{label}: the model has {len(model.inputs)} inputs; a detector takes one image")
    if len(model.outputs) != 1:
        raise UserError(f"{label}: the model has {len(model.outputs)} outputs; a detector gives one score")
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or shape[-1] != 3 or None in shape:
        raise UserError(f"{label}: input shape {shape}; a detector takes a fixed-size RGB image (H, W, 3): "
                        "build the model with input_shape=(H, W, 3)")

    flat = _Flattener(label, preprocess or "none")
    inp = keras.Input(shape=shape, name=flat.unique(model.inputs[0].name.split(":")[0] or "input"))
    flat.raw = inp
    outputs = flat.run(model, [inp])
    if preprocess is None and not flat.folded:
        raise UserError(f"{label}: the model has no preprocessing layer at its input, so what its pixels mean is unknown; "
                        f"say what it was trained on with --preprocess {'|'.join(PREPROCESS_CHOICES)} "
                        "(keras.applications' preprocess_input modes; none = raw 0..255)")
    rebuilt = keras.Model(inp, outputs[0], name="custom")
    for new, old in flat.copies:
        new.set_weights(old.get_weights())
    for new, weights in flat.fixed:
        new.set_weights(weights)
    rebuilt = _single_logit_head(rebuilt, fake_class, label)
    fields = dict(backbone="custom", input_shape=[int(d) for d in shape], scheme="float",
                  preprocess=flat.affine.preprocess(), source=source, fake_class=1 if fake_class is None else int(fake_class),
                  architecture_sha256=architecture_sha256(rebuilt))
    return rebuilt, fields


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def rebuild_architecture(text: str, label, expected_sha256: str | None = None):
    """The normalised architecture saved beside a custom detector's weights -> an untrained model.

    Checked as data first (`check_architecture`) and against the manifest's sha256, then built with
    safe mode; weights are loaded by the caller."""
    from tfdefakeq.core.tfcompat import keras

    try:
        config = json.loads(text)
    except ValueError as e:
        raise UserError(f"{label}: not an architecture JSON ({e})") from e
    check_architecture({"config": config}, label)
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    if expected_sha256 and hashlib.sha256(canonical.encode()).hexdigest() != expected_sha256:
        raise UserError(f"{label}: architecture does not match the manifest's architecture_sha256")
    try:
        with keras.saving.custom_object_scope({}):
            model = keras.Model.from_config(config)
    except Exception as e:
        raise UserError(f"{label}: Keras cannot build this architecture ({e.__class__.__name__}: {str(e).splitlines()[0][:160]})") from e
    return model
