import numpy as np
import pytest

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


@pytest.mark.zoo  # a QAT + int8 conversion: ~1 CPU-minute, beyond the default suite's share
def test_mobilenet_v3_int8_runs_every_op_on_xnnpack(tmp_path):
    """Hard-swish stays HardSigmoid + Multiply (int8 ADD, MUL, MUL): ai-edge-litert 2.3.0's XNNPACK
    takes those, but not an int8 HARD_SWISH, which a single hard-swish layer becomes (measured at
    224 px, 1 thread: 19 builtin HARD_SWISH ops, 2.9 ms of isolated op time against 0.07 ms for the
    float32 ones, and the whole int8 model 4.1x its float32 one). With BatchNorm statistics from data
    (a trained model's scales), every int8 op is delegated; untrained statistics shrink activations
    until the hard-sigmoid's ADD falls outside XNNPACK's scale-ratio range (benchmarks/backbones.py)."""
    from tfdefakeq.backbones import build
    from tfdefakeq.core.manifest import Preprocess
    from tfdefakeq.engine.export import to_tflite
    from tfdefakeq.engine.training import set_batchnorm_statistics
    from tfdefakeq.quant import quantize
    from tfdefakeq.runtime.latency import profile_model
    from tfdefakeq.runtime.modelinfo import read_model_info
    from tests.support import random_images

    x = Preprocess().apply(random_images(8, 32)[0])
    model = build("mobilenet_v3_small", input_shape=(32, 32, 3), alpha=0.35)
    set_batchnorm_statistics(model, x)
    path = tmp_path / "mnv3_int8.tflite"
    path.write_bytes(to_tflite(quantize(model, "tfmot_int8", x), "int8", x))
    assert "HARD_SWISH" not in read_model_info(path).op_counts
    ops = profile_model(path, warmup=0, runs=1)
    assert [r["op"] for r in ops if not r["delegated"]] == []
