"""Detector backbones as flat Functional tf-keras models, built by name.

No nested sub-models, no Lambda layers, no preprocessing inside the graph: tfmot and the TFLite
converter take them as they are. Layer names follow keras.applications so its weights load.
"""

from tfdefakeq.backbones.registry import backbone_info, build, list_backbones, register_backbone

__all__ = ["build", "list_backbones", "backbone_info", "register_backbone"]
