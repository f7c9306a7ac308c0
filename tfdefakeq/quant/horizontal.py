"""Horizontal adaptive quantization: per-layer weight bits chosen by measured sensitivity under a
budget (after DeFakeQ's horizontal direction; HAWQ/BRECQ-style sensitivity).

Sensitivity of layer l at b bits = mean squared change of the detector's logits on calibration
images when only l's (BN-folded) kernel is put on the b-bit grid (MSE-optimal steps) and every
other layer stays float. The allocator then minimises the summed sensitivity subject to the
storage budget (a multiple-choice knapsack, solved by a Lagrangian bisection and a greedy fill).
Storage counts what the .tflite holds: 3-bit weights cost 4 bits (INT4 containers), 2-bit ones 2
bits (INT2), and salient channels kept at 8 bits by the vertical split cost 8.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfdefakeq.core.errors import UserError
from tfdefakeq.quant.quantizers import STORAGE_BITS, mse_step, weight_levels

CHOICES = (8, 4, 3, 2)


@dataclass
class QuantPlan:
    """What the adaptive scheme decided, reusable with `--bit-plan FILE`.

    weight_bits: layer name -> bits (8/4/3/2) of the BN-folded model's weighted layers.
    salient_channels: conv name -> input channels kept on the 8-bit path (vertical split).
    budget: how the plan was made (avg_bits / bytes, cost model); sensitivity: layer -> {option: score}
    (options "8", "4", "4s" = 4 bits with the salient channels split off, ...).
    """

    weight_bits: dict[str, int]
    salient_channels: dict[str, list[int]] = field(default_factory=dict)
    budget: dict = field(default_factory=dict)
    sensitivity: dict[str, dict[str, float]] = field(default_factory=dict)
    layers: dict[str, dict[str, int]] = field(default_factory=dict)  # layer -> weights, cin, cout (for reports)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "QuantPlan":
        return cls(weight_bits={k: int(v) for k, v in obj["weight_bits"].items()},
                   salient_channels={k: [int(i) for i in v] for k, v in obj.get("salient_channels", {}).items()},
                   budget=obj.get("budget", {}), sensitivity=obj.get("sensitivity", {}), layers=obj.get("layers", {}))

    def save(self, path, overwrite: bool = False) -> Path:
        from tfdefakeq.core.fileio import write_json_atomic

        return write_json_atomic(path, self.to_json(), overwrite=overwrite)

    @classmethod
    def load(cls, path) -> "QuantPlan":
        from tfdefakeq.core.fileio import read_json

        obj = read_json(path)
        if not isinstance(obj, dict) or not isinstance(obj.get("weight_bits"), dict):
            raise UserError(f"{path}: not a bit plan (needs a 'weight_bits' map of layer -> bits)")
        bad = {k: v for k, v in obj["weight_bits"].items() if v not in CHOICES}
        if bad:
            raise UserError(f"{path}: unsupported bits {bad} (choose from {list(CHOICES)})")
        return cls.from_json(obj)


def quantize_kernel(kernel: np.ndarray, bits: int, per_axis: bool = True, depthwise: bool = False) -> np.ndarray:
    """`kernel` on the `bits` grid with MSE-optimal steps per output channel (last axis; for a
    depthwise kernel (kh, kw, C, M) the C*M channels, as LSQWeightQuantizer does)."""
    if depthwise:
        kh, kw, c, m = kernel.shape
        return quantize_kernel(kernel.reshape(kh, kw, 1, c * m), bits, per_axis).reshape(kernel.shape)
    qmin, qmax = weight_levels(bits)
    step = mse_step(kernel, bits, per_axis)
    return (np.clip(np.floor(kernel / step + 0.5), qmin, qmax) * step).astype(np.float32)


def option_key(bits: int, split: bool = False) -> str:
    """A layer's option: its bits, 's' when salient input channels stay on an 8-bit path."""
    return f"{bits}s" if split else str(bits)


def parse_option(key) -> tuple[int, bool]:
    key = str(key)
    return int(key.rstrip("s")), key.endswith("s")


def layer_sensitivity(folded, layer_names, images: np.ndarray, choices=CHOICES, salient: dict | None = None,
                      batch_size: int = 64) -> dict:
    """layer -> {option: mean squared logit change} with that layer alone quantized (float
    elsewhere). Options are the bits in `choices`, plus for the layers in `salient` (layer -> input
    channels) each low-bit choice with those channels at 8 bits ("4s", "2s", ...)."""
    from tfdefakeq.core.tfcompat import keras, tf

    forward = tf.function(lambda x: folded(x, training=False))  # traced once; weights are read at call time

    def logits():
        return np.concatenate([forward(images[i:i + batch_size]).numpy().reshape(-1) for i in range(0, len(images), batch_size)])

    reference = logits()
    salient = salient or {}
    scores = {}
    for name in layer_names:
        layer = folded.get_layer(name)
        weights = layer.get_weights()
        per_axis = not isinstance(layer, keras.layers.Dense)
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        scores[name] = {}
        for bits in choices:
            variants = [(False, quantize_kernel(weights[0], bits, per_axis, depthwise))]
            if name in salient and bits < 8:
                # as the split conv is built: each part gets its own steps
                idx = salient[name]
                rest = [c for c in range(weights[0].shape[2]) if c not in set(idx)]
                kernel = np.empty_like(weights[0])
                kernel[:, :, idx, :] = quantize_kernel(weights[0][:, :, idx, :], 8, per_axis)
                kernel[:, :, rest, :] = quantize_kernel(weights[0][:, :, rest, :], bits, per_axis)
                variants.append((True, kernel))
            for split, kernel in variants:
                layer.set_weights([kernel] + weights[1:])
                scores[name][option_key(bits, split)] = float(np.mean((logits() - reference) ** 2))
        layer.set_weights(weights)
    return scores


