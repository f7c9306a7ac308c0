import numpy as np
import pytest

from tfdefakeq.quant.quantizers import LearnedRangeWeightQuantizer, mse_clip


def test_mse_clip_is_never_worse_than_max_abs():
    rng = np.random.default_rng(0)
    w = rng.standard_t(3, size=(3, 3, 16, 8)).astype(np.float32)  # heavy tails: clipping pays off
    clip = mse_clip(w, num_bits=4, per_axis=True)
    assert clip.shape == (8,)
    max_abs = np.abs(w.reshape(-1, 8)).max(axis=0)
    assert np.all(clip <= max_abs + 1e-6) and np.any(clip < max_abs)

    def mse(m):
        step = m / 7
        return ((np.clip(np.round(w / step), -7, 7) * step - w) ** 2).mean(axis=(0, 1, 2))

    assert np.all(mse(clip) <= mse(max_abs) + 1e-9)


def test_per_tensor_clip_is_a_scalar():
    w = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
    assert np.ndim(mse_clip(w, 8, per_axis=False)) == 0


def test_bits_are_validated():
    with pytest.raises(ValueError, match="num_bits"):
        LearnedRangeWeightQuantizer(num_bits=1)


def test_quantizer_output_lies_on_the_learned_grid():
    from tfdefakeq.core.tfcompat import tf

    q = LearnedRangeWeightQuantizer(num_bits=4, per_axis=True)
    w = tf.constant(np.random.default_rng(0).normal(size=(3, 3, 4, 2)).astype(np.float32))
    m = tf.constant([0.7, 1.4])
    out = q(w, training=False, weights={"range_var": m}).numpy()
    steps = out / (m.numpy() / 7)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
    assert np.abs(steps).max() <= 7 + 1e-4


def test_quantizer_variables_names_every_trainable_quantizer_variable_and_no_layer_weight():
    from tfdefakeq.core.tfcompat import keras
    from tfdefakeq.quant.logquant import ShiftedLogActivationQuantizer
    from tfdefakeq.quant.quantizers import LearnedActivationQuantizer, LSQWeightQuantizer, quantizer_variables

    layer = keras.layers.Dense(4, name="fc")
    layer.build((None, 3))
    LSQWeightQuantizer(4).build((3, 4), "kernel", layer)
    LearnedActivationQuantizer().build(None, "output", layer)
    ShiftedLogActivationQuantizer(4).build(None, "log", layer)
    found = {v.name.split("/")[-1].split(":")[0] for v in quantizer_variables(layer.trainable_weights)}
    assert found == {"kernel_step", "output_min", "output_max", "log_log_offset", "log_log_top"}
