"""Seeded weights for the torch fixtures, drawn with numpy alone (no torch, no TensorFlow).

tests/fixtures/make_torch_fixtures.py draws a torch model's state dict with `draw_state_dict` from
its (name, shape) list and saves torch's outputs; the tests draw the very same tensors from the
names and shapes stored beside those outputs. The procedure, in state-dict order, from one
`np.random.default_rng(seed)`:

- `*.running_mean`: normal(0, 0.1); `*.running_var`: uniform(0.5, 1.5) (non-trivial statistics, so
  the BatchNorm mapping is really tested); `*.num_batches_tracked`: int64 0, nothing drawn;
- a 1-D `*.weight` (BatchNorm gamma): uniform(0.5, 1.5); a 1-D `*.bias`: normal(0, 0.1);
- any other `*.weight` (conv, linear): normal(0, gain * sqrt(1 / fan_in)), fan_in = prod(shape[1:]);
  float32 throughout. `gain` (1 by default) keeps a deep network's logits dependent on its input
  (EfficientNet's swish and squeeze-excite gates halve the signal per layer: gains 1.35-1.45 there).
"""

from __future__ import annotations

import numpy as np


def draw_state_dict(names_shapes, seed: int, gain: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in names_shapes:
        shape = tuple(int(s) for s in shape)
        if name.endswith("num_batches_tracked"):
            out[name] = np.zeros(shape, np.int64)
        elif name.endswith("running_mean"):
            out[name] = rng.normal(0.0, 0.1, shape).astype(np.float32)
        elif name.endswith("running_var"):
            out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif len(shape) == 1 and name.endswith("weight"):
            out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif len(shape) == 1:
            out[name] = rng.normal(0.0, 0.1, shape).astype(np.float32)
        else:
            fan_in = int(np.prod(shape[1:]))
            out[name] = (gain * rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)).astype(np.float32)
    return out


def draw_inputs(n: int, size: int, seed: int) -> np.ndarray:
    """uint8 images (n, size, size, 3): what both sides see (torch after its own normalisation)."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
