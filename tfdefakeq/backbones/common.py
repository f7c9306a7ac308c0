"""Layers shared by the backbone families."""

from __future__ import annotations

import numpy as np

from tfdefakeq.core.tfcompat import keras, tf

layers = keras.layers
BN_EPSILON = 1.001e-5  # keras.applications ResNet's value, so its weights load unchanged
TORCH_BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d's default (graphs built with a torch_layout use it)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's normalisation of [0, 1] pixels
IMAGENET_STD = (0.229, 0.224, 0.225)


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


@keras.utils.register_keras_serializable(package="tfdefakeq")
class HardSigmoid(layers.Layer):
    """relu6(x + 3) / 6, as keras.applications MobileNetV3 computes it, but as one layer (its
    `x + 3.0` and `* (1/6)` are TFOpLambda layers there, which tfmot rejects).

    Quantized (see quant.configs.HardSigmoidQuantizeConfig), the relu6 output is fake-quantized on the
    fixed 8-bit range [0, 6] before the division, so TFLite's ADD(+relu6) and MUL(1/6) both get
    int8 tensors and the division by 6 is an exact rescale onto the output range [0, 1].
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.quantize_inner = False  # set by the QuantizeConfig inside a QAT wrapper

    def call(self, inputs):
        y = tf.nn.relu6(inputs + 3.0)
        if self.quantize_inner:
            y = tf.quantization.fake_quant_with_min_max_args(y, min=0.0, max=6.0, num_bits=8)
        return y * (1.0 / 6.0)

    def compute_output_shape(self, input_shape):
        return input_shape


def hard_swish(x, name: str):
    """x * hard_sigmoid(x) as keras.applications builds it (a Multiply), from our HardSigmoid layer."""
    gate = HardSigmoid(name=name + "_hsigmoid")(x)
    return layers.Multiply(name=name + "_hswish")([x, gate])


@keras.utils.register_keras_serializable(package="tfdefakeq")
class AlphaMix(layers.Layer):
    """QMDD's stage mix: `alpha * quantized + (1 - alpha) * shortcut`, alpha one learnable scalar.

    Inputs: [quantized path, full-precision shortcut] of the same shape. Quantized (see
    quant.configs.AlphaMixQuantizeConfig), each product gets its own 8-bit range so TFLite runs the
    mix as two int8 MULs and an int8 ADD.
    """

    def __init__(self, alpha_init: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.alpha_init = float(alpha_init)
        self.term_quantizers = None  # [(quantizer, vars)] x 2, set by the QuantizeConfig in a QAT wrapper

    def build(self, input_shape):
        self.alpha = self.add_weight("alpha", shape=(), initializer=keras.initializers.Constant(self.alpha_init),
                                     trainable=True)
        super().build(input_shape)

    def call(self, inputs, training=None):
        quantized, shortcut = inputs
        terms = [self.alpha * quantized, (1.0 - self.alpha) * shortcut]
        if self.term_quantizers:
            if training is None:
                training = keras.backend.learning_phase()
            terms = [q(t, training, qvars) for t, (q, qvars) in zip(terms, self.term_quantizers)]
        return terms[0] + terms[1]

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "alpha_init": self.alpha_init}


@keras.utils.register_keras_serializable(package="tfdefakeq")
class DepthwisePReLU(layers.PReLU):
    """keras PReLU with one slope per channel (same `alpha` weight, config and float function) whose
    quantized form runs in XNNPACK's int8 kernels:

        prelu(x) = x + (1 - alpha) * relu(-x)    for every alpha (x >= 0: x; x < 0: alpha x)

    as DEPTHWISE_CONV_2D(x, taps -1) with fused RELU -> DEPTHWISE_CONV_2D(taps 1 - alpha) -> ADD(x, .).
    ai-edge-litert 2.3.0's XNNPACK delegates no int8 PRELU: the builtin kernel then runs it and splits
    the delegated graph (measured at 56x56x64, 1 thread: int8 PRELU 1.38 ms vs float32 0.021 ms; the
    three ops above 0.13 ms together). Single-tap per-channel weights (-1 and 1 - alpha) are exact on
    the int8 per-channel grid. Quantized (see quant.configs.DepthwisePReLUQuantizeConfig), relu(-x)
    and the slope term each get their own 8-bit range, the sum the layer's output range; unquantized
    (no `term_quantizers`), it is keras' PReLU and converts to one float PRELU.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.term_quantizers = None  # [(quantizer, vars)] x 2, set by the QuantizeConfig in a QAT wrapper

    def build(self, input_shape):
        if len(input_shape) != 4 or sorted(self.shared_axes or []) != [1, 2]:
            raise ValueError(f"{self.name}: DepthwisePReLU needs (N, H, W, C) inputs and one slope per channel "
                             f"(shared_axes=[1, 2]), got {input_shape} and shared_axes={self.shared_axes}")
        super().build(input_shape)

    def call(self, inputs, training=None):
        if not self.term_quantizers:
            return super().call(inputs)
        if training is None:
            training = keras.backend.learning_phase()
        (neg_q, neg_vars), (slope_q, slope_vars) = self.term_quantizers
        channels = int(inputs.shape[-1])
        negate = _per_channel_taps(-tf.ones((channels,), inputs.dtype))
        negative = tf.nn.relu(tf.nn.depthwise_conv2d(inputs, negate, [1, 1, 1, 1], "VALID"))
        negative = neg_q(negative, training, neg_vars)
        slope = _per_channel_taps(1.0 - tf.reshape(self.alpha, (channels,)))
        term = slope_q(tf.nn.depthwise_conv2d(negative, slope, [1, 1, 1, 1], "VALID"), training, slope_vars)
        return inputs + term


