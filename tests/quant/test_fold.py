import numpy as np

from tfdefakeq.backbones import build
from tfdefakeq.quant.fold import fold_batchnorm
from tfdefakeq.tfcompat import keras


def _randomize_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape),
                               rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 1.5, var.shape)])


def test_fold_removes_batchnorm_and_keeps_outputs():
    model = build("resnet18", input_shape=(32, 32, 3), width=0.25)
    _randomize_bn(model)
    folded = fold_batchnorm(model)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    assert all(folded.get_layer(l.name).use_bias for l in folded.layers if isinstance(l, keras.layers.Conv2D))
    x = np.random.default_rng(1).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(folded(x).numpy(), model(x, training=False).numpy(), rtol=1e-4, atol=1e-4)


def test_fold_handles_depthwise_convolutions():
    model = build("mobilenet_v2", input_shape=(32, 32, 3), alpha=0.35)
    _randomize_bn(model)
    folded = fold_batchnorm(model)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    x = np.random.default_rng(2).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(folded(x).numpy(), model(x, training=False).numpy(), rtol=1e-3, atol=1e-3)
