"""The adaptive bidirectional plan (after DeFakeQ): which bits each layer gets (horizontal) and
which input channels of each low-bit conv stay at 8 bits (vertical), from calibration data.

    plan = plan_adaptive(model, calib_images, budget=3.0)          # avg storage bits per weight
    qat = apply_folded_scheme(model, plan.weight_bits, lsq=True, salient_channels=plan.salient_channels)

`tfdefakeq.quant.quantize(model, "adaptive", calib_images, budget=...)` does both.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from tfdefakeq.core.errors import UserError
from tfdefakeq.quant.horizontal import (
    QuantPlan,
    average_bits,
    frontier,
    is_per_tensor,
    MODEL_OVERHEAD_BYTES,
    layer_overhead_bits,
    layer_sensitivity,
    parse_option,
    solve_allocation,
)
from tfdefakeq.quant.grids import storage_bits_per_weight
from tfdefakeq.quant.vertical import channel_saliency, pick_salient, random_salient
from tfdefakeq.core.tfcompat import keras

# The file-size estimate measures the bytes no option changes (measure_graph_bytes) and prices
# the rest: within -0.01%..+0.15% of the written .tflite on MobileNetV2 a0.35 and ResNet-18 plans
# at 32 px (tests/quant/test_size_estimate.py; the former fixed guesses: -7.5% .. +18%). It errs
# high where several split convs have the same shapes (the converter stores their identical
# GATHER index lists and zero biases once). A byte budget is still planned this much below the limit.
BYTES_RESERVE = 0.02
# The vertical split is offered by default at 1/32 of each low-bit conv's input channels (DeFakeQ
# restores "a small number"; ~0.13 bits/weight at 4 bits); the allocator takes it where it pays.
# Measured (benchmarks/results/quant_methods_vertical.md at 5c60173, ResNet-18, 3 seeds, held-out families,
# against the same budget without the offer): fp32/13, taken in 1 layer per seed, +1.30 pp held-out
# AP (CI [+0.62, +1.93]); fp32/10.7, taken in 0-2 layers, -0.50 pp (CI [-0.92, -0.11], inside the
# seed spread). `--salient-ratio 0` turns it off.
DEFAULT_SALIENT_RATIO = 1 / 32
# A conv is offered a per-tensor scale (options "8t", "4t", ...) when that saves at least this share
# of its bytes at 2 bits per channel: MobileNetV2's depthwise layers (9 weights a channel) save
# ~80%, its narrow 1x1 convs 40-75%, a ResNet 3x3 conv with 256 inputs 4% (not worth measuring).
PER_TENSOR_MIN_SAVING = 0.1


def budget_bits(budget, sizes: dict[str, int], reserve: float = BYTES_RESERVE) -> float | None:
    """File bits per weight the allocator may spend for `budget`: a number (average bits per weight,
    everything the .tflite holds counted: weights, scales, biases, graph), {"avg_bits": b} or
    {"bytes": n} (.tflite bytes), less `reserve` of it; None for no budget."""
    if budget is None:
        return None
    if isinstance(budget, dict):
        if "avg_bits" in budget:
            budget = budget["avg_bits"]
        elif "bytes" in budget:
            budget = 8.0 * float(budget["bytes"]) / sum(sizes.values())
        else:
            raise UserError(f"budget {budget}: give 'avg_bits' or 'bytes'")
    budget = float(budget)
    # no upper bound: file bits per weight count scales, biases and the graph, so a small model's
    # uniform 4-bit file can take more than 8 (an imported MobileNetV2 at alpha 0.35, 32 px: 9.2)
    if not budget > 0:
        raise UserError(f"bit budget {budget:g} average bits is impossible: it must be > 0")
    # Both budgets are hard limits on the written file (convert checks its size): the file-size
    # estimate's error (-0.1..+1.3% measured) is kept in reserve, as the exact allocator spends
    # the budget to the bit.
    return budget * (1.0 - reserve)


def _channels(layer) -> tuple[int, int]:
    """(input channels, output channels) of a weighted layer as TFLite stores it: a depthwise kernel
    (kh, kw, C, M) has C * M output channels, each with its own scale, zero point and bias (counting
    its last axis, M, missed ~100 KB of MobileNetV2's file)."""
    shape = layer.weights[0].shape
    if type(layer) is keras.layers.DepthwiseConv2D:
        return int(shape[-2]), int(shape[-2]) * int(shape[-1])
    return int(shape[-2]), int(shape[-1])


def _overhead(folded, graph_bytes: int | None = None):
    """overhead_bits(layer, bits, split, per_tensor) for the allocator: see
    horizontal.layer_overhead_bits (a Dense kernel is always per-tensor). `graph_bytes`: the bytes
    of the file that no option changes, measured (`measure_graph_bytes`); the layers are then
    priced for their scales, zero points and biases only (and a split's extra ops). None: the
    former fixed guesses (MODEL_OVERHEAD_BYTES, 600 bytes a layer), which missed unweighted ops and
    tensor names (-7.5% on a ported MobileNetV2 w0.25) and overshot per-tensor files by 9-18%."""

    def overhead(name, bits, split, per_tensor=False):
        if name is None:
            return 8.0 * (MODEL_OVERHEAD_BYTES if graph_bytes is None else graph_bytes)
        layer = folded.get_layer(name)
        cin, cout = _channels(layer)
        return layer_overhead_bits(cout, cin, split, per_tensor or type(layer) is keras.layers.Dense,
                                   graph=graph_bytes is None)

    return overhead


def measure_graph_bytes(model, folded, default, sizes, depthwise, int2: bool = True, per_tensor: bool = True) -> int:
    """The bytes of `model`'s adaptive .tflite that no plan option changes, measured: the cheapest
    plan's QAT model is converted as convert converts it (engine.export.to_tflite, int4, 2-bit
    weights repacked as INT2 unless int2=False, tensors named by index) and what the options price
    (weights in their containers, each layer's scales, zero points and biases:
    `_overhead(..., graph_bytes=0)`) is taken off the file's size. What is left is the file's header,
    operator codes, signature and metadata, every op (table, input/output vectors, builtin options),
    every tensor (table, shape, activation scales, name) and the buffer tables: the same for every
    plan of this model, as the layers, ops and tensors do not depend on the bits.

    Measured rather than modelled: 156 of EfficientNet-B0's 239 ops have no weights. One
    conversion of the untrained QAT model (seconds at test sizes) prices them exactly. Kept per
    process for the same architecture and options (a second plan of one model converts nothing)."""
    key = (hashlib.sha256(model.to_json().encode()).hexdigest(), tuple(sorted(default.items())), int2, per_tensor)
    if key not in _GRAPH_BYTES:
        _GRAPH_BYTES[key] = _measure_graph_bytes(model, folded, default, sizes, depthwise, int2, per_tensor)
    return _GRAPH_BYTES[key]


_GRAPH_BYTES: dict[tuple, int] = {}  # measure_graph_bytes' results in this process


def _measure_graph_bytes(model, folded, default, sizes, depthwise, int2: bool, per_tensor: bool) -> int:
    from tfdefakeq.engine.export import as_written, to_tflite
    from tfdefakeq.quant import calibrate
    from tfdefakeq.quant.schemes import apply_folded_scheme

    bits, scalar = cheapest_plan(folded, default, sizes, depthwise, int2, per_tensor)
    qat = apply_folded_scheme(model, bits, lsq=True, per_tensor=scalar)
    calibrate.init_weight_ranges(qat)
    nonzero_biases(qat)
    # the converter asks for sample inputs even for a QAT model: the values do not change the layout
    flatbuffer = as_written(to_tflite(qat, "int4", np.zeros((1, *qat.input_shape[1:]), np.float32)), "int4", int2)
    priced = average_bits(bits, sizes, None, _overhead(folded, graph_bytes=0), int2=int2, per_tensor=scalar)
    return len(flatbuffer) - int(round(priced * sum(sizes.values()) / 8))


def nonzero_biases(qat, seed: int = 0) -> None:
    """Gives every bias of QAT model `qat` small random nonzero values, in place. A fresh
    BatchNorm folds to a zero bias, and the converter stores a zero bias differently (a Dense's
    not at all, a conv's under a short shared name: 808 of a tiny CNN's 8.5 KB) from the nonzero
    bias every trained model has; the graph bytes are measured on the layout the trained file has."""
    rng = np.random.default_rng(seed)
    for wrapper in qat.layers:
        bias = getattr(getattr(wrapper, "layer", None), "bias", None)
        if bias is not None:
            bias.assign(rng.uniform(0.01, 0.1, bias.shape).astype(np.float32))


def per_tensor_candidates(folded, names, sizes: dict[str, int], int2: bool = True,
                          min_saving: float = PER_TENSOR_MIN_SAVING) -> list[str]:
    """The convs and depthwise convs among `names` for which one kernel scale instead of one per
    output channel saves at least `min_saving` of the layer's file bytes at 2 bits (the option is
    then measured and priced; whether it is taken is the allocator's call)."""
    overhead = _overhead(folded)
    out = []
    for n in names:
        if type(folded.get_layer(n)) not in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D):
            continue
        weights = sizes[n] * storage_bits_per_weight(2, int2)
        per_channel = weights + overhead(n, 2, False)
        if per_channel - (weights + overhead(n, 2, False, per_tensor=True)) >= min_saving * per_channel:
            out.append(n)
    return out


