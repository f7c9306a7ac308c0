"""Detector backbones as flat Functional tf-keras models, built by name.

No nested sub-models, no Lambda layers, no preprocessing inside the graph: tfmot and the TFLite
converter take them as they are. Layer names follow keras.applications so its weights load.
"""

from tfdefakeq.backbones.registry import backbone_info, build, list_backbones, register_backbone

# One module per family; importing them runs their @register_backbone decorators (the registry itself
# imports none of them, so the dependency points one way: families -> registry).
from tfdefakeq.backbones import cqb, efficientnet, meso, mobilenet, resnet, xception  # noqa: E402,F401

__all__ = ["build", "list_backbones", "backbone_info", "register_backbone"]
