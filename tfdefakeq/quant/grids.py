"""Weight grids and their storage cost, in numpy only (no TensorFlow): shared by the tfmot
quantizers (`quantizers.py`) and the bit allocator (`horizontal.py`), which must import without TF.
"""

from __future__ import annotations

import numpy as np

# Signed integer levels of each weight bit-width, and the FakeQuant container that stores them.
# 8 and 4 bits are TFLite's symmetric narrow ranges. Below 4 bits the full signed range is used
# (LSQ's choice: 2 bits = {-2, -1, 0, 1}, not a 3-level ternary grid), emitted as a 4-bit
# FakeQuant of range +-7 steps with the weights first clamped to the levels: the converter then
# stores exactly these integers in an INT4 tensor instead of re-rounding a 3-bit grid onto int4
# (DESIGN.md section 5).
WEIGHT_LEVELS = {8: (-127, 127), 4: (-7, 7), 3: (-4, 3), 2: (-2, 1)}
# Bits each value costs in the .tflite: 3-bit values live in INT4 containers; 2-bit tensors are
# repacked as INT2 after conversion (`tfdefakeq.runtime.unpack.pack_int2_tensors`), or stay in INT4
# containers when INT2 is off (`convert --no-int2`): see `storage_bits_per_weight`.
STORAGE_BITS = {8: 8, 4: 4, 3: 4, 2: 2}
STORAGE_BITS_NO_INT2 = {8: 8, 4: 4, 3: 4, 2: 4}


def storage_bits_per_weight(bits: int, int2: bool = True) -> int:
    """Bits one `bits`-bit weight takes in the .tflite (the container it is written in)."""
    return (STORAGE_BITS if int2 else STORAGE_BITS_NO_INT2)[bits]


def weight_levels(num_bits: int) -> tuple[int, int]:
    if num_bits not in WEIGHT_LEVELS:
        raise ValueError(f"weight bits must be one of {sorted(WEIGHT_LEVELS)}, got {num_bits}")
    return WEIGHT_LEVELS[num_bits]


def mse_step(weights: np.ndarray, num_bits: int, per_axis: bool, grid: int = 40) -> np.ndarray:
    """Step size per output channel (last axis; shape () if not per_axis) minimising the
    quantization MSE of `weights` on the levels of `num_bits`."""
    qmin, qmax = weight_levels(num_bits)
    w = weights.reshape(-1, weights.shape[-1]) if per_axis else weights.reshape(-1, 1)
    largest = np.maximum(np.abs(w).max(axis=0), 1e-8) / max(-qmin, qmax)
    best_err = np.full(largest.shape, np.inf)
    best = largest.copy()
    error = np.empty(w.shape, np.float64)  # one buffer, in place: the same float64 operations, twice as fast
    for ratio in np.linspace(0.15, 1.0, grid):
        step = largest * ratio
        np.divide(w, step, out=error)
        error += 0.5
        np.floor(error, out=error)
        np.clip(error, qmin, qmax, out=error)
        error *= step
        error -= w
        np.square(error, out=error)
        err = error.mean(axis=0)
        better = err < best_err
        best_err[better] = err[better]
        best[better] = step[better]
    return best.astype(np.float32) if per_axis else np.float32(best[0])
