"""The adaptive plan's file-size estimate against the .tflite convert's engine writes from that plan
(issue 13): within ESTIMATE_TOLERANCE on a model made mostly of unweighted ops and small layers
(MobileNetV2 at width 0.35 at 32 px: 64 ops, per-tensor and per-channel layers mixed) and on a
ResNet with salient channels split off. The plans are given
(every bit width, both scale kinds, splits) so no sensitivity is measured: two conversions a case."""

import numpy as np
import pytest

# The estimate measures the bytes no option changes (adaptive.measure_graph_bytes) and prices the
# rest; measured within 0.2% on these models (the former fixed guesses: -7.5% to +18%).
ESTIMATE_TOLERANCE = 0.01


def _mixed_plan(model, per_tensor_every: int, split_every: int):
    """A given plan for float `model` using every option: free layers cycle through 2/3/4/8 bits,
    every `per_tensor_every`-th per-tensor candidate keeps one kernel scale, every `split_every`-th
    other low-bit conv splits its first eighth of input channels off (0: none)."""
    from tfdefakeq.quant.adaptive import _weighted_layers, per_tensor_candidates
    from tfdefakeq.quant.fold import fold_batchnorm

    folded, default, sizes, depthwise = _weighted_layers(fold_batchnorm(model), 4)
    free = [n for n, b in default.items() if b != 8 or n in depthwise]
    bits = {**default, **{n: (2, 3, 4, 8)[i % 4] for i, n in enumerate(free)}}
    scalar = per_tensor_candidates(folded, free, sizes)[::per_tensor_every]
    convs = [n for n in free if bits[n] < 8 and n not in scalar and type(folded.get_layer(n)).__name__ == "Conv2D"
             and folded.get_layer(n).input_shape[-1] >= 8]
    split = {n: list(range(folded.get_layer(n).input_shape[-1] // 8)) for n in convs[::split_every]} if split_every else {}
    return bits, scalar, split


def _written_and_planned(model, bits, scalar, split):
    """(written .tflite bytes, the plan's estimate): the plan made with the measured graph bytes,
    its QAT model converted as convert does (int4, 2-bit weights as INT2, tensors named by index;
    untrained: training changes the weights, not the file's layout)."""
    from tfdefakeq.engine.export import as_written, to_tflite
    from tfdefakeq.quant import calibrate
    from tfdefakeq.quant.adaptive import nonzero_biases, plan_adaptive
    from tfdefakeq.quant.schemes import apply_folded_scheme

    plan = plan_adaptive(model, None, bit_plan=bits, per_tensor=scalar, salient_channels=split, salient_ratio=0,
                         measure_graph=True)
    assert plan.per_tensor == sorted(scalar) and plan.salient_channels == split
    qat = apply_folded_scheme(model, plan.weight_bits, lsq=True, salient_channels=plan.salient_channels,
                              per_tensor=plan.per_tensor)
    calibrate.init_weight_ranges(qat)
    nonzero_biases(qat, seed=1)  # as any trained model has (a fresh BatchNorm folds to zero biases)
    flatbuffer = as_written(to_tflite(qat, "int4", np.zeros((1, *qat.input_shape[1:]), np.float32)), "int4")
    return len(flatbuffer), plan.budget["planned_bytes"]


@pytest.mark.parametrize("case", ["mobilenet_v2_a035", "resnet18_w025"])
def test_the_estimate_is_within_tolerance_of_the_written_file(case):
    from tfdefakeq.backbones.registry import build

    if case == "mobilenet_v2_a035":  # many unweighted ops, half the per-tensor candidates per channel
        model = build("mobilenet_v2", (32, 32, 3), alpha=0.35)
        bits, scalar, split = _mixed_plan(model, per_tensor_every=2, split_every=0)
        assert len(scalar) > 10
    else:
        model = build("resnet18", (32, 32, 3), width=0.25)
        # the converter stores identical constants once: the GATHER index lists and zero bias of two
        # splits of the same shapes are one buffer, priced twice (+624 bytes a repeated split, 1.5%
        # of this 0.44 MB file with all 11 split; on the files that matter, 0.1%): 4 splits here
        bits, scalar, split = _mixed_plan(model, per_tensor_every=3, split_every=3)
        assert len(split) >= 3
    assert set(bits.values()) == {2, 3, 4, 8}
    written, planned = _written_and_planned(model, bits, scalar, split)
    assert abs(planned - written) <= ESTIMATE_TOLERANCE * written, (case, planned, written, (planned - written) / written)
