"""tfdefakeq.diagnose: per-layer Keras-vs-TFLite parity of a small tfmot_int8 model (conv-BN-ReLU,
residual Add, global pooling, Dense) and of a copy of its .tflite with one corrupted weight."""

import numpy as np
import pytest

from tests.support import random_images, set_batchnorm_statistics_like_trained


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from tfdefakeq.engine.export import to_tflite
    from tfdefakeq.core.manifest import Preprocess
    from tfdefakeq.quant import quantize
    from tfdefakeq.core.tfcompat import keras

    keras.utils.set_random_seed(1)
    L = keras.layers
    inputs = keras.Input((32, 32, 3), name="image")
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    y = L.Conv2D(8, 3, padding="same", use_bias=False, name="block_conv")(x)
    y = L.BatchNormalization(name="block_bn")(y)
    x = L.ReLU(name="block_out")(L.Add(name="block_add")([x, y]))
    x = L.GlobalAveragePooling2D(name="pool")(x)
    outputs = L.Dense(1, name="logit")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    set_batchnorm_statistics_like_trained(model, rng, spread=0.2)  # as after training
    images, _ = random_images(8, 32)
    x = Preprocess().apply(images)
    qat = quantize(model, "tfmot_int8", x)
    path = tmp_path_factory.mktemp("diag") / "tiny_int8.tflite"
    path.write_bytes(to_tflite(qat, "int8", x))
    return qat, path, images


def test_every_quantized_activation_matches_one_tflite_tensor(exported):
    from tfdefakeq.engine.parity import COLUMNS, layer_parity

    qat, path, images = exported
    table = layer_parity(qat, path, images)
    assert list(table.columns) == COLUMNS
    layers = table["keras_layer"].tolist()
    # the input, each quantized activation, in graph order, ending at the logit
    entry = layers[0]  # tfmot's input QuantizeLayer: "quantize_layer[_N]" (Keras numbers names per session)
    assert entry.startswith("quantize_layer") and layers[-1] == "logit"
    for name in ("stem_relu", "block_out", "logit"):
        assert name in layers
    assert (table["match"] != "none").all(), table[table["match"] == "none"]
    assert table["tflite_tensor"].is_unique
    ops = dict(zip(table["keras_layer"], table["op"]))
    assert ops[entry] == "INPUT" and ops["stem_relu"] == "CONV_2D" and ops["logit"] == "FULLY_CONNECTED"
    # a healthy export: rounding-level differences only; TFLite's scales are Keras' FakeQuant scales
    assert (table["max_lsb"] <= 2.0 + 1e-3).all(), table
    assert (table["mean_lsb"] < 0.2).all() and (table["share_differ"] < 0.2).all()  # the logit: 1 value per image
    own = table["keras_scale"].notna()
    np.testing.assert_allclose(table.loc[own, "scale"], table.loc[own, "keras_scale"], rtol=1e-4)
    # the error a layer introduces is within one LSB (the rest is inherited), off only at rounding ties
    assert (table["local_max_lsb"].fillna(0) <= 1.0 + 1e-3).all()
    beyond = table.set_index("keras_layer")["local_share_beyond_ties"].fillna(0)
    assert (beyond.drop("logit") == 0).all(), table  # every local difference inside the net is a rounding tie
    # the logit (one value per image, matched by value): measured one of the 8 off beyond a tie, no more
    assert beyond["logit"] <= 1 / len(images), table


