"""Layers shared by the backbone families."""

from __future__ import annotations

from tfdefakeq.tfcompat import keras

layers = keras.layers
BN_EPSILON = 1.001e-5  # keras.applications ResNet's value, so its weights load unchanged


def classifier_head(x, num_classes: int, name: str = "predictions", dropout: float = 0.0):
    """Global average pool + dense. One class -> a logit for P(fake); more -> softmax (ImageNet)."""
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    activation = None if num_classes == 1 else "softmax"
    return layers.Dense(num_classes, activation=activation, name=name)(x)
