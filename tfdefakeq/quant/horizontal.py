"""Horizontal adaptive quantization: per-layer weight bits chosen by measured sensitivity under a
budget (after DeFakeQ's horizontal direction; HAWQ/BRECQ-style sensitivity).

Sensitivity of layer l at b bits = mean squared change of the detector's logits on calibration
images when only l's (BN-folded) kernel is put on the b-bit grid (MSE-optimal steps) and every
other layer stays float. The allocator then minimises the summed sensitivity subject to the
storage budget: a multiple-choice knapsack (one option per layer), solved exactly (`solve_allocation`).
Storage counts what the .tflite holds: 3-bit weights cost 4 bits (INT4 containers), 2-bit ones 2
bits (INT2; 4 when INT2 is off, `int2=False`), salient channels kept at 8 bits by the vertical split
cost 8, plus each layer's scales, biases and graph bytes (`layer_overhead_bits`).
A layer can also store one scale for its whole kernel instead of one per output channel (option
"2t", "4t", ...): its file then holds one scale and zero point for the kernel and for the bias
instead of C of each (24 of the 28 bytes a channel costs besides its weights), which on a
MobileNetV2 depthwise layer (9 weights a channel) is most of the layer's bytes. It is measured and
priced like the other options, so the allocator takes it where the bytes it frees buy more than
the accuracy it costs.

The allocator is numpy only: importing this module imports no TensorFlow (only
`layer_sensitivity`, which runs a Keras model, does, when called).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfdefakeq.core.errors import UserError
from tfdefakeq.quant.grids import mse_step, storage_bits_per_weight, weight_levels

CHOICES = (8, 4, 3, 2)


@dataclass
class QuantPlan:
    """What the adaptive scheme decided, reusable with `--bit-plan FILE`.

    weight_bits: layer name -> bits (8/4/3/2) of the BN-folded model's weighted layers.
    salient_channels: conv name -> input channels kept on the 8-bit path (vertical split).
    per_tensor: layers whose kernel has one scale (not one per output channel), sorted.
    budget: how the plan was made (avg_bits / bytes, cost model); sensitivity: layer -> {option: score}
    (options "8", "4", "4s" = 4 bits with the salient channels split off, "4t" = 4 bits with one
    scale per tensor, ...).
    """

    weight_bits: dict[str, int]
    salient_channels: dict[str, list[int]] = field(default_factory=dict)
    budget: dict = field(default_factory=dict)
    sensitivity: dict[str, dict[str, float]] = field(default_factory=dict)
    layers: dict[str, dict[str, int]] = field(default_factory=dict)  # layer -> weights, cin, cout (for reports)
    per_tensor: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "QuantPlan":
        return cls(weight_bits={k: int(v) for k, v in obj["weight_bits"].items()},
                   salient_channels={k: [int(i) for i in v] for k, v in obj.get("salient_channels", {}).items()},
                   budget=obj.get("budget", {}), sensitivity=obj.get("sensitivity", {}), layers=obj.get("layers", {}),
                   per_tensor=sorted(str(n) for n in obj.get("per_tensor", [])))

    def save(self, path, overwrite: bool = False) -> Path:
        from tfdefakeq.core.fileio import write_json_atomic

        return write_json_atomic(path, self.to_json(), overwrite=overwrite)

    @classmethod
    def load(cls, path) -> "QuantPlan":
        from tfdefakeq.core.fileio import read_json

        obj = read_json(path)
        if not isinstance(obj, dict) or not isinstance(obj.get("weight_bits"), dict):
            raise UserError(f"{path}: not a bit plan (needs a 'weight_bits' map of layer -> bits)")
        bad = {k: v for k, v in obj["weight_bits"].items() if v not in CHOICES}
        if bad:
            raise UserError(f"{path}: unsupported bits {bad} (choose from {list(CHOICES)})")
        per_tensor = obj.get("per_tensor", [])
        if not isinstance(per_tensor, list) or set(map(str, per_tensor)) - set(obj["weight_bits"]):
            raise UserError(f"{path}: 'per_tensor' must list layers of 'weight_bits', got {per_tensor!r}")
        return cls.from_json(obj)


def quantize_kernel(kernel: np.ndarray, bits: int, per_axis: bool = True, depthwise: bool = False) -> np.ndarray:
    """`kernel` on the `bits` grid with MSE-optimal steps per output channel (last axis; for a
    depthwise kernel (kh, kw, C, M) the C*M channels, as LSQWeightQuantizer does)."""
    if depthwise:
        kh, kw, c, m = kernel.shape
        return quantize_kernel(kernel.reshape(kh, kw, 1, c * m), bits, per_axis).reshape(kernel.shape)
    qmin, qmax = weight_levels(bits)
    step = mse_step(kernel, bits, per_axis)
    return (np.clip(np.floor(kernel / step + 0.5), qmin, qmax) * step).astype(np.float32)


def option_key(bits: int, split: bool = False, per_tensor: bool = False) -> str:
    """A layer's option: its bits, 's' when salient input channels stay on an 8-bit path, 't' when
    the kernel has one scale per tensor (never both)."""
    if split and per_tensor:
        raise ValueError("an option is split or per-tensor, not both")
    return f"{bits}{'s' if split else ''}{'t' if per_tensor else ''}"


def parse_option(key) -> tuple[int, bool]:
    """(bits, split) of an option key ("4", "4s", "4t")."""
    key = str(key)
    return int(key.rstrip("st")), key.endswith("s")


def is_per_tensor(key) -> bool:
    """Whether option `key` stores one scale for the whole kernel."""
    return str(key).endswith("t")


def layer_sensitivity(folded, layer_names, images: np.ndarray, choices=CHOICES, salient: dict | None = None,
                      batch_size: int = 64, per_tensor=()) -> dict:
    """layer -> {option: mean squared logit change} with that layer alone quantized (float
    elsewhere). Options are the bits in `choices`, plus for the layers in `salient` (layer -> input
    channels) each low-bit choice with those channels at 8 bits ("4s", "2s", ...), and for the
    layers in `per_tensor` each choice with one step for the whole kernel ("8t", "4t", ...).

    Only the layers from l on see l's change, so each option runs that part alone (`fold.run_layers`
    from l's position, traced once per layer) on the float tensors crossing the cut before l (l's
    input and the skip connections around it), computed once in one walk through the model: ResNet-50
    runs about half its layers per option instead of all of them. The logits are those of the whole
    model run with the quantized kernel (tests/quant/test_horizontal.py checks it against that)."""
    from tfdefakeq.core.tfcompat import keras, tf
    from tfdefakeq.quant.fold import crossing, inbound_layers, run_layers

    order = {layer.name: position for position, layer in enumerate(folded.layers)}
    crossings = crossing(folded)
    forward = tf.function(lambda x: folded(x, training=False))
    batches = [tf.constant(images[i:i + batch_size], tf.float32) for i in range(0, len(images), batch_size)]
    reference = np.concatenate([forward(x).numpy().reshape(-1) for x in batches])
    # float tensors crossing the cut before position `done`, per batch (the input first)
    cut = [{folded.inputs[0].node.layer.name: x} for x in batches]
    done = 0
    salient = salient or {}
    scores = {name: {} for name in layer_names}
    for name in sorted(layer_names, key=order.__getitem__):
        start = order[name]
        for tensors in cut:  # walk the float model up to `name`, keeping what crosses its cut
            for layer in folded.layers[done:start]:
                if isinstance(layer, keras.layers.InputLayer):
                    continue
                args = [tensors[src.name] for src in inbound_layers(layer)]
                tensors[layer.name] = layer(args[0] if len(args) == 1 else args, training=False)
            for stale in set(tensors) - crossings[start]:
                del tensors[stale]
        done = start
        # traced once per layer (weights are read at call time); a plain Python loop: no autograph
        suffix = tf.function(lambda t, start=start: run_layers(folded, t, start=start), autograph=False)
        layer = folded.get_layer(name)
        weights = layer.get_weights()
        per_axis = not isinstance(layer, keras.layers.Dense)
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        for bits in choices:
            variants = [(option_key(bits), quantize_kernel(weights[0], bits, per_axis, depthwise))]
            if name in per_tensor and per_axis:
                variants.append((option_key(bits, per_tensor=True), quantize_kernel(weights[0], bits, False)))
            if name in salient and bits < 8:
                # as the split conv is built: each part gets its own steps
                idx = salient[name]
                rest = [c for c in range(weights[0].shape[2]) if c not in set(idx)]
                kernel = np.empty_like(weights[0])
                kernel[:, :, idx, :] = quantize_kernel(weights[0][:, :, idx, :], 8, per_axis)
                kernel[:, :, rest, :] = quantize_kernel(weights[0][:, :, rest, :], bits, per_axis)
                variants.append((option_key(bits, True), kernel))
            for key, kernel in variants:
                layer.set_weights([kernel] + weights[1:])
                logits = np.concatenate([suffix(tensors).numpy().reshape(-1) for tensors in cut])
                scores[name][key] = float(np.mean((logits - reference) ** 2))
        layer.set_weights(weights)
    return scores


def storage_bits(bits: int, salient_fraction: float = 0.0, int2: bool = True) -> float:
    """Bits per weight a layer costs in the .tflite at `bits` with a share of 8-bit input channels
    (`int2=False`: 2-bit weights stored in INT4 containers, as `convert --no-int2` writes them)."""
    if bits == 8:
        return 8.0
    return salient_fraction * 8 + (1 - salient_fraction) * storage_bits_per_weight(bits, int2)


def _whole_bits(x: float) -> int:
    """A cost as an integer number of bits. Every cost of the model is one already (weights x
    container bits, bytes x 8); the ceiling keeps a fractional one from slipping under a budget."""
    return int(math.ceil(float(x) - 1e-6))


def option_cost_bits(size: int, key, salient_fraction: float = 0.0, overhead: float = 0.0, int2: bool = True) -> int:
    """Bits the .tflite spends on a layer of `size` weights at option `key` ("4", "2s", "4t", ...):
    its weights in their containers, the split-off salient share (size x fraction weights, a whole
    number: kh*kw*k*cout of kh*kw*cin*cout) at 8 bits, and `overhead` (scales, biases, graph: the
    caller prices a per-tensor option's own, smaller, overhead)."""
    bits, split = parse_option(key)
    if bits == 8:
        return 8 * int(size) + _whole_bits(overhead)
    salient = int(round(size * salient_fraction)) if split else 0
    return (8 * salient + storage_bits_per_weight(bits, int2) * (int(size) - salient)) + _whole_bits(overhead)


@dataclass
class Allocation:
    """The allocator's answer. options: layer -> option key (fixed layers included); spent_bits /
    budget_bits: file bits of the plan / the budget (integers, `overhead_bits` counted when given);
    cheapest_bits: the least any plan can spend; loss: the plan's summed sensitivity (free layers,
    summed in their order); total_weights: weights of all layers (bits / total_weights = avg bits)."""

    options: dict[str, str]
    spent_bits: int
    budget_bits: int
    cheapest_bits: int
    loss: float
    total_weights: int
    allocator: str = "exact"


@dataclass
class _Problem:
    free: list[str]
    keys: list[list[str]]
    costs: list[np.ndarray]  # int64 bits per option
    scores: list[np.ndarray]  # float64 sensitivity per option
    fixed_options: dict[str, str]
    fixed_cost: int
    total_weights: int


def _problem(sensitivity, sizes, fixed=None, salient_fraction=None, overhead_bits=None, int2: bool = True) -> _Problem:
    fixed = dict(fixed or {})
    salient_fraction = salient_fraction or {}
    extra = overhead_bits or (lambda name, bits, split: 0.0)
    free = [n for n in sensitivity if n not in fixed]
    fixed_cost = sum(option_cost_bits(sizes[n], option_key(b), 0.0, extra(n, b, False), int2) for n, b in fixed.items())
    fixed_cost += _whole_bits(extra(None, 8, False)) if overhead_bits else 0  # the file's own bytes (name None)
    keys, costs, scores = [], [], []
    for n in free:
        ks = [str(k) for k in sensitivity[n]]
        if not ks:
            raise UserError(f"layer {n}: no quantization options to choose from")
        sc = np.array([float(v) for v in sensitivity[n].values()], np.float64)
        if not np.all(np.isfinite(sc)):
            raise UserError(f"layer {n}: sensitivity {dict(zip(ks, sc.tolist()))} is not finite")
        co = []
        for k in ks:
            bits, split = parse_option(k)
            if split and bits < 8 and n not in salient_fraction:
                raise ValueError(f"layer {n}: option {k} splits salient channels off, but no salient_fraction prices them")
            co.append(option_cost_bits(sizes[n], k, salient_fraction.get(n, 0.0), _extra(extra, n, k), int2))
        keys.append(ks)
        costs.append(np.array(co, np.int64))
        scores.append(sc)
    return _Problem(free, keys, costs, scores, {n: option_key(b) for n, b in fixed.items()}, int(fixed_cost),
                    int(sum(int(v) for v in sizes.values())))


def _extra(overhead_bits, name, key) -> float:
    """overhead_bits(name, bits, split) of option `key`; per-tensor options pass per_tensor=True
    (a callback without per-tensor options need not take it)."""
    bits, split = parse_option(key)
    return overhead_bits(name, bits, split, per_tensor=True) if is_per_tensor(key) else overhead_bits(name, bits, split)


def _pareto(cost: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats: sorted by cost, each strictly lower in loss
    than every point at most as costly (at equal loss the cheaper one stays)."""
    order = np.lexsort((loss, cost))
    if len(order) < 2:
        return order
    lo = loss[order]
    keep = np.ones(len(order), bool)
    keep[1:] = lo[1:] < np.minimum.accumulate(lo)[:-1]
    return order[keep]


def _pareto_dp(problem: _Problem, cap: int | None = None):
    """Exact multiple-choice knapsack by Pareto dynamic programming over the layers.

    After layer i the state is every partial plan (one option for each of layers 0..i) that no other
    partial plan beats on both cost and summed sensitivity. Exact because (1) costs are integers
    (bits), so comparing them loses nothing, and (2) floating-point addition is monotone: if
    a <= b then fl(a + s) <= fl(b + s), so a pruned partial plan can never end better than the one
    that beat it, even counted in float64 (the sum is taken in layer order, as a brute force
    `total += score` does). With `cap`, partial plans that cannot fit (cost + the cheapest of the
    remaining layers > cap) are dropped as well. Returns (cost, loss, parents, picks): the final
    Pareto points and, per layer, each point's predecessor and option index.
    """
    n = len(problem.free)
    cheapest_rest = np.zeros(n + 1, np.int64)
    for i in range(n - 1, -1, -1):
        cheapest_rest[i] = cheapest_rest[i + 1] + problem.costs[i].min()
    cost = np.array([problem.fixed_cost], np.int64)
    loss = np.zeros(1, np.float64)
    parents, picks = [], []
    for i in range(n):
        c, s = problem.costs[i], problem.scores[i]
        all_cost = (cost[:, None] + c[None, :]).ravel()
        all_loss = (loss[:, None] + s[None, :]).ravel()
        candidates = np.arange(len(all_cost))
        if cap is not None:
            candidates = candidates[all_cost + cheapest_rest[i + 1] <= cap]
        keep = candidates[_pareto(all_cost[candidates], all_loss[candidates])]
        parents.append(keep // len(c))
        picks.append(keep % len(c))
        cost, loss = all_cost[keep], all_loss[keep]
    return cost, loss, parents, picks


def _backtrack(points: np.ndarray, parents, picks) -> np.ndarray:
    """Option index of each layer (columns) for each final Pareto point in `points` (rows)."""
    out = np.empty((len(points), len(picks)), np.int64)
    idx = np.asarray(points, np.int64)
    for i in range(len(picks) - 1, -1, -1):
        out[:, i] = picks[i][idx]
        idx = parents[i][idx]
    return out


def _greedy(problem: _Problem, budget: int) -> dict[str, str]:
    """The allocator before the exact one (kept for comparison: `allocator="greedy"`): a Lagrangian
    bisection, then an upgrade-only greedy fill. Not optimal (tests/quant/test_horizontal.py)."""
    score = {n: dict(zip(ks, s.tolist())) for n, ks, s in zip(problem.free, problem.keys, problem.scores)}
    price = {n: dict(zip(ks, c.tolist())) for n, ks, c in zip(problem.free, problem.keys, problem.costs)}
    free = problem.free

    def pick(lam):
        return {n: min(score[n], key=lambda k: (score[n][k] + lam * price[n][k], -price[n][k])) for n in free}

    def spent(plan):
        return problem.fixed_cost + sum(price[n][k] for n, k in plan.items())

    lo, hi = 0.0, 1.0
    while spent(pick(hi)) > budget and hi < 1e12:
        hi *= 4
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if spent(pick(mid)) > budget else (lo, mid)
    plan = pick(hi)
    while True:
        left = budget - spent(plan)
        moves = [
            ((score[n][plan[n]] - score[n][k]) / (price[n][k] - price[n][plan[n]]), n, k)
            for n in free for k in score[n]
            if 0 < price[n][k] - price[n][plan[n]] <= left and score[n][k] < score[n][plan[n]]
        ]
        if not moves:
            break
        _, n, k = max(moves)
        plan[n] = k
    return plan


def plan_loss(options: dict[str, str], sensitivity: dict) -> float:
    """Summed sensitivity of `options` over the layers in `sensitivity` (in its order)."""
    total = 0.0
    for n, scores in sensitivity.items():
        if n in options:
            total += float({str(k): v for k, v in scores.items()}[str(options[n])])
    return total


def solve_allocation(sensitivity: dict, sizes: dict[str, int], budget_bits: float, fixed: dict[str, int] | None = None,
                     salient_fraction: dict[str, float] | None = None, overhead_bits=None, int2: bool = True,
                     allocator: str = "exact") -> Allocation:
    """Option per layer minimising summed sensitivity with storage <= budget_bits x all weights.

    sensitivity: layer -> {option: score} for the free layers (options: see `option_key`, so the
    vertical split competes for the same budget as the bits); sizes: layer -> weights (free and
    fixed); fixed: layer -> bits not to change (stem, classifier); salient_fraction: layer -> share
    of its weights on the 8-bit path when split. overhead_bits(layer, bits, split) -> bits the file
    spends on the layer besides its weights (scales, biases, graph; layer None: the file's own),
    when the budget is the whole file's; called with per_tensor=True for per-tensor options ("4t"). int2: 2-bit weights are stored as INT2 (else in INT4
    containers, `convert --no-int2`). The budget is floor(budget_bits x all weights) bits.

    allocator "exact" (default): the optimum of the multiple-choice knapsack (`_pareto_dp`; among
    equally good plans the cheapest); "greedy": the former Lagrangian + greedy-fill heuristic, kept
    for comparison. Raises UserError when even the cheapest option everywhere exceeds the budget.
    """
    if allocator not in ("exact", "greedy"):
        raise UserError(f"unknown allocator {allocator!r} (exact or greedy)")
    problem = _problem(sensitivity, sizes, fixed, salient_fraction, overhead_bits, int2)
    total = problem.total_weights
    budget = int(math.floor(float(budget_bits) * total + 1e-6))
    cheapest = problem.fixed_cost + sum(int(c.min()) for c in problem.costs)
    if cheapest > budget:
        raise UserError(
            f"bit budget {budget_bits:g} average bits is impossible: the cheapest plan needs "
            f"{cheapest / total:.3f} ({math.ceil(cheapest / 8):,} bytes; first conv, classifier and fixed layers stay at "
            f"8 bits{'; scales and biases count' if overhead_bits else ''}{'' if int2 else '; 2-bit weights in INT4 containers'})"
        )
    if allocator == "greedy":
        plan = _greedy(problem, budget)
    else:
        cost, loss, parents, picks = _pareto_dp(problem, cap=budget)
        # the Pareto points are sorted by cost with falling loss: the last one is the optimum
        choice = _backtrack(np.array([len(cost) - 1]), parents, picks)[0]
        plan = {n: ks[j] for n, ks, j in zip(problem.free, problem.keys, choice)}
    spent = problem.fixed_cost + sum(int(c[ks.index(plan[n])]) for n, ks, c in zip(problem.free, problem.keys, problem.costs))
    assert spent <= budget, (spent, budget)
    return Allocation(options={**problem.fixed_options, **plan}, spent_bits=int(spent), budget_bits=budget,
                      cheapest_bits=int(cheapest), loss=plan_loss(plan, sensitivity), total_weights=total,
                      allocator=allocator)


def allocate_bits(sensitivity: dict, sizes: dict[str, int], budget_bits: float, fixed: dict[str, int] | None = None,
                  salient_fraction: dict[str, float] | None = None, overhead_bits=None, int2: bool = True,
                  allocator: str = "exact") -> dict[str, str]:
    """layer -> option key of `solve_allocation` (same arguments)."""
    return solve_allocation(sensitivity, sizes, budget_bits, fixed, salient_fraction, overhead_bits, int2, allocator).options


@dataclass
class Frontier:
    """Every budget's optimum at once: the plans no other plan beats on both file bits and summed
    sensitivity, sorted by cost (loss strictly falling). The optimum under a budget of B bits is the
    last point with cost_bits <= B. cost_bits: int64 (n,); loss: float64 (n,); options: one
    layer -> option map per point (fixed layers included); total_weights: for bits per weight."""

    cost_bits: np.ndarray
    loss: np.ndarray
    options: list[dict[str, str]]
    total_weights: int

    def best_under(self, budget_bits_total: int) -> int | None:
        """Index of the optimum under a budget of `budget_bits_total` bits (None: nothing fits)."""
        i = int(np.searchsorted(self.cost_bits, budget_bits_total, side="right")) - 1
        return None if i < 0 else i


def frontier(sensitivity: dict, sizes: dict[str, int], fixed: dict[str, int] | None = None,
             salient_fraction: dict[str, float] | None = None, overhead_bits=None, int2: bool = True) -> Frontier:
    """The whole bytes -> least predicted loss frontier of the allocation problem (arguments as
    `solve_allocation`, without a budget): one exact Pareto DP, every point an optimum."""
    problem = _problem(sensitivity, sizes, fixed, salient_fraction, overhead_bits, int2)
    cost, loss, parents, picks = _pareto_dp(problem)
    choice = _backtrack(np.arange(len(cost)), parents, picks)
    options = [{**problem.fixed_options, **{n: ks[j] for n, ks, j in zip(problem.free, problem.keys, row)}} for row in choice]
    return Frontier(cost_bits=cost, loss=loss, options=options, total_weights=problem.total_weights)


def average_bits(plan: dict[str, int], sizes: dict[str, int], salient_fraction: dict[str, float] | None = None,
                 overhead_bits=None, int2: bool = True, per_tensor=()) -> float:
    """Storage bits per weight of `plan` over all its layers (with `overhead_bits`, file bits;
    `int2=False`: 2-bit layers in INT4 containers; `per_tensor`: layers with one kernel scale)."""
    salient_fraction = salient_fraction or {}
    extra = overhead_bits or (lambda name, bits, split, per_tensor=False: 0.0)
    total = sum(sizes[n] for n in plan)
    file_bytes = extra(None, 8, False) if overhead_bits else 0.0
    return (file_bytes + sum(sizes[n] * storage_bits(b, salient_fraction.get(n, 0.0), int2)
                             + _extra(extra, n, option_key(b, n in salient_fraction and b < 8, n in per_tensor))
                             for n, b in plan.items())) / total


def check_file_budget(path, plan: QuantPlan, label=None) -> None:
    """Raises UserError (naming `label`, default `path`) when the .tflite at `path` is larger than
    the budget `plan` was made for (plan.budget["budget_bytes"]: --budget-bytes, or --avg-bits x
    weights / 8). A plan without a budget (a given --bit-plan, or no budget at all) has nothing to hold."""
    limit = plan.budget.get("budget_bytes")
    if limit is None:
        return
    size = Path(path).stat().st_size
    if size <= int(limit):
        return
    record = plan.budget
    what = (f"--budget-bytes {int(record['bytes']):,}" if record.get("bytes") is not None
            else f"--avg-bits {record.get('avg_bits')}")
    weights = record.get("total_weights")
    per_weight = f" ({8 * size / weights:.3f} bits per weight)" if weights else ""
    planned = f"; the plan estimated {int(record['planned_bytes']):,}" if record.get("planned_bytes") is not None else ""
    containers = "INT2" if record.get("int2", True) else "INT4 (--no-int2)"
    raise UserError(f"{label or path}: {size:,} bytes{per_weight} exceed the budget of {int(limit):,} bytes ({what}{planned}, "
                    f"2-bit weights priced in {containers} containers)")


# What the .tflite spends on a quantized conv besides its weights (TF 2.21 files): per output
# channel a float32 scale + int64 zero point for the kernel and for the int32 bias, and the bias
# itself; a split conv has a second conv (its own kernel scales and a zero bias, the converter adds
# one), two int32 GATHER index lists and the ADD; plus graph bytes (ops, tensors, names) per layer.
QUANT_PARAM_BYTES = 12


LAYER_GRAPH_BYTES = 600  # a guess of a layer's op, tensors and names (when not measured)
SPLIT_GRAPH_BYTES = 1500  # a split conv's second conv, two GATHERs and the ADD: ops, tensors, names
MODEL_OVERHEAD_BYTES = 9000  # per file: I/O tensors, operator codes, signature, metadata (measured ~8.5-9 KB)


def layer_overhead_bits(cout: int, cin: int, split: bool, per_tensor: bool = False, graph: bool = True) -> float:
    """Bits a quantized conv/dense costs in the .tflite besides its weight values. `per_tensor`:
    one scale and zero point for the kernel and one for the bias, the bias still one int32 a channel
    (a Dense kernel is always stored so). `graph`: add a guess of the layer's ops, tensors and names
    (LAYER_GRAPH_BYTES); False where those are measured (adaptive.measure_graph_bytes) and only
    what the option changes is priced. A split always adds its own second conv, GATHERs and ADD."""
    layer_graph = LAYER_GRAPH_BYTES if graph else 0
    if per_tensor:
        if split:
            raise ValueError("a split conv keeps its scales per channel")
        return 8.0 * (2 * QUANT_PARAM_BYTES + 4 * cout + layer_graph)
    per_conv = cout * (2 * QUANT_PARAM_BYTES + 4)
    bytes_ = per_conv + layer_graph
    if split:
        bytes_ += per_conv + 4 * cin + SPLIT_GRAPH_BYTES
    return 8.0 * bytes_
