"""Build detector backbones by name (after timm's `register_model` / `create_model`).

>>> from tfdefakeq.backbones import build, list_backbones
>>> model = build("resnet18", input_shape=(64, 64, 3))      # flat Functional tf-keras model
>>> model.output_shape                                        # one logit: P(fake) = sigmoid(logit)
(None, 1)
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from tfdefakeq.core.errors import UserError


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    family: str
    builder: Callable
    reference_params: int | None  # parameter count of the reference model (see the fields below)
    keras_application: str | None  # keras.applications model whose weights load into ours
    reference_counts: str = "all"  # "all": count_params(); "trainable": trainable only (torchvision, MesoNet)
    reference_input: int = 224  # input side the reference is counted at (matters with a Flatten head)
    reference_classes: int = 1000  # classifier outputs of the reference
    params_outside_graph: int = 0  # reference parameters that live in our Preprocess instead
    reference_source: str = ""  # where the reference count comes from


_REGISTRY: dict[str, BackboneInfo] = {}


def register_backbone(name: str, family: str, reference_params: int | None = None, keras_application: str | None = None,
                      **reference):
    """Decorator: registers `builder(input_shape=..., num_classes=..., **kwargs) -> keras.Model`.
    `reference`: the BackboneInfo reference_* fields (how reference_params was counted)."""

    def wrap(builder):
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} registered twice")
        _REGISTRY[name] = BackboneInfo(name, family, builder, reference_params, keras_application, **reference)
        return builder

    return wrap


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def backbone_info(name: str) -> BackboneInfo:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown backbone {name!r} (known: {', '.join(sorted(_REGISTRY))}){hint}")
    return _REGISTRY[name]


def build(name: str, input_shape=(64, 64, 3), num_classes: int = 1, **kwargs):
    """Builds backbone `name` as a flat Functional tf-keras model.

    num_classes=1 gives a detector head: one logit, no sigmoid in the graph (the runtime applies it,
    so int8 outputs keep their resolution around the decision threshold).
    """
    info = backbone_info(name)
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3 or min(input_shape[:2]) < 16:
        raise UserError(f"backbone {name}: input_shape must be (height, width, 3) with sides >= 16, got {input_shape}")
    return info.builder(input_shape=input_shape, num_classes=num_classes, **kwargs)

