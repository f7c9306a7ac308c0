import numpy as np
import pytest


def test_set_batchnorm_statistics_takes_the_images_statistics():
    from tfdefakeq.core.tfcompat import keras
    from tfdefakeq.engine.training import set_batchnorm_statistics

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.999, name="bn")(conv)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(x)))
    images = np.random.default_rng(0).normal(2.0, 3.0, (8, 6, 6, 2)).astype(np.float32)
    trainable = [w.copy() for w in model.get_weights()[:2]]  # conv kernel and bias
    assert set_batchnorm_statistics(model, images) == 1
    features = keras.Model(inputs, conv)(images).numpy()
    bn = model.get_layer("bn")
    assert bn.momentum == 0.999
    np.testing.assert_allclose(bn.moving_mean.numpy(), features.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), features.var(axis=(0, 1, 2), ddof=1), rtol=1e-3)  # Keras keeps the unbiased variance
    for before, after in zip(trainable, model.get_weights()[:2]):
        np.testing.assert_array_equal(before, after)
    # in inference mode the normalised features now have zero mean and unit variance
    normalised = keras.Model(inputs, x)(images, training=False).numpy()
    assert normalised.mean() == pytest.approx(0.0, abs=1e-3) and normalised.var() == pytest.approx(1.0, rel=1e-2)
