"""The torch fixtures (tests/fixtures/torch/*.npz) and the state dicts they were made from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.torchport.weights_gen import draw_state_dict

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "torch"


def load_fixture(name: str) -> dict:
    """{"state": regenerated state dict, "images": uint8, "logits": torch's, **meta}."""
    z = np.load(FIXTURES / f"{name}.npz")
    meta = json.loads(str(z["meta"]))
    names_shapes = list(zip([str(n) for n in z["names"]], json.loads(str(z["shapes"]))))
    state = draw_state_dict(names_shapes, meta["seed"], meta.get("gain", 1.0))
    return {**meta, "state": state, "images": z["images"], "logits": z["logits"]}


def torch_fake_logit(logits: np.ndarray, fake_class: int = 1) -> np.ndarray:
    """torch's logits -> our single "fake" logit (2 logits: z_fake - z_real)."""
    if logits.shape[1] == 1:
        return logits[:, 0]
    return logits[:, fake_class] - logits[:, 1 - fake_class]
