"""Vertical adaptive quantization: inside a low-bit convolution, the input channels that carry
the most forgery signal stay on an 8-bit path (after DeFakeQ's vertical direction, which restores
randomly chosen channels; we choose them by measured saliency).

Saliency of input channel c of conv l: the mean over calibration images of |sum_hw x_c * dz/dx_c|
(first-order Taylor estimate of how much the detection logit z depends on that channel). The conv
is then rebuilt as two integer convolutions whose outputs are added:

    x -> ChannelGather(rest)    -> Conv2D `name`          (low bits, carries the bias) -+
    x -> ChannelGather(salient) -> Conv2D `name_salient`  (8 bits, no bias)           -+-> Add `name_sum`

In TFLite that is GATHER, CONV_2D, CONV_2D, ADD, all int8 (CPU targets: the sub-8-bit models are
for litert on a Pi; the Edge TPU takes 8-bit models only, and GATHER is not on its op list).
"""

from __future__ import annotations

import numpy as np

from tfdefakeq.core.tfcompat import keras, tf

layers = keras.layers
SALIENT_SUFFIX = "_salient"


def channel_runs(indices, channels: int) -> list[tuple[bool, int, int]] | None:
    """[(selected, start, stop)] covering channels 0..channels-1 in maximal blocks that are all
    selected or all not; None unless `indices` are strictly increasing (only then is the gather a
    concatenation of those blocks, in order)."""
    if any(b <= a for a, b in zip(indices, indices[1:])) or not indices or indices[0] < 0 or indices[-1] >= channels:
        return None
    chosen = set(indices)
    runs, start = [], 0
    for c in range(1, channels + 1):
        if c == channels or (c in chosen) != (start in chosen):
            runs.append((start in chosen, start, c))
            start = c
    return runs


def _sliced_gather(x, runs):
    """tf.gather(x, selected channels, axis=-1) as slices of x, with the scatter back to x's channels
    written as one concatenation of dy's slices and zero blocks. The same values and gradients as
    tf.gather; what it saves in a whole training step is measured by benchmarks/qat_step_time.py
    (variant adaptive_no_kd_tf_gather: 0.05-0.07 float steps at 1677350, 0.01-0.42 at 588c6a6)."""

    @tf.custom_gradient
    def fn(x):
        kept = [x[..., a:b] for selected, a, b in runs if selected]
        y = kept[0] if len(kept) == 1 else tf.concat(kept, axis=-1)

        def grad(dy):
            parts, at = [], 0
            lead = tf.shape(dy)[:-1]
            for selected, a, b in runs:
                if selected:
                    parts.append(dy[..., at:at + b - a])
                    at += b - a
                else:
                    parts.append(tf.zeros(tf.concat([lead, [b - a]], axis=0), dy.dtype))
            return parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)

        return y, grad

    return fn(x)


@keras.utils.register_keras_serializable(package="tfdefakeq")
class ChannelGather(layers.Layer):
    """Selects input channels `indices` (last axis), in that order. TFLite: GATHER (inference
    traces tf.gather; a training step with increasing indices takes the same channels as slices,
    which is what makes the split's training step cheap: `_sliced_gather`)."""

    def __init__(self, indices, **kwargs):
        super().__init__(**kwargs)
        self.indices = [int(i) for i in indices]

    def call(self, x, training=None):
        runs = channel_runs(self.indices, int(x.shape[-1])) if training else None
        if runs is not None:
            return _sliced_gather(x, runs)
        return tf.gather(x, self.indices, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (len(self.indices),)

    def get_config(self):
        return {**super().get_config(), "indices": self.indices}


def channel_saliency(model, layer_names, images: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """conv name -> (input channels,) mean |x_c * dz/dx_c| summed over space, over `images`."""
    from tfdefakeq.quant.fold import run_layers

    wanted = set(layer_names)
    totals = {name: 0.0 for name in layer_names}
    for start in range(0, len(images), batch_size):
        x = tf.convert_to_tensor(images[start:start + batch_size], tf.float32)
        gates = {}

        def gate(layer, inputs):
            if layer.name not in wanted:
                return inputs
            # d(logit)/d(gate) at gate = 1 is sum_hw x * dz/dx per image and channel
            g = tf.ones((inputs.shape[0], 1, 1, inputs.shape[-1]))
            tape.watch(g)
            gates[layer.name] = g
            return inputs * g

        with tf.GradientTape() as tape:
            logits = tf.reduce_sum(run_layers(model, x, before=gate))
        grads = tape.gradient(logits, gates)
        for name, grad in grads.items():
            totals[name] = totals[name] + np.abs(grad.numpy()).reshape(grad.shape[0], -1).sum(axis=0)
    return {name: total / len(images) for name, total in totals.items()}


def pick_salient(saliency: dict[str, np.ndarray], ratio: float) -> dict[str, list[int]]:
    """The top `ratio` share of each layer's input channels by saliency (at least one)."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"salient ratio must be in (0, 1), got {ratio}")
    picked = {}
    for name, score in saliency.items():
        k = max(1, int(round(ratio * len(score))))
        picked[name] = sorted(int(i) for i in np.argsort(-score, kind="stable")[:k])
    return picked


def random_salient(channels: dict[str, int], ratio: float, seed: int = 0) -> dict[str, list[int]]:
    """The ablation (DeFakeQ's own choice): as many channels as `pick_salient`, chosen at random."""
    rng = np.random.default_rng(seed)
    return {name: sorted(int(i) for i in rng.choice(c, max(1, int(round(ratio * c))), replace=False))
            for name, c in channels.items()}


def split_salient(model, salient: dict[str, list[int]]):
    """`model` (BN folded) with each Conv2D in `salient` split into an 8-bit salient-channel conv
    and a low-bit conv over the other channels, added. Outputs equal the original's in float."""
    from tfdefakeq.core.errors import UserError
    from tfdefakeq.quant.fold import rebuild

    for name, idx in salient.items():
        try:
            layer = model.get_layer(name)
        except ValueError:
            raise UserError(f"salient channels given for {name!r}, which is not a layer of the model") from None
        if type(layer) is not layers.Conv2D or layer.groups != 1:
            raise UserError(f"layer {name}: only plain Conv2D layers split by input channel (this is {type(layer).__name__})")
        cin = layer.input_shape[-1]
        if not idx or len(set(idx)) != len(idx) or min(idx) < 0 or max(idx) >= cin or len(idx) >= cin:
            raise UserError(f"layer {name}: salient channels must be distinct, in [0, {cin}) and fewer than all")

    def split(layer, x, tensors):
        if layer.name not in salient:
            return None
        hi = list(salient[layer.name])
        lo = [c for c in range(layer.input_shape[-1]) if c not in set(hi)]
        config = layer.get_config()
        kernel, *bias = layer.get_weights()
        rest = layers.Conv2D.from_config({**config, "name": layer.name})
        keep = layers.Conv2D.from_config({**config, "name": layer.name + SALIENT_SUFFIX, "use_bias": False})
        out = layers.Add(name=layer.name + "_sum")([
            rest(ChannelGather(lo, name=layer.name + "_rest_in")(x)),
            keep(ChannelGather(hi, name=layer.name + "_salient_in")(x)),
        ])
        return out, [(rest, [kernel[:, :, lo, :]] + bias), (keep, [kernel[:, :, hi, :]])]

    return rebuild(model, split)