def plan_adaptive(model, calib_images: np.ndarray | None, budget=None, bit_plan: dict[str, int] | None = None,
                  salient_channels: dict[str, list[int]] | None = None, salient_ratio: float = DEFAULT_SALIENT_RATIO,
                  channel_choice: str = "saliency", low_bits: int = 4, seed: int = 0, int2: bool = True,
                  frontier_path=None, allocator: str = "exact", per_tensor: list[str] | None = None,
                  offer_per_tensor: bool = True, measure_graph: bool | None = None) -> QuantPlan:
    """A QuantPlan for float `model`.

    bit_plan / salient_channels: use these instead of measuring (e.g. from `--bit-plan FILE`).
    budget: see `budget_bits`; None: the file size of the uniform plan (every body layer at
    `low_bits`, no split), so "adaptive W4A8" redistributes the bits of a W4A8 file: sensitive layers
    up to 8, robust ones down to 2, salient channels split where they pay. A uniform plan without
    any allocation is `bit_plan=` (the no-horizontal ablation).
    salient_ratio: share of input channels kept at 8 bits in each low-bit conv (0: vertical off).
    channel_choice: "saliency" (ours) or "random" (DeFakeQ's, as an ablation).
    per_tensor: with bit_plan, its layers that keep one kernel scale. offer_per_tensor: measure and
    price a per-tensor option for the convs where it saves bytes (`per_tensor_candidates`); the
    allocator picks it like any other option (False: per-channel scales everywhere).
    measure_graph: price the file's ops, tensors and names from one conversion of the model
    (`measure_graph_bytes`); None: when the plan is allocated under a budget (a given bit plan's
    planned_bytes is then only a report); False: the former fixed guesses.
    int2: 2-bit layers will be written as INT2 (False: in INT4 containers, `convert --no-int2`); the
    plan is priced for the containers written, and plan.budget["int2"] says which.
    frontier_path: also write the bytes -> least predicted loss frontier there (.csv + .png,
    `tfdefakeq.quant.frontier`); needs a measured plan. allocator: "exact" or "greedy" (the former
    heuristic, for comparison). plan.budget records the budget (budget_bytes: the limit the written
    file must hold, `horizontal.check_file_budget`), the plan's estimated bytes and its summed
    sensitivity beside the greedy heuristic's (sensitivity_sum, greedy_sensitivity_sum).
    """
    from tfdefakeq.quant.fold import fold_batchnorm

    folded, default, sizes, depthwise = _weighted_layers(fold_batchnorm(model), low_bits)
    convs = {n for n in default if type(folded.get_layer(n)) is keras.layers.Conv2D}
    explicit = budget
    if per_tensor and bit_plan is None:
        raise UserError("per-tensor layers are part of a given bit plan: pass bit_plan too")
    per_tensor = sorted(per_tensor or [])
    graph_bytes = None
    if measure_graph or (measure_graph is None and bit_plan is None):
        graph_bytes = measure_graph_bytes(model, folded, default, sizes, depthwise, int2, offer_per_tensor)
        print(f"measured the file's graph bytes (ops, tensors, names, header): {graph_bytes:,}", flush=True)
    overhead = _overhead(folded, graph_bytes)
    if budget is None and bit_plan is None:
        budget = average_bits(default, sizes, None, overhead, int2=int2)
    need_data = (bit_plan is None and budget is not None) or (salient_channels is None and salient_ratio > 0)
    if need_data and calib_images is None:
        raise UserError("the adaptive scheme needs calibration images to measure sensitivity and saliency")
    record = {"low_bits": low_bits, "salient_ratio": salient_ratio, "channel_choice": channel_choice, "int2": bool(int2)}
    if frontier_path is not None and bit_plan is not None:
        raise UserError("--frontier needs a measured plan: it cannot be drawn for a given --bit-plan")
    if channel_choice not in ("saliency", "random"):
        raise UserError(f"unknown channel choice {channel_choice!r} (saliency or random)")

    def candidates(names):
        """Salient channels for each conv in `names` (DeFakeQ's random choice as the ablation)."""
        names = [n for n in names if n in convs and folded.get_layer(n).input_shape[-1] > 1]
        if salient_ratio <= 0 or not names:
            return {}
        if channel_choice == "random":
            return random_salient({n: folded.get_layer(n).input_shape[-1] for n in names}, salient_ratio, seed)
        return pick_salient(channel_saliency(folded, names, calib_images), salient_ratio)

    sensitivity = {}
    if bit_plan is not None:
        plan = {n: int(b) for n, b in bit_plan.items()}
    elif budget is not None:
        # Both directions under one budget: each layer's options are its bits with and without its
        # salient channels split off, all measured, all priced, one allocation.
        # an explicit budget is a hard limit; the uniform 4-bit file's size (no budget given) is not
        avg = budget_bits(budget, sizes, reserve=BYTES_RESERVE if explicit is not None else 0.0)
        floor = _smallest_budget(folded, default, sizes, depthwise, int2, offer_per_tensor, graph_bytes)
        if avg < floor - 1e-9:  # said before anything is measured
            raise UserError(_infeasible(explicit, avg, floor, sum(sizes.values()), int2))
        # depthwise kernels join in: LSQ gives them a step per channel (plan_weight_bits keeps them
        # at 8 for the learned-range schemes, whose range spans the whole kernel)
        fixed = {n: b for n, b in default.items() if b == 8 and n not in depthwise}
        free = [n for n in default if n not in fixed]
        offered = salient_channels if salient_channels is not None else candidates(free)
        fraction = {n: len(c) / folded.get_layer(n).input_shape[-1] for n, c in offered.items()}
        scalar = per_tensor_candidates(folded, free, sizes, int2) if offer_per_tensor else []
        print(f"measuring the sensitivity of {len(free)} layers at bits 8/4/3/2 ({len(scalar)} also per tensor) "
              f"on {len(calib_images)} images", flush=True)
        sensitivity = layer_sensitivity(folded, free, calib_images, salient=offered, per_tensor=scalar)
        args = dict(fixed=fixed, salient_fraction=fraction, overhead_bits=overhead, int2=int2)
        chosen = solve_allocation(sensitivity, sizes, avg, allocator=allocator, **args)
        # the former heuristic's answer on the same table, for comparison (milliseconds)
        other = solve_allocation(sensitivity, sizes, avg, allocator="greedy" if allocator == "exact" else "exact", **args)
        exact, greedy = (chosen, other) if allocator == "exact" else (other, chosen)
        options = chosen.options
        plan = {n: parse_option(k)[0] for n, k in options.items()}
        salient_channels = {n: offered[n] for n, k in options.items() if parse_option(k)[1]}
        per_tensor = sorted(n for n, k in options.items() if is_per_tensor(k))
        record.update(avg_bits=avg / (1 - BYTES_RESERVE) if explicit is not None else avg, allocated_avg_bits=avg,
                      allocator=allocator, total_weights=chosen.total_weights,
                      planned_bytes=-(-chosen.spent_bits // 8), sensitivity_sum=chosen.loss,
                      exact_sensitivity_sum=exact.loss, greedy_sensitivity_sum=greedy.loss,
                      greedy_planned_bytes=-(-greedy.spent_bits // 8))
        if isinstance(explicit, dict) and "bytes" in explicit:
            record.update(bytes=int(explicit["bytes"]), budget_bytes=int(explicit["bytes"]))
        elif explicit is not None:  # --avg-bits: whole-file bits per weight, so bytes = bits x weights / 8
            given = explicit["avg_bits"] if isinstance(explicit, dict) else explicit
            record.update(budget_bytes=int(float(given) * chosen.total_weights + 1e-6) // 8)
        else:
            record.update(budget_source="uniform_estimate")  # the estimated uniform file: no hard limit
        if frontier_path is not None:
            from tfdefakeq.quant.frontier import write_frontier

            front = frontier(sensitivity, sizes, **args)
            paths = write_frontier(front, frontier_path, chosen_bits=chosen.spent_bits, budget_bits=chosen.budget_bits,
                                   bytes_reserve=BYTES_RESERVE, title=f"{len(free)} layers, budget {avg:.3f} bits per weight")
            print(f"wrote the frontier ({len(front.loss)} optimal plans) to {paths[0]} and {paths[1]}", flush=True)
    if salient_channels is None:
        salient_channels = candidates([n for n, b in plan.items() if b < 8 and n not in per_tensor])
    fraction = {n: len(c) / folded.get_layer(n).input_shape[-1] for n, c in salient_channels.items()}
    kept = {n: plan[n] for n in sizes if n in plan}
    record["weight_bits_avg"] = round(average_bits(kept, sizes, fraction, int2=int2), 4)
    file_bits = average_bits(kept, sizes, fraction, overhead, int2=int2, per_tensor=per_tensor)
    if graph_bytes is not None:
        record["graph_bytes"] = int(graph_bytes)
    record["file_bits_avg"] = round(file_bits, 4)
    record.setdefault("planned_bytes", math.ceil(file_bits * sum(sizes[n] for n in kept) / 8 - 1e-6))
    channels = {n: _channels(folded.get_layer(n)) for n in sizes}
    layers = {n: {"weights": sizes[n], "cin": channels[n][0], "cout": channels[n][1]} for n in sizes}
    return QuantPlan(weight_bits=plan, salient_channels=salient_channels, budget=record,
                     sensitivity={n: {str(b): s for b, s in v.items()} for n, v in sensitivity.items()}, layers=layers,
                     per_tensor=per_tensor)


def smallest_budget(model, low_bits: int = 4, int2: bool = True, per_tensor: bool = True,
                    measure_graph: bool = True) -> float:
    """The smallest --avg-bits the adaptive scheme can meet for float `model` (every free layer at
    2 bits, no split, one kernel scale where `per_tensor_candidates` offers it (per_tensor=False:
    per-channel everywhere); file bytes counted; int2=False: 2-bit layers in INT4 containers): the
    floor plan_adaptive enforces, so with the file's graph bytes measured by one conversion
    (`measure_graph_bytes`; measure_graph=False: the former fixed guesses, nothing converted)."""
    from tfdefakeq.quant.fold import fold_batchnorm

    folded, default, sizes, depthwise = _weighted_layers(fold_batchnorm(model), low_bits)
    graph_bytes = (measure_graph_bytes(model, folded, default, sizes, depthwise, int2, per_tensor)
                   if measure_graph else None)
    return _smallest_budget(folded, default, sizes, depthwise, int2=int2, per_tensor=per_tensor, graph_bytes=graph_bytes)


def _weighted_layers(folded, low_bits: int):
    """(folded, default plan, layer -> weights, trainable depthwise layers) of a BN-folded model."""
    from tfdefakeq.quant.schemes import plan_weight_bits

    default = plan_weight_bits(folded, low_bits)
    sizes = {name: int(np.prod(folded.get_layer(name).weights[0].shape)) for name in default}
    depthwise = {n for n in default if type(folded.get_layer(n)) is keras.layers.DepthwiseConv2D and folded.get_layer(n).trainable}
    return folded, default, sizes, depthwise


def _infeasible(explicit, avg: float, floor: float, total_weights: int, int2: bool) -> str:
    """The one-line refusal of a budget below the cheapest plan, naming the smallest --avg-bits and
    --budget-bytes the plan can meet (the size estimate's reserve included: those values pass this
    check). Should the written file still exceed them (the estimate short by more than the
    reserve), convert refuses the file in one line."""
    if explicit is None:  # no budget given: the uniform 4-bit file's estimate, no reserve
        asked, smallest = f"bit budget {avg:g} (the uniform 4-bit file)", floor
    else:
        asked = f"bit budget {avg / (1 - BYTES_RESERVE):.4g} ({avg:.4g} after the {BYTES_RESERVE:.0%} reserve for the size estimate)"
        if isinstance(explicit, dict) and "bytes" in explicit:
            asked = f"--budget-bytes {int(explicit['bytes']):,} = " + asked
        smallest = floor / (1 - BYTES_RESERVE)
    min_bits = math.ceil(smallest * 1000 - 1e-6) / 1000
    min_bytes = math.ceil(smallest * total_weights / 8 - 1e-6)
    return (f"{asked} average bits is impossible: the cheapest plan needs {floor:.3f} (first conv and classifier stay "
            "at 8 bits; scales, zero points and biases count" + ("" if int2 else "; 2-bit weights in INT4 containers")
            + f"); the smallest budget the plan can meet: --avg-bits {min_bits:.3f} or --budget-bytes {min_bytes:,}")


def cheapest_plan(folded, default, sizes, depthwise, int2: bool = True, per_tensor: bool = True):
    """(layer -> bits, per-tensor layers) of the cheapest plan: every free layer at 2 bits, one
    kernel scale where offered; the stem and the classifier at 8 bits per channel."""
    bits = {n: 8 if (b == 8 and n not in depthwise) else 2 for n, b in default.items()}
    free = [n for n, b in bits.items() if b == 2]
    return bits, (per_tensor_candidates(folded, free, sizes, int2) if per_tensor else [])


def _smallest_budget(folded, default, sizes, depthwise, int2: bool = True, per_tensor: bool = True,
                     graph_bytes: int | None = None) -> float:
    bits, scalar = cheapest_plan(folded, default, sizes, depthwise, int2, per_tensor)
    return average_bits(bits, sizes, None, _overhead(folded, graph_bytes), int2=int2, per_tensor=scalar)
