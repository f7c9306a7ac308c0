"""MesoNet (Afchar et al., WIFS 2018): Meso4 and MesoInception4, the compact face-forgery detectors,
after the authors' Keras code (DariusAf/MesoNet, classifiers.py). Native input 256 px; the paper's
counts are trainable parameters of the binary model: Meso4 27,977, MesoInception4 28,615.

One deliberate change: the authors put BatchNormalization after the ReLU (Conv(relu) -> BN -> pool).
Ours is Conv -> BN -> ReLU -> pool: the same parameters, but the BN folds into the conv, so the int8
model has no standalone BN (tfmot has no QuantizeConfig for one; TFLite would run it as MUL + ADD).
The head is the authors': Flatten -> Dropout -> Dense(16) -> LeakyReLU(0.1) -> Dropout -> Dense.

MesoInception4's inception branches end in their own ReLU (conv -> BN -> ReLU per branch, then the
concatenation, as the authors' branches end in ReLU). Until 2026-12 ours had one ReLU after the
concatenation instead. The two compute the same function (a ReLU commutes with stacking channels),
and the weighted layers kept their names, shapes and order (only the weight-free ReLU layers
changed: `inceptionN_relu` became `inceptionN_bK_relu`), so checkpoints of the old layout load
as before, by name or by order, and give the same float outputs. Why it moved: TFLite's
CONCATENATION is a same-scale op, so the int8 converter writes every branch at the concat's one
scale; a ReLU after it then read and wrote different quantization parameters, which XNNPACK does
not delegate (2 RELU ops left on the reference kernels). With the ReLU in each branch it fuses into
the branch's conv and no RELU op remains.
"""

from __future__ import annotations

from tfdefakeq.backbones.common import front_end, layers
from tfdefakeq.backbones.registry import register_backbone
from tfdefakeq.core.tfcompat import keras


def _conv_bn_relu(x, filters, kernel, name):
    x = layers.Conv2D(filters, kernel, padding="same", name=name)(x)  # biased, as the authors'
    x = layers.BatchNormalization(name=name + "_bn")(x)
    return layers.ReLU(name=name + "_relu")(x)


def _head(x, num_classes, dropout, name):
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="dropout1")(x)
    x = layers.Dense(16, name="fc1")(x)
    x = layers.LeakyReLU(0.1, name="fc1_leaky_relu")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    activation = None if num_classes == 1 else "softmax"
    return layers.Dense(num_classes, activation=activation, name="predictions")(x)


def _pool(x, size, name):
    return layers.MaxPooling2D(size, padding="same", name=name)(x)


@register_backbone("meso4", family="mesonet", reference_params=27_977, reference_counts="trainable",
                   reference_input=256, reference_classes=1, reference_source="Afchar et al. 2018 / DariusAf/MesoNet")
def meso4(input_shape=(256, 256, 3), num_classes=1, dropout: float = 0.5, highpass=False):
    """Meso4: four conv blocks (8, 8, 16, 16 channels; pools 2, 2, 2, 4) and a 16-unit dense head."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = front_end(inputs, highpass)
    for i, (filters, kernel, pool) in enumerate([(8, 3, 2), (8, 5, 2), (16, 5, 2), (16, 5, 4)]):
        x = _conv_bn_relu(x, filters, kernel, f"conv{i + 1}")
        x = _pool(x, pool, f"pool{i + 1}")
    return keras.Model(inputs, _head(x, num_classes, dropout, "meso4"), name="meso4")


def _inception(x, a, b, c, d, name):
    """The authors' InceptionLayer: 1x1 | 1x1->3x3 | 1x1->3x3 dilation 2 | 1x1->3x3 dilation 3,
    each branch conv -> BN -> ReLU, concatenated. Their BN over the concatenation is per channel,
    so it is the same as one BN per branch (same parameters); per branch it folds into the branch's
    conv, and the ReLU into the conv's TFLite op."""
    branches = []
    for branch, (filters, dilation) in enumerate([(a, None), (b, 1), (c, 2), (d, 3)], start=1):
        if dilation is not None:  # 1x1 reduce -> ReLU -> 3x3 (dilated)
            y = layers.Conv2D(filters, 1, padding="same", name=f"{name}_b{branch}_reduce")(x)
            y = layers.ReLU(name=f"{name}_b{branch}_reduce_relu")(y)
            y = layers.Conv2D(filters, 3, padding="same", dilation_rate=dilation, name=f"{name}_b{branch}_conv")(y)
        else:
            y = layers.Conv2D(filters, 1, padding="same", name=f"{name}_b{branch}_conv")(x)
        y = layers.BatchNormalization(name=f"{name}_b{branch}_bn")(y)
        branches.append(layers.ReLU(name=f"{name}_b{branch}_relu")(y))
    return layers.Concatenate(name=name + "_concat")(branches)


@register_backbone("mesoinception4", family="mesonet", reference_params=28_615, reference_counts="trainable",
                   reference_input=256, reference_classes=1, reference_source="Afchar et al. 2018 / DariusAf/MesoNet")
def mesoinception4(input_shape=(256, 256, 3), num_classes=1, dropout: float = 0.5, highpass=False):
    """MesoInception4: two inception modules (1, 4, 4, 2) and (2, 4, 4, 2), then Meso4's last two
    conv blocks and head. The authors' branches end in ReLU, then concatenate, then BN; ours are
    conv -> BN -> ReLU per branch, then concatenate (same parameters, foldable BN; see the module
    docstring for the earlier layout)."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = front_end(inputs, highpass)
    for i, (a, b, c, d) in enumerate([(1, 4, 4, 2), (2, 4, 4, 2)]):
        x = _inception(x, a, b, c, d, f"inception{i + 1}")
        x = _pool(x, 2, f"pool{i + 1}")
    for i, pool in [(3, 2), (4, 4)]:
        x = _conv_bn_relu(x, 16, 5, f"conv{i}")
        x = _pool(x, pool, f"pool{i}")
    return keras.Model(inputs, _head(x, num_classes, dropout, "mesoinception4"), name="mesoinception4")
