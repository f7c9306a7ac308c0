import numpy as np

from tfdefakeq.backbones import build
from tfdefakeq.quant.fold import fold_batchnorm
from tfdefakeq.core.tfcompat import keras


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


def test_consumers_counts_every_call_of_a_shared_layer():
    """tfmot calls MesoInception-4's input QuantizeLayer once per reader: bias snapping reads the
    graph through `consumers`, which must list every reader instead of refusing the layer."""
    from tfdefakeq.quant.fold import consumers

    L = keras.layers
    inputs = keras.Input((8, 8, 3))
    scale = L.Rescaling(0.5, name="shared")
    a = L.Conv2D(2, 1, name="a")(scale(inputs))
    b = L.Conv2D(2, 1, name="b")(scale(inputs))
    model = keras.Model(inputs, L.Add(name="sum")([a, b]))
    readers = consumers(model)
    assert sorted(readers["shared"]) == ["a", "b"] and readers["a"] == ["sum"] and readers["sum"] == []
