"""The detector's output quantizer (quantizers.LogitQuantizer): a float model whose logits all have
one sign must not be locked into a constant output by QAT (ported ResNet-18, byo.md: every image
scored the calibrated upper bound 1.914)."""

import numpy as np

from tfdefakeq.core.tfcompat import keras, tf
from tfdefakeq.quant.quantizers import LOGIT_MARGIN, LogitQuantizer


def _one_sign_model():
    """A tiny detector whose float logits are all positive (the head's bias dominates)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, name="stem")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, name="body")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, name="head", bias_initializer=keras.initializers.Constant(3.0))(x)
    images = np.random.default_rng(0).uniform(-1, 1, (16, 16, 16, 3)).astype(np.float32)
    return keras.Model(inputs, outputs), images


def _output_range(qat):
    qvars = qat.get_layer("quant_head")._output_quantizer_vars
    return float(qvars["min_var"].numpy()), float(qvars["max_var"].numpy())


def test_the_logit_range_is_symmetric_around_zero_with_margin():
    from tfdefakeq.quant import quantize

    model, images = _one_sign_model()
    logits = model(images).numpy()
    assert logits.min() > 0  # the case: one sign only
    qat = quantize(model, "lsq_w4a8", images)
    assert isinstance(qat.get_layer("quant_head")._output_quantizers[0], LogitQuantizer)
    lo, hi = _output_range(qat)
    assert lo == -hi  # a negative logit (a "real" verdict) is representable
    assert np.isclose(hi, LOGIT_MARGIN * np.abs(qat(images).numpy()).max(), rtol=0.05)


def test_a_clipped_logit_still_gets_gradient():
    q = LogitQuantizer()
    layer = keras.layers.Layer()
    qvars = q.build((None, 1), "logit", layer)
    qvars["min_var"].assign(-1.0)
    qvars["max_var"].assign(1.0)
    x = tf.constant([[3.0], [-2.0], [0.5]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = q(x, training=True, weights=qvars)
    assert np.allclose(tape.gradient(out, x).numpy(), 1.0)  # FakeQuant's own gradient is 0 for 3 and -2
    np.testing.assert_allclose(out.numpy(), q(x, training=False, weights=qvars).numpy())  # same value: same op converted
    assert out.numpy().max() <= 1.01  # clipped to the range (FakeQuant nudges it onto the grid)


def test_a_model_pushed_past_the_logit_range_still_gets_the_loss_gradient():
    """The trap of the ported ResNet-18: once every logit is past the range, FakeQuant gave the
    network no gradient and the output stayed one constant. Here every logit is pushed past the
    top of the range; the loss must still reach the network."""
    from tfdefakeq.quant import quantize

    model, images = _one_sign_model()
    qat = quantize(model, "lsq_w4a8", images)
    head = qat.get_layer("quant_head").layer
    logits = qat(images, training=False).numpy()
    head.bias.assign(head.bias + (_output_range(qat)[1] - logits.min() + 0.5))  # every logit 0.5 past the top
    assert np.ptp(qat(images, training=False).numpy()) == 0  # all clipped: one constant output
    labels = (images[..., 0].mean(axis=(1, 2)) > 0).astype(np.float32)[:, None]
    loss = keras.losses.BinaryCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        value = loss(labels, qat(images, training=True))
    assert float(tf.abs(tape.gradient(value, head.bias))[0]) > 0  # 0 before LogitQuantizer