def test_a_corrupted_weight_shows_at_exactly_its_layer(exported, tmp_path):
    from tfdefakeq.engine.parity import first_divergence, layer_parity
    from tfdefakeq.runtime.unpack import schema_module, serialize_model

    qat, path, images = exported
    healthy = layer_parity(qat, path, images, local=False).set_index("keras_layer")
    # block_bn is the int8 output of the CONV_2D the converter made of block_conv + block_bn
    op_index = int(healthy.loc["block_bn", "op_index"])
    schema = schema_module()
    data = path.read_bytes()
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    graph = model.subgraphs[0]
    conv = graph.operators[op_index]
    assert model.operatorCodes[conv.opcodeIndex].builtinCode == schema.BuiltinOperator.CONV_2D
    buffer = model.buffers[graph.tensors[conv.inputs[1]].buffer]
    buffer.data = np.array(buffer.data, dtype=np.uint8)  # a writable copy
    weights = buffer.data.view(np.int8)
    weights[0] = -127 if weights[0] > 0 else 127  # one tap of output channel 0, pushed to the far end
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(serialize_model(schema, model, len(data)))

    table = layer_parity(qat, broken, images)
    first = first_divergence(table, lsb=2.0)
    assert first is not None and first["keras_layer"] == "block_bn"
    assert first["max_lsb"] > 10 and first["local_max_lsb"] > 10  # introduced there, not inherited
    # a real error is no rounding tie: (nearly) every wrong output is far from a rounding boundary
    assert first["local_share_differ"] > 0.01
    assert first["local_share_beyond_ties"] >= 0.95 * first["local_share_differ"]
    rows = table.set_index("keras_layer")
    assert rows.loc["stem_relu", "max_lsb"] <= 1.0 + 1e-3  # upstream untouched
    assert rows.loc["block_out", "max_lsb"] > 5  # and it propagates
    assert rows.loc["block_out", "local_max_lsb"] <= 1.0 + 1e-3  # the ADD itself computes right


def test_xnnpack_run_reads_every_tensor_too(exported):
    from tfdefakeq.engine.parity import layer_parity

    qat, path, images = exported
    table = layer_parity(qat, path, images, use_xnnpack=True)
    assert (table["match"] != "none").all()
    assert table["op"].iloc[1] == "CONV_2D"  # op types from the graph, not DELEGATE
    assert (table["max_lsb"] <= 2.0 + 1e-3).all()
    # XNNPACK rounds once, as Keras' FakeQuant does: the only local differences are rounding ties
    assert (table["local_share_beyond_ties"].fillna(0) == 0).all(), table


def test_verdict_separates_ties_from_other_differences():
    """max_share_differ counts every differing output, max_tie_share only the rounding ties; one
    output beyond the ties fails the verdict and names its layer."""
    import pandas as pd

    from tfdefakeq.engine.parity import COLUMNS, per_layer_verdict

    def row(name, share, beyond, max_lsb=1.0):
        return {c: None for c in COLUMNS} | {"keras_layer": name, "match": "name", "local_max_lsb": max_lsb,
                                              "local_share_differ": share, "local_share_beyond_ties": beyond}

    healthy = pd.DataFrame([row("conv1", 0.03, 0.0), row("conv2", 0.001, 0.0, 0.0)], columns=COLUMNS)
    verdict = per_layer_verdict(healthy)
    assert verdict["agrees"] and verdict["first_failing"] is None
    assert verdict["max_share_differ"] == pytest.approx(0.03) and verdict["max_tie_share"] == pytest.approx(0.03)

    faulty = pd.DataFrame([row("conv1", 0.03, 0.0), row("conv2", 0.02, 0.005)], columns=COLUMNS)
    verdict = per_layer_verdict(faulty)
    assert not verdict["agrees"] and verdict["first_failing"] == "conv2"
    assert verdict["max_share_differ"] == pytest.approx(0.03)
    assert verdict["max_tie_share"] == pytest.approx(0.03)  # conv1: all ties; conv2: 0.015 ties
    over = pd.DataFrame([row("conv1", 0.01, 0.0, max_lsb=2.0)], columns=COLUMNS)
    assert per_layer_verdict(over)["first_failing"] == "conv1"


def test_the_table_does_not_depend_on_the_chunk_size(exported):
    """layer_parity reads the images a chunk of batch_size at a time and keeps running statistics
    (memory bounded by the chunk, not the image count): one image at a time, uneven chunks and all
    8 at once give the same table, locally measured columns and rounding ties included."""
    import pandas as pd

    from tfdefakeq.engine.parity import layer_parity

    qat, path, images = exported
    whole = layer_parity(qat, path, images, batch_size=8, use_xnnpack=True)
    assert whole["local_share_differ"].fillna(0).max() > 0  # some differences to count: not a vacuous check
    for batch_size in (1, 3):
        pd.testing.assert_frame_equal(layer_parity(qat, path, images, batch_size=batch_size, use_xnnpack=True), whole,
                                      check_exact=False, rtol=1e-9)


