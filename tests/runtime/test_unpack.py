"""INT4 (and INT2) weights unpacked to INT8 at load: same outputs, int8 kernels, file untouched."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tests.support import random_images
from tfdefakeq.core.errors import UserError
from tfdefakeq.runtime.interpreter import TFLiteModel
from tfdefakeq.runtime.loader import load_model
from tfdefakeq.runtime.modelinfo import model_info_from_bytes, read_model_info
from tfdefakeq.runtime.unpack import (
    INT2,
    INT4,
    UnpackError,
    unpack_packed_weights,
    pack_values,
    packed_tensor_count,
    unpack_model,
    unpack_values,
)

SHIPPED = Path(__file__).resolve().parents[2] / "tflite_models"
INT4_MODEL = SHIPPED / "resnet18_64_int4.tflite"
INT8_MODEL = SHIPPED / "resnet18_64_int8.tflite"


def raw_outputs(model: TFLiteModel, images, preprocess) -> np.ndarray:
    return np.array([int(model.invoke_raw(model.quantize_input(preprocess.apply(img[None]))).reshape(-1)[0])
                     for img in images])


@pytest.fixture(scope="module")
def photos():
    """Structured 64 px images whose int8 outputs spread over the range (noise saturates them)."""
    images, _ = random_images(24, 64, seed=3)
    return (images // 2 + 64).astype(np.uint8)


def test_nibbles_low_first_and_sign_extended():
    assert unpack_values(np.array([0x3F], np.uint8), 2).tolist() == [-1, 3]
    assert unpack_values(np.array([0x87], np.uint8), 2).tolist() == [7, -8]
    values = np.arange(-8, 8)
    np.testing.assert_array_equal(unpack_values(pack_values(values), 16), values)
    odd = np.array([-8, 7, -1, 0, 5])  # an odd count leaves the last high nibble unused
    assert len(pack_values(odd)) == 3
    np.testing.assert_array_equal(unpack_values(pack_values(odd), 5), odd)


def test_two_bit_values_four_per_byte():
    values = np.array([-2, -1, 0, 1, 1, -2])
    packed = pack_values(values, bits=2)
    assert len(packed) == 2 and packed[0] == (0b10 | 0b11 << 2 | 0b00 << 4 | 0b01 << 6)
    np.testing.assert_array_equal(unpack_values(packed, 6, bits=2), values)
    with pytest.raises(ValueError, match="2-bit range"):
        pack_values([2], bits=2)
    with pytest.raises(UnpackError, match="cannot hold"):
        unpack_values(np.zeros(3, np.uint8), 16, bits=4)


def test_unpacking_matches_the_interpreters_own_reading():
    """The interpreter shows a constant INT4 tensor unpacked: our order must be the same."""
    from ai_edge_litert import schema_py_generated as schema

    data = INT4_MODEL.read_bytes()
    model_t = schema.ModelT.InitFromPackedBuf(data, 0)
    graph = model_t.subgraphs[0]
    model = TFLiteModel(INT4_MODEL, unpack_packed=False)
    checked = 0
    for index, tensor in enumerate(graph.tensors):
        if tensor.type == INT4:
            ours = unpack_values(model_t.buffers[tensor.buffer].data, int(np.prod(tensor.shape))).reshape(tensor.shape)
            np.testing.assert_array_equal(model.interpreter.get_tensor(index), ours)
            checked += 1
    assert checked == 19


def test_unpacked_model_is_int8_with_the_same_scales():
    data = INT4_MODEL.read_bytes()
    out, report = unpack_model(data)
    assert report.tensors == 19 and not report.skipped
    assert report.unpacked_bytes == 2 * report.packed_bytes
    before, after = model_info_from_bytes(data), model_info_from_bytes(out)
    assert before.tensor_types["INT4"] == 19 and "INT4" not in after.tensor_types
    assert after.weight_bytes["INT8"] == before.weight_bytes["INT8"] + report.unpacked_bytes
    assert after.op_counts == before.op_counts and after.macs == before.macs
    assert packed_tensor_count(out) == 0 and packed_tensor_count(data) == 19
    from ai_edge_litert import schema_py_generated as schema

    a, b = schema.ModelT.InitFromPackedBuf(data, 0), schema.ModelT.InitFromPackedBuf(out, 0)
    for ta, tb in zip(a.subgraphs[0].tensors, b.subgraphs[0].tensors):
        assert ta.name == tb.name and list(ta.shape) == list(tb.shape)
        if ta.quantization is not None and ta.quantization.scale is not None:
            np.testing.assert_array_equal(ta.quantization.scale, tb.quantization.scale)
            np.testing.assert_array_equal(ta.quantization.zeroPoint, tb.quantization.zeroPoint)
    # constant data starts on 16-byte boundaries, as the converter writes it
    root = schema.Model.GetRootAsModel(out, 0)
    for i in range(root.BuffersLength()):
        buf = root.Buffers(i)
        if buf.DataLength():
            assert buf._tab.Vector(buf._tab.Offset(4)) % 16 == 0


def test_outputs_bit_identical_on_the_same_kernels(photos):
    """XNNPACK off: packed and unpacked models run the same builtin int8 kernels -> identical bits."""
    packed, manifest = load_model(INT4_MODEL, use_xnnpack=False, unpack_packed=False)
    unpacked, _ = load_model(INT4_MODEL, use_xnnpack=False, unpack_packed=True)
    a = raw_outputs(packed, photos, manifest.preprocess)
    b = raw_outputs(unpacked, photos, manifest.preprocess)
    assert a.max() - a.min() > 20  # real spread, not saturated outputs
    np.testing.assert_array_equal(a, b)


def test_default_load_unpacks_and_keeps_the_file(photos, tmp_path):
    path = tmp_path / "det_int4.tflite"
    path.write_bytes(INT4_MODEL.read_bytes())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    model = TFLiteModel(path)
    assert model.unpack_packed and model.unpacked_tensors == 19 and model.unpack_ms > 0
    assert model.size_bytes == path.stat().st_size < len(unpack_packed_weights(path.read_bytes()))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det_int4.tflite"]  # nothing written beside it
    assert "unpacked_tensors=19" in repr(model)
    # XNNPACK on: the unpacked model runs XNNPACK's int8 kernels, whose rounding differs from the
    # builtin kernels by at most a couple of LSB (the int8 model shows the same)
    packed = TFLiteModel(path, unpack_packed=False)
    assert packed.unpacked_tensors == 0
    from tfdefakeq.core.manifest import Preprocess

    diff = np.abs(raw_outputs(model, photos, Preprocess()) - raw_outputs(packed, photos, Preprocess()))
    assert diff.max() <= 2


def test_model_without_packed_weights_runs_the_bytes_that_were_checked():
    data = INT8_MODEL.read_bytes()
    out, report = unpack_model(data)
    assert out == data and report.tensors == 0
    model = TFLiteModel(INT8_MODEL)
    assert model.unpacked_tensors == 0 and model.unpack_ms == 0 and model._content == data  # not re-read from the path


def test_int2_weights_unpack_like_int8(tiny_models, photos):
    """A 2-bit copy of an int8 conv (values clipped to [-2, 1]) runs like the int8 model holding them."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    from tfdefakeq.core.manifest import Manifest, manifest_path

    model_t = schema.ModelT.InitFromPackedBuf(tiny_models["int8"].read_bytes(), 0)
    graph = model_t.subgraphs[0]
    conv = next(op for op in graph.operators
                if model_t.operatorCodes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.CONV_2D)
    weights = graph.tensors[conv.inputs[1]]
    values = np.clip(model_t.buffers[weights.buffer].data.view(np.int8), -2, 1).astype(np.int8)

    def save(name, tensor_type, data):
        weights.type = tensor_type
        model_t.buffers[weights.buffer].data = data
        builder = flatbuffers.Builder(1024)
        builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
        path = tiny_models["int8"].parent / name
        path.write_bytes(bytes(builder.Output()))
        Manifest.load(manifest_path(tiny_models["int8"])).save(manifest_path(path))
        return path

    int8_path = save("tiny_clipped_int8.tflite", 9, values.view(np.uint8))
    int2_path = save("tiny_clipped_int2.tflite", INT2, pack_values(values, bits=2))
    assert read_model_info(int2_path).tensor_types["INT2"] == 1
    assert int2_path.stat().st_size < int8_path.stat().st_size
    reference, manifest = load_model(int8_path)
    unpacked, _ = load_model(int2_path)
    assert unpacked.unpacked_tensors == 1
    images = tiny_models["images"]
    np.testing.assert_array_equal(raw_outputs(unpacked, images, manifest.preprocess),
                                  raw_outputs(reference, images, manifest.preprocess))


