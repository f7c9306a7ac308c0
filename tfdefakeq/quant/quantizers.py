"""tfmot Quantizers whose ranges are learned and whose bits survive conversion.

`LearnedRangeWeightQuantizer` emits `fake_quant_with_min_max_vars(_per_channel)` with a symmetric,
narrow range [-m, m] (zero point 0). With num_bits=4 the TF 2.21 converter stores the kernel as a
packed INT4 tensor whose scale is exactly m / 7: the grid trained is the grid shipped.
"""

from __future__ import annotations

import numpy as np

from tfdefakeq.tfcompat import keras, tf
import tensorflow_model_optimization as tfmot

Quantizer = tfmot.quantization.keras.quantizers.Quantizer


def mse_clip(weights: np.ndarray, num_bits: int, per_axis: bool, grid: int = 20) -> np.ndarray:
    """Clipping range m per output channel (last axis) that minimises the weights' quantization MSE.

    Returns shape (channels,) if per_axis else (). Searched over m = r * max|w|, r in [0.3, 1].
    """
    levels = 2 ** (num_bits - 1) - 1
    w = weights.reshape(-1, weights.shape[-1]) if per_axis else weights.reshape(-1, 1)
    max_abs = np.maximum(np.abs(w).max(axis=0), 1e-8)
    best_err = np.full(max_abs.shape, np.inf)
    best = max_abs.copy()
    for ratio in np.linspace(0.3, 1.0, grid):
        m = max_abs * ratio
        step = m / levels
        q = np.clip(np.round(w / step), -levels, levels) * step
        err = ((q - w) ** 2).mean(axis=0)
        better = err < best_err
        best_err[better] = err[better]
        best[better] = m[better]
    return best.astype(np.float32) if per_axis else np.float32(best[0])


@keras.utils.register_keras_serializable(package="tfdefakeq")
class LearnedRangeWeightQuantizer(Quantizer):
    """Symmetric weight quantizer with a trainable clipping range per output channel (or tensor).

    The range starts at the MSE-optimal clip (`init_weight_ranges`) and is trained through the
    FakeQuant gradient. Dense kernels must use per_axis=False: the converter needs per-tensor there.
    """

    def __init__(self, num_bits: int = 4, per_axis: bool = True):
        if not 2 <= num_bits <= 8:
            raise ValueError(f"num_bits must be in [2, 8], got {num_bits}")
        self.num_bits = int(num_bits)
        self.per_axis = bool(per_axis)

    def build(self, tensor_shape, name, layer):
        shape = (int(tensor_shape[-1]),) if self.per_axis else ()
        max_var = layer.add_weight(
            name + "_range", shape=shape, initializer=keras.initializers.Constant(1.0), trainable=True
        )
        return {"range_var": max_var}

    def __call__(self, inputs, training, weights, **kwargs):
        # |range| keeps the grid valid if an optimizer step pushes it through zero.
        m = tf.math.abs(weights["range_var"]) + 1e-8
        if self.per_axis:
            return tf.quantization.fake_quant_with_min_max_vars_per_channel(
                inputs, -m, m, num_bits=self.num_bits, narrow_range=True
            )
        return tf.quantization.fake_quant_with_min_max_vars(inputs, -m, m, num_bits=self.num_bits, narrow_range=True)

    def get_config(self):
        return {"num_bits": self.num_bits, "per_axis": self.per_axis}

    def __eq__(self, other):
        return isinstance(other, LearnedRangeWeightQuantizer) and self.get_config() == other.get_config()

    def __ne__(self, other):
        return not self.__eq__(other)