def test_an_input_read_by_several_branches_is_tapped(tmp_path):
    """MesoInception-4's shape: the image feeds several conv branches whose outputs are
    concatenated; tfmot may then call its input QuantizeLayer once per branch, and tapping
    `layer.output` of such a multi-node layer failed with "Graph disconnected"."""
    from tfdefakeq.core.manifest import Preprocess
    from tfdefakeq.core.tfcompat import keras
    from tfdefakeq.engine.export import to_tflite
    from tfdefakeq.engine.parity import layer_parity
    from tfdefakeq.quant import quantize

    keras.utils.set_random_seed(2)
    L = keras.layers
    inputs = keras.Input((32, 32, 3), name="image")
    a = L.Conv2D(4, 1, padding="same", name="branch_a")(inputs)
    b = L.Conv2D(4, 3, padding="same", name="branch_b")(inputs)
    x = L.ReLU(name="joined_relu")(L.Concatenate(name="joined")([a, b]))
    x = L.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, L.Dense(1, name="logit")(x))
    images, _ = random_images(8, 32)
    x = Preprocess().apply(images)
    qat = quantize(model, "tfmot_int8", x)
    path = tmp_path / "branches_int8.tflite"
    path.write_bytes(to_tflite(qat, "int8", x))
    table = layer_parity(qat, path, images)
    layers = table["keras_layer"].tolist()
    assert layers[0].startswith("quantize_layer") and layers[-1] == "logit"
    assert (table["match"] != "none").all(), table[table["match"] == "none"]
    assert (table["local_max_lsb"].fillna(0) <= 1.0 + 1e-3).all(), table


def test_a_file_convert_named_by_index_matches_by_the_names_its_manifest_keeps(exported, tmp_path):
    """convert writes index names (the converter's go to the manifest): the op-by-op table of the written
    file matches the same tensors, by name, as the converter's file; without the manifest it cannot."""
    import shutil

    from tfdefakeq.core.manifest import Manifest, manifest_path
    from tfdefakeq.engine.export import convert_model
    from tfdefakeq.engine.parity import layer_parity
    from tfdefakeq.quant import weight_bits
    from tfdefakeq.runtime.modelinfo import schema_module

    qat, path, images = exported
    columns = ["keras_layer", "tflite_tensor", "op", "op_index", "match"]
    before = layer_parity(qat, path, images, local=False)[columns]
    out = tmp_path / "tiny_int8.tflite"
    written = convert_model(qat, Manifest(backbone="test", input_shape=[32, 32, 3], format="keras", scheme="tfmot_int8",
                                          weight_bits=weight_bits(qat)), "int8", images, out)
    graph = schema_module().ModelT.InitFromPackedBuf(out.read_bytes(), 0).subgraphs[0]
    io = set(graph.inputs) | set(graph.outputs)
    assert [t.name.decode() for i, t in enumerate(graph.tensors) if i not in io] == [str(i) for i in range(len(graph.tensors))
                                                                                      if i not in io]
    assert len(written.tensor_names) == len(graph.tensors) and any("stem_conv" in n for n in written.tensor_names)
    assert written.size_bytes == out.stat().st_size < path.stat().st_size
    after = layer_parity(qat, out, images, local=False)[columns]
    assert (after["match"] == "name").sum() >= 4
    assert after.equals(before), (before, after)

    bare = tmp_path / "bare" / "tiny_int8.tflite"  # the file alone, its manifest left behind
    bare.parent.mkdir()
    shutil.copy(out, bare)
    assert not manifest_path(bare).exists()
    assert not (layer_parity(qat, bare, images, local=False)["match"] == "name").any()
    assert Manifest.load(manifest_path(out)).tensor_names == written.tensor_names
