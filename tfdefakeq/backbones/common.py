"""Layers shared by the backbone families."""

from __future__ import annotations

import numpy as np

from tfdefakeq.tfcompat import keras, tf

layers = keras.layers
BN_EPSILON = 1.001e-5  # keras.applications ResNet's value, so its weights load unchanged


def classifier_head(x, num_classes: int, name: str = "predictions", dropout: float = 0.0):
    """Global average pool + dense. One class -> a logit for P(fake); more -> softmax (ImageNet)."""
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    activation = None if num_classes == 1 else "softmax"
    return layers.Dense(num_classes, activation=activation, name=name)(x)


@keras.utils.register_keras_serializable(package="tfdefakeq")
class HighPassKernel(keras.initializers.Initializer):
    """3x3 second-order high-pass (the SRM 'square 3x3' residual filter / 4) for each colour channel.

    Upsampling artifacts live at the highest spatial frequencies, far below the image content in
    energy; a fixed high-pass in front lets a detector trained from scratch see them from step one.
    Its taps (multiples of 1/4) are exact on the int8 grid, so it quantizes losslessly.
    """

    KERNEL = np.array([[-1, 2, -1], [2, -4, 2], [-1, 2, -1]], np.float32) / 4.0

    def __call__(self, shape, dtype=None, **kwargs):
        kh, kw, channels, multiplier = shape
        if (kh, kw, multiplier) != (3, 3, 1):
            raise ValueError(f"HighPassKernel needs a (3, 3, C, 1) depthwise kernel, got {shape}")
        kernel = np.repeat(self.KERNEL[:, :, None, None], channels, axis=2)
        return tf.constant(kernel, dtype=dtype or tf.float32)

    def get_config(self):
        return {}


def highpass_front(inputs):
    """Fixed (non-trainable) per-channel high-pass filter: a plain DepthwiseConv2D, so tfmot and the
    converter treat it like any other layer."""
    return layers.DepthwiseConv2D(3, padding="same", use_bias=False, depthwise_initializer=HighPassKernel(),
                                  trainable=False, name="highpass")(inputs)
