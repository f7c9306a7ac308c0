import numpy as np
import pytest

from tests.support import export_and_compare, random_images
from tfdefakeq.backbones import build
from tfdefakeq.core.errors import UserError
from tfdefakeq.core.manifest import Preprocess
from tfdefakeq.quant import quantize, weight_bits


@pytest.fixture(scope="module")
def data():
    return random_images(32, 32)


@pytest.fixture(scope="module")
def images(data):
    return data[0]


def _int4_scales(path):
    """Quantization scales of every INT4 tensor stored in the flatbuffer, and their count."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    tensors = [t for g in model.subgraphs for t in g.tensors if t.type == schema.TensorType.INT4]
    return [np.asarray(t.quantization.scale) for t in tensors], [np.asarray(t.quantization.zeroPoint) for t in tensors]


def test_w4a8_plan_keeps_first_conv_and_classifier_at_8_bits(images):
    model = build("resnet18", input_shape=(32, 32, 3), width=0.25)
    bits = weight_bits(quantize(model, "w4a8", Preprocess().apply(images)))
    assert bits["conv1_conv"] == 8 and bits["predictions"] == 8
    body = [b for name, b in bits.items() if name not in ("conv1_conv", "predictions")]
    assert body and set(body) == {4}


def test_w4a8_plan_keeps_the_whole_stem_at_8_bits(images):
    model = build("resnet18", input_shape=(32, 32, 3), width=0.25, highpass=True)
    bits = weight_bits(quantize(model, "w4a8", Preprocess().apply(images)))
    assert bits["highpass"] == bits["conv1_conv"] == bits["predictions"] == 8
    body = [b for name, b in bits.items() if name not in ("highpass", "conv1_conv", "predictions")]
    assert body and set(body) == {4}


def test_calibration_makes_a_fresh_qat_model_track_the_float_model(images):
    model = build("resnet18", input_shape=(32, 32, 3), width=0.25)
    x = Preprocess().apply(images)
    reference = model(x, training=False).numpy().ravel()
    calibrated = quantize(model, "tfmot_int8", x)(x, training=False).numpy().ravel()
    assert np.corrcoef(reference, calibrated)[0, 1] > 0.99


def test_unknown_scheme_is_a_user_error():
    with pytest.raises(UserError, match="unknown quantization scheme 'w5a8'"):
        quantize(build("resnet18", input_shape=(32, 32, 3), width=0.25), "w5a8")


def test_w4a8_stores_int4_tensors_with_the_learned_scales(tmp_path, data):
    from tfdefakeq.quant.calibrate import _wrappers
    from tfdefakeq.quant.quantizers import LearnedRangeWeightQuantizer

    model = build("resnet18", input_shape=(32, 32, 3), width=0.25, highpass=True)
    manifest, path, qat = export_and_compare(model, "w4a8", "int4", tmp_path, *data)
    assert manifest.metrics["parity"]["max_diff_lsb"] <= 2
    assert "FLOAT32" not in manifest.metrics["weight_bytes_by_type"]
    scales, zero_points = _int4_scales(path)
    assert len(scales) == sum(1 for b in manifest.weight_bits.values() if b == 4)
    assert all(np.all(z == 0) for z in zero_points)  # symmetric
    # the stored scales are exactly the trained ranges / 7: the bits learned are the bits stored
    learned = [np.abs(qvars["range_var"].numpy()) / 7
               for wrapper in _wrappers(qat) for _, q, qvars in wrapper._weight_vars
               if isinstance(q, LearnedRangeWeightQuantizer) and q.num_bits == 4]
    assert len(learned) == len(scales)
    for r in learned:
        assert any(s.shape == r.shape and np.allclose(s, r, rtol=1e-5) for s in scales)


def test_int4_file_is_much_smaller_than_int8(tmp_path, data):
    from tfdefakeq.runtime.modelinfo import read_model_info

    model = build("resnet18", input_shape=(32, 32, 3), width=0.25, highpass=True)
    int8, int8_path, _ = export_and_compare(model, "tfmot_int8", "int8", tmp_path, *data, float_steps=400)
    int4, _, _ = export_and_compare(model, "w4a8", "int4", tmp_path, *data, float_steps=0)
    assert int4.size_bytes <= 0.6 * int8.size_bytes
    # full integer: int8 in and out, no float weights, no (de)quantize ops inside the graph
    info = read_model_info(int8_path)
    assert info.input_types == info.output_types == ["INT8"]
    assert "FLOAT32" not in info.weight_bytes
    assert not {"QUANTIZE", "DEQUANTIZE"} & set(info.op_counts)


def test_w4a8_plan_for_the_zoo_keeps_depthwise_fixed_and_classifier_convs_at_8_bits():
    from tfdefakeq.quant.schemes import plan_weight_bits

    v3 = build("mobilenet_v3_small", input_shape=(32, 32, 3), alpha=0.35)
    plan = plan_weight_bits(v3, 4)
    assert plan["Conv"] == plan["Logits"] == 8  # stem and the 1x1-conv classifier
    assert all(plan[l.name] == 8 for l in v3.layers if type(l).__name__ == "DepthwiseConv2D")
    assert plan["expanded_conv_1/expand"] == plan["expanded_conv/squeeze_excite/Conv"] == 4
    cqb = plan_weight_bits(build("cqb_resnet18", input_shape=(32, 32, 3), width=0.125), 4)
    assert cqb["cqb2_block1_down_shortcut"] == 8 and cqb["cqb2_block1_down_conv"] == 4  # fixed shortcut vs low-bit conv
    assert cqb["cqb3_block1_spatial_shortcut"] == 8 and cqb["cqb3_block1_spatial_conv"] == 4
    xcp = plan_weight_bits(build("xception", input_shape=(32, 32, 3), width=0.125, middle_blocks=1), 4)
    assert xcp["block2_sepconv1_depthwise"] == 8 and xcp["block2_sepconv1"] == 4  # separable conv halves