def _per_channel_taps(taps):
    """(C,) taps -> a (1, 1, C, 1) depthwise kernel fake-quantized per channel at 8 bits, symmetric,
    each tap its channel's max (exact on the grid; straight-through gradient)."""
    bound = tf.stop_gradient(tf.maximum(tf.abs(taps), 1e-8))
    # quantized on TFLite's depthwise layout (1, 1, 1, C), whose channel axis is the converter's
    taps = tf.reshape(taps, (1, 1, 1, -1))
    taps = tf.quantization.fake_quant_with_min_max_vars_per_channel(taps, -bound, bound, num_bits=8, narrow_range=True)
    return tf.reshape(taps, (1, 1, -1, 1))


@keras.utils.register_keras_serializable(package="tfdefakeq")
class ChannelAverageKernel(keras.initializers.Initializer):
    """1x1 conv kernel (1, 1, C, C // group) averaging each group of `group` adjacent channels: QMDD's
    parameter-free channel-downsampling shortcut as a fixed conv the converter and the Edge TPU take.
    Its taps (1/group, group a power of two) sit exactly on the 8-bit weight grid."""

    def __init__(self, group: int = 2):
        self.group = int(group)

    def __call__(self, shape, dtype=None, **kwargs):
        kh, kw, channels, out = shape
        if (kh, kw) != (1, 1) or channels != out * self.group:
            raise ValueError(f"ChannelAverageKernel({self.group}) needs a (1, 1, {out * self.group}, {out}) kernel, got {shape}")
        kernel = np.zeros(shape, np.float32)
        for c in range(channels):
            kernel[0, 0, c, c // self.group] = 1.0 / self.group
        return tf.constant(kernel, dtype=dtype or tf.float32)

    def get_config(self):
        return {"group": self.group}


def channel_average(x, group: int, name: str):
    """Parameter-free channel downsampling (C -> C / group) as a fixed, non-trainable 1x1 conv."""
    channels = int(x.shape[-1])
    return layers.Conv2D(channels // group, 1, use_bias=False, kernel_initializer=ChannelAverageKernel(group),
                         trainable=False, name=name)(x)


@keras.utils.register_keras_serializable(package="tfdefakeq")
class SpatialAverageKernel(keras.initializers.Initializer):
    """Depthwise (k, k, C, 1) kernel whose taps are all 1 / k^2: k x k average pooling as a fixed conv.
    Equal taps sit exactly on a per-channel weight grid at any bit-width (each is the channel's max)."""

    def __call__(self, shape, dtype=None, **kwargs):
        kh, kw, _, multiplier = shape
        if kh != kw or multiplier != 1:
            raise ValueError(f"SpatialAverageKernel needs a (k, k, C, 1) depthwise kernel, got {shape}")
        return tf.fill(shape, tf.constant(1.0 / (kh * kw), dtype or tf.float32))

    def get_config(self):
        return {}


def spatial_average(x, size: int, name: str):
    """Parameter-free k x k average pooling (stride k) as a fixed, non-trainable depthwise conv.

    Not AveragePooling2D: TFLite's int8 AVERAGE_POOL_2D must keep its input's scale and rounds the
    mean of the k^2 int8 values, which a Keras FakeQuant (own range) cannot mirror and a pass-through
    (no FakeQuant) leaves unrounded: measured on cqb_resnet18 W4A8, 0.5 LSB on 8-12% of the
    shortcut's outputs in three blocks. A conv's output is requantized onto its own range in both
    Keras and TFLite, like every other conv."""
    return layers.DepthwiseConv2D(size, strides=size, padding="valid", use_bias=False,
                                  depthwise_initializer=SpatialAverageKernel(), trainable=False, name=name)(x)


def channel_repeat(x, times: int, name: str):
    """Parameter-free channel upsampling (C -> C * times): the tensor concatenated with itself."""
    if times == 1:
        return x
    return layers.Concatenate(name=name)([x] * times)


@keras.utils.register_keras_serializable(package="tfdefakeq")
class SRMKernel(keras.initializers.Initializer):
    """The three SRM residual filters of Zhou et al. 2018 (RGB-N), each applied to every colour
    channel: a depthwise (5, 5, 3, 3) kernel giving 9 noise-residual maps. Taps are multiples of 1/12
    (first-order /4, second-order /12, KB /4) and quantize to 8 bits with a small error."""

    FILTERS = [
        np.array([[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]], np.float32) / 4.0,
        np.array([[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]],
                 np.float32) / 12.0,
        np.array([[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], np.float32) / 2.0,
    ]

    def __call__(self, shape, dtype=None, **kwargs):
        kh, kw, channels, multiplier = shape
        if (kh, kw, multiplier) != (5, 5, 3):
            raise ValueError(f"SRMKernel needs a (5, 5, C, 3) depthwise kernel, got {shape}")
        kernel = np.stack(self.FILTERS, axis=-1)[:, :, None, :]  # (5, 5, 1, 3)
        return tf.constant(np.repeat(kernel, channels, axis=2), dtype=dtype or tf.float32)

    def get_config(self):
        return {}


def front_end(inputs, kind: str | bool | None):
    """Optional fixed forensic front end: None/False, 'highpass' (or True) or 'srm' (9 residual maps)."""
    if kind in (None, False, "none"):
        return inputs
    if kind in (True, "highpass"):
        return highpass_front(inputs)
    if kind == "srm":
        return layers.DepthwiseConv2D(5, padding="same", depth_multiplier=3, use_bias=False,
                                      depthwise_initializer=SRMKernel(), trainable=False, name="srm")(inputs)
    raise ValueError(f"unknown front end {kind!r}: use None, 'highpass' or 'srm'")


def torch_normalize(inputs, mean_std):
    """Our Preprocess output `u = (pixel - 128) / 128` -> torch's `x = (pixel / 255 - mean_c) / std_c`.

    `mean_std`: [mean, std], three values each, on [0, 1] pixels (torchvision: IMAGENET_MEAN/STD). A
    fixed 1x1 depthwise conv with bias, `x = a_c u + b_c`, `a_c = 128 / (255 std_c)`,
    `b_c = (128 / 255 - mean_c) / std_c`: exact in float and, being first, before any zero padding
    (folding it into the first conv would be wrong on the padded border). The input stays our
    Preprocess, so an int8 input still holds every pixel value; the layer's per-channel 8-bit weight
    is its own scale, exact.
    """
    mean, std = (np.asarray(v, np.float64).reshape(3) for v in mean_std)
    scale = 128.0 / (255.0 * std)
    offset = (128.0 / 255.0 - mean) / std
    return layers.DepthwiseConv2D(
        1, use_bias=True, trainable=False, name="torch_normalize",
        depthwise_initializer=keras.initializers.Constant(scale.reshape(1, 1, 3, 1).tolist()),
        bias_initializer=keras.initializers.Constant(offset.tolist()))(inputs)


def torch_input(inputs, torch_normalize_arg):
    """The graph's input after the optional torch normalisation (see `torch_normalize`)."""
    return torch_normalize(inputs, torch_normalize_arg) if torch_normalize_arg else inputs


def static_same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'same' padding (before, after) for a side of `size`: what efficientnet_pytorch's
    Conv2dStaticSamePadding computes for its build-time image size."""
    out = -(-size // stride)
    pad = max((out - 1) * stride + kernel - size, 0)
    return pad // 2, pad - pad // 2


def torch_max_pool(x, name: str):
    """torch's MaxPool2d(3, 2, padding=1) (pads with -inf). TF's 'same' pads an even side only after,
    torch both sides; replicating the edge row/column equals -inf padding for a max. Cropping2D +
    Concatenate: plain slicing ops the converter and the Edge TPU take."""
    height, width = int(x.shape[1]), int(x.shape[2])
    rows = [layers.Cropping2D(((0, height - 1), (0, 0)), name=name + "_top")(x), x]
    if height % 2:
        rows.append(layers.Cropping2D(((height - 1, 0), (0, 0)), name=name + "_bottom")(x))
    x = layers.Concatenate(axis=1, name=name + "_rows")(rows)
    cols = [layers.Cropping2D(((0, 0), (0, width - 1)), name=name + "_left")(x), x]
    if width % 2:
        cols.append(layers.Cropping2D(((0, 0), (width - 1, 0)), name=name + "_right")(x))
    x = layers.Concatenate(axis=2, name=name + "_cols")(cols)
    return layers.MaxPooling2D(3, strides=2, padding="valid", name=name)(x)
