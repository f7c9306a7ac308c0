"""Folds BatchNormalization into the convolution before it.

tfmot folds BN only for its own default configs; with a custom QuantizeConfig the kernel would be
quantized before the BN scale, and the converter would fold BN afterwards and re-quantize the
product to int8, losing the 4-bit grid. Folding first makes the quantized kernel the stored one.
"""

from __future__ import annotations

import numpy as np

from tfdefakeq.core.errors import UserError
from tfdefakeq.core.tfcompat import keras

layers = keras.layers
_FOLDABLE = (layers.Conv2D, layers.DepthwiseConv2D)


def inbound_layers(layer) -> list:
    """The layers feeding `layer` in a single-use Functional graph."""
    if len(layer._inbound_nodes) != 1:
        raise UserError(f"layer {layer.name}: shared layers are not supported (used {len(layer._inbound_nodes)} times)")
    inbound = layer._inbound_nodes[0].inbound_layers
    return list(inbound) if isinstance(inbound, (list, tuple)) else [inbound]


def consumers(model) -> dict[str, list[str]]:
    """Layer name -> names of the layers that read its output (every call of a layer counts: tfmot
    calls the input QuantizeLayer once per reader in some graphs, e.g. MesoInception-4)."""
    out: dict[str, list[str]] = {layer.name: [] for layer in model.layers}
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        for node in layer._inbound_nodes:
            inbound = node.inbound_layers
            for src in inbound if isinstance(inbound, (list, tuple)) else [inbound]:
                out.setdefault(src.name, []).append(layer.name)
    return out


def _fold_weights(conv, bn) -> list[np.ndarray]:
    gamma = bn.gamma.numpy() if bn.scale else np.ones(bn.moving_mean.shape, np.float32)
    beta = bn.beta.numpy() if bn.center else np.zeros(bn.moving_mean.shape, np.float32)
    scale = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    weights = conv.get_weights()
    kernel = weights[0]
    bias = weights[1] if conv.use_bias else np.zeros(scale.shape, np.float32)
    if isinstance(conv, layers.DepthwiseConv2D):
        # depthwise kernel (kh, kw, in, mult); output channel = in * mult + m
        kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * scale
    bias = beta + (bias - bn.moving_mean.numpy()) * scale
    return [kernel.astype(np.float32), bias.astype(np.float32)]


def rebuild(model, replace):
    """Rebuilds the flat Functional `model` layer by layer: a fresh copy of each layer with its
    weights, except where `replace(layer, x, tensors)` returns (output tensor, [(new layer, weights)])
    to put something else in its place (x: the layer's input tensor(s) in the new graph)."""
    tensors = {}
    new_inputs = []
    for inp in model.inputs:
        name = inp.node.layer.name
        tensors[name] = keras.Input(shape=inp.shape[1:], name=name, dtype=inp.dtype)
        new_inputs.append(tensors[name])
    pending = []
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        args = [tensors[src.name] for src in inbound_layers(layer)]
        x = args[0] if len(args) == 1 else args
        replaced = replace(layer, x, tensors)
        if replaced is not None:
            tensors[layer.name], new_weights = replaced
            pending += new_weights
            continue
        clone = layer.__class__.from_config(layer.get_config())
        tensors[layer.name] = clone(x)
        pending.append((clone, layer.get_weights()))
    outputs = [tensors[out.node.layer.name] for out in model.outputs]
    rebuilt = keras.Model(new_inputs, outputs[0] if len(outputs) == 1 else outputs, name=model.name)
    for layer, weights in pending:
        layer.set_weights(weights)
    return rebuilt


def split_separable(model):
    """Returns `model` with every SeparableConv2D `name` replaced by DepthwiseConv2D `name_depthwise`
    followed by a 1x1 Conv2D `name` (what TFLite runs anyway), so a BN after it folds into the 1x1
    conv and each half gets its own weight quantizer. Returns `model` itself when it has none."""
    if not any(type(layer) is layers.SeparableConv2D for layer in model.layers):
        return model

    def split(layer, x, tensors):
        if type(layer) is not layers.SeparableConv2D:
            return None
        c = layer.get_config()
        if c["activation"] != "linear":
            raise UserError(f"layer {layer.name}: fused activation in SeparableConv2D is not supported")
        depthwise = layers.DepthwiseConv2D(c["kernel_size"], strides=c["strides"], padding=c["padding"],
                                           depth_multiplier=c["depth_multiplier"], dilation_rate=c["dilation_rate"],
                                           use_bias=False, name=layer.name + "_depthwise")
        pointwise = layers.Conv2D(c["filters"], 1, use_bias=c["use_bias"], name=layer.name)
        weights = layer.get_weights()
        return pointwise(depthwise(x)), [(depthwise, weights[:1]), (pointwise, weights[1:])]

    return rebuild(model, split)


def fold_batchnorm(model):
    """Returns a copy of the flat Functional `model` with every Conv->BN pair fused into one conv
    (SeparableConv2D layers are split first, see split_separable).

    Outputs agree with `model` in inference mode to float rounding. BN layers that do not follow a
    conv (or whose conv feeds other layers too) stay as they are.
    """
    model = split_separable(model)
    readers = consumers(model)
    fold_pairs: dict[str, str] = {}  # bn name -> conv name
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            (src,) = inbound_layers(layer)
            if isinstance(src, _FOLDABLE) and readers[src.name] == [layer.name] and src.activation.__name__ == "linear":
                fold_pairs[layer.name] = src.name
    folded_convs = set(fold_pairs.values())

    def fold(layer, x, tensors):
        if layer.name in fold_pairs:
            conv = model.get_layer(fold_pairs[layer.name])
            config = conv.get_config()
            config["use_bias"] = True
            new_conv = conv.__class__.from_config(config)
            return new_conv(tensors[conv.name]), [(new_conv, _fold_weights(conv, layer))]
        if layer.name in folded_convs:
            # the conv is built when its BN is reached; until then pass its input through
            return x, []
        return None

    return rebuild(model, fold)


def run_layers(model, x, before=None, start: int = 0):
    """Runs the flat Functional `model` layer by layer (eagerly, or traced inside a tf.function) on
    `x`; `before(layer, inputs)` may return replacement inputs for a layer (e.g. a watched gate
    product). start > 0: runs model.layers[start:] only, `x` being the dict of the tensors that
    cross the cut before layer `start` (layer name -> its output, see `crossing`). Returns the output."""
    tensors = dict(x) if start else {model.inputs[0].node.layer.name: x}
    for layer in model.layers[start:]:
        if isinstance(layer, layers.InputLayer):
            continue
        args = [tensors[src.name] for src in inbound_layers(layer)]
        args = args[0] if len(args) == 1 else args
        if before is not None:
            args = before(layer, args)
        tensors[layer.name] = layer(args, training=False)
    return tensors[model.outputs[0].node.layer.name]


def crossing(model) -> list[set[str]]:
    """For each position p in model.layers, the names of the layers before p whose outputs layers at
    p or later read: what `run_layers(model, tensors, start=p)` needs (the skip connections included)."""
    made = {layer.name: position for position, layer in enumerate(model.layers)}
    last_read: dict[str, int] = {}
    for position, layer in enumerate(model.layers):
        if not isinstance(layer, layers.InputLayer):
            for src in inbound_layers(layer):
                last_read[src.name] = position
    return [{name for name, last in last_read.items() if made[name] < p <= last} for p in range(len(model.layers))]