def storage_bits(bits: int, salient_fraction: float = 0.0) -> float:
    """Bits per weight a layer costs in the .tflite at `bits` with a share of 8-bit input channels."""
    if bits == 8:
        return 8.0
    return salient_fraction * 8 + (1 - salient_fraction) * STORAGE_BITS[bits]


def allocate_bits(sensitivity: dict, sizes: dict[str, int], budget_bits: float, fixed: dict[str, int] | None = None,
                  salient_fraction: dict[str, float] | None = None, overhead_bits=None) -> dict[str, str]:
    """Option per layer minimising summed sensitivity with storage <= budget_bits x all weights.

    sensitivity: layer -> {option: score} for the free layers (options: see `option_key`, so the
    vertical split competes for the same budget as the bits); sizes: layer -> weights (free and
    fixed); fixed: layer -> bits not to change (stem, classifier, depthwise); salient_fraction:
    layer -> share of its weights on the 8-bit path when split. overhead_bits(layer, bits, split)
    -> bits the file spends on the layer besides its weights (scales, biases, graph), when the
    budget is the whole file's. Returns layer -> option key. Raises UserError when even the
    cheapest option everywhere exceeds the budget.
    """
    fixed = dict(fixed or {})
    salient_fraction = salient_fraction or {}
    free = [n for n in sensitivity if n not in fixed]
    total = sum(sizes.values())
    budget = budget_bits * total
    extra = overhead_bits or (lambda name, bits, split: 0.0)
    fixed_cost = sum(sizes[n] * storage_bits(b) + extra(n, b, False) for n, b in fixed.items())
    fixed_cost += extra(None, 8, False) if overhead_bits else 0.0  # the file's own bytes (name None)

    def cost(name, key):
        bits, split = parse_option(key)
        return sizes[name] * storage_bits(bits, salient_fraction.get(name, 0.0) if split else 0.0) + extra(name, bits, split)

    score = {n: {str(k): float(v) for k, v in sensitivity[n].items()} for n in free}
    cheapest = fixed_cost + sum(min(cost(n, k) for k in score[n]) for n in free)
    if cheapest > budget + 1e-6:
        raise UserError(
            f"bit budget {budget_bits:g} average bits is impossible: the cheapest plan needs "
            f"{cheapest / total:.3f} (first conv, classifier and depthwise layers stay at 8 bits; scales and biases count)"
        )

    def pick(lam):
        return {n: min(score[n], key=lambda k: (score[n][k] + lam * cost(n, k), -cost(n, k))) for n in free}

    def spent(plan):
        return fixed_cost + sum(cost(n, k) for n, k in plan.items())

    lo, hi = 0.0, 1.0
    while spent(pick(hi)) > budget and hi < 1e12:
        hi *= 4
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if spent(pick(mid)) > budget else (lo, mid)
    plan = pick(hi)
    # Greedy fill: spend what the bisection left on the upgrades that buy the most per bit.
    while True:
        left = budget - spent(plan)
        moves = [
            ((score[n][plan[n]] - score[n][k]) / (cost(n, k) - cost(n, plan[n])), n, k)
            for n in free for k in score[n]
            if 0 < cost(n, k) - cost(n, plan[n]) <= left and score[n][k] < score[n][plan[n]]
        ]
        if not moves:
            break
        _, n, k = max(moves)
        plan[n] = k
    return {**{n: option_key(b) for n, b in fixed.items()}, **plan}


def average_bits(plan: dict[str, int], sizes: dict[str, int], salient_fraction: dict[str, float] | None = None,
                 overhead_bits=None) -> float:
    """Storage bits per weight of `plan` over all its layers (with `overhead_bits`, file bits)."""
    salient_fraction = salient_fraction or {}
    extra = overhead_bits or (lambda name, bits, split: 0.0)
    total = sum(sizes[n] for n in plan)
    file_bytes = extra(None, 8, False) if overhead_bits else 0.0
    return (file_bytes + sum(sizes[n] * storage_bits(b, salient_fraction.get(n, 0.0)) + extra(n, b, n in salient_fraction and b < 8)
                             for n, b in plan.items())) / total


# What the .tflite spends on a quantized conv besides its weights (TF 2.21 files): per output
# channel a float32 scale + int64 zero point for the kernel and for the int32 bias, and the bias
# itself; a split conv has a second conv (its own kernel scales and a zero bias, the converter adds
# one), two int32 GATHER index lists and the ADD; plus graph bytes (ops, tensors, names) per layer.
QUANT_PARAM_BYTES = 12


MODEL_OVERHEAD_BYTES = 9000  # per file: I/O tensors, operator codes, signature, metadata (measured ~8.5-9 KB)


def layer_overhead_bits(cout: int, cin: int, split: bool) -> float:
    """Bits a quantized conv/dense costs in the .tflite besides its weight values."""
    per_conv = cout * (2 * QUANT_PARAM_BYTES + 4)
    bytes_ = per_conv + 600
    if split:
        bytes_ += per_conv + 4 * cin + 1500
    return 8.0 * bytes_
