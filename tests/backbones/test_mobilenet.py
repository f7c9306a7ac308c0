import numpy as np

from tfdefakeq.backbones import build
from tfdefakeq.core.tfcompat import keras


def test_mobilenet_v2_loads_keras_applications_weights(tmp_path):
    """keras.applications MobileNetV2 (random weights, offline) -> saved -> loaded into ours by name
    -> identical outputs on the same input."""
    reference = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10,
                                               classifier_activation=None)
    path = tmp_path / "reference.h5"
    reference.save_weights(path)
    ours = build("mobilenet_v2", input_shape=(96, 96, 3), num_classes=10, alpha=0.35)
    ours.load_weights(path, by_name=True, skip_mismatch=False)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    ref_logits = reference(x, training=False).numpy()
    our_probs = ours(x, training=False).numpy()  # ours ends in softmax for num_classes > 1
    ref_probs = np.exp(ref_logits - ref_logits.max(axis=1, keepdims=True))
    ref_probs /= ref_probs.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(our_probs, ref_probs, rtol=1e-4, atol=1e-6)