def test_damaged_flatbuffers_are_user_errors(tmp_path):
    with pytest.raises(UnpackError, match="not a TFLite flatbuffer"):
        unpack_model(b"0123456789abcdef")
    data = INT4_MODEL.read_bytes()
    with pytest.raises(UserError):
        unpack_model(data[:4] + b"TFL3" + data[8:5000])
    path = tmp_path / "cut.tflite"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError) as info:
        TFLiteModel(path)
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize("model_path", [INT8_MODEL, INT4_MODEL], ids=["int8", "int4"])
def test_index_names_change_only_the_names_and_the_size(model_path, photos, tmp_path):
    """shorten_tensor_names: every tensor but the graph's input and output named by its index, all else
    (shapes, scales, buffers, ops) as it was, the same outputs bit for bit, the converter's names returned."""
    from tfdefakeq.core.manifest import Preprocess
    from tfdefakeq.runtime.modelinfo import schema_module
    from tfdefakeq.runtime.unpack import shorten_tensor_names

    data = model_path.read_bytes()
    short, names = shorten_tensor_names(data)
    schema = schema_module()
    old, new = (schema.ModelT.InitFromPackedBuf(b, 0) for b in (data, short))
    graph = old.subgraphs[0]
    io = set(graph.inputs) | set(graph.outputs)
    assert names == [t.name.decode() for t in graph.tensors]
    assert [t.name.decode() for t in new.subgraphs[0].tensors] == [names[i] if i in io else str(i) for i in range(len(names))]
    for a, b in zip(graph.tensors, new.subgraphs[0].tensors):
        assert (a.type, a.buffer, list(a.shape)) == (b.type, b.buffer, list(b.shape))
        assert (a.quantization is None) == (b.quantization is None)
        if a.quantization is not None:
            assert np.array_equal(a.quantization.scale, b.quantization.scale)
    assert all(np.array_equal(a.data if a.data is not None else [], b.data if b.data is not None else [])
               for a, b in zip(old.buffers, new.buffers))
    assert [(o.opcodeIndex, list(o.inputs), list(o.outputs)) for o in graph.operators] == \
        [(o.opcodeIndex, list(o.inputs), list(o.outputs)) for o in new.subgraphs[0].operators]
    assert len(short) < len(data) - 4 * len(names)  # the converter's names take far more than 4 bytes each

    path = tmp_path / "short.tflite"
    path.write_bytes(short)
    for xnnpack in (False, True):
        before = raw_outputs(TFLiteModel(model_path, use_xnnpack=xnnpack), photos, Preprocess())
        np.testing.assert_array_equal(raw_outputs(TFLiteModel(path, use_xnnpack=xnnpack), photos, Preprocess()), before)
    assert shorten_tensor_names(short)[0] == short  # already by index: the same bytes
