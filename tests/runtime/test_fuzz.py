"""A bounded fuzz campaign: seeded mutations of the shipped models never crash the harness. (Issue 7.)

Each mutation is written to a file and goes through the harness as a user's file would: the
validator (`check_tflite_file`) in this process, and, when it passes, loading and one invoke on zero
inputs in a child process (`ChildProbe`), where a crash of the C++ interpreter is counted instead
of ending the test. `benchmarks/reliability.py` runs the same campaign, larger, for the results table.
"""

from __future__ import annotations

import math
import random
import struct
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from tfdefakeq.core.errors import UserError
from tfdefakeq.runtime.interpreter import check_tflite_file
from tfdefakeq.runtime.validate import ChildProbe

SHIPPED = Path(__file__).resolve().parents[2] / "tflite_models"
MODELS = ("resnet18_64_int8", "resnet18_64_int4")
MUTATIONS = 504  # 21 per model and class
OUTCOMES = ("rejected", "ran", "error", "crashed", "timeout")  # crashed / timeout: in the child only
CHILD_MEMORY_BYTES = 8 * 2**30  # a shape asking for terabytes fails in the child, not in the machine's swap

BOUNDARY_BYTES = (0x00, 0xFF, 0x7F, 0x80)
BOUNDARY_INTS = (0, 1, -1, -2, 0x7FFFFFFF, -0x80000000, 0x7FFF, 0xFFFF, 65536, 1 << 20)
BAD_FLOATS = (math.nan, math.inf, -math.inf, 0.0, -1.0, 1e38, 1e-45)


@dataclass
class Case:
    model: str
    kind: str  # a key of MUTATORS
    index: int
    note: str  # what was changed, e.g. "u32 at 1232: 1024 -> 4294967295"
    data: bytes

    @property
    def name(self) -> str:
        return f"{self.model}-{self.kind}-{self.index:04d}.tflite"


@dataclass
class Outcome:
    case: Case
    path: Path  # where the mutated file was written
    outcome: str  # one of OUTCOMES
    message: str  # the one-line UserError, "" when the model ran
    seconds: float


# --- where the structure lives -------------------------------------------------------------------


def locate(data: bytes) -> dict[str, list[tuple[int, str]]]:
    """Positions of the model's structural fields by mutation class: {kind: [(byte, struct format)]},
    read with the generated flatbuffer accessors (independent of the validator), plus "weights":
    [(start, end)] of the constant data."""
    from ai_edge_litert import schema_py_generated as schema

    found = defaultdict(list)

    def table(tab) -> None:  # the offset to its vtable and every vtable entry
        vtable = tab.Pos - struct.unpack_from("<i", data, tab.Pos)[0]
        found["vtable"].append((tab.Pos, "<i"))
        found["vtable"].extend((vtable + k, "<H") for k in range(0, struct.unpack_from("<H", data, vtable)[0], 2))

    def scalar(obj, slot: int, kind: str, fmt: str) -> None:
        offset = obj._tab.Offset(slot)
        if offset:
            found[kind].append((obj._tab.Pos + offset, fmt))

    def vector(obj, slot: int, kind: str | None = None, fmt: str = "<i") -> int:
        offset = obj._tab.Offset(slot)
        if not offset:
            return 0
        found["offset"].append((obj._tab.Pos + offset, "<I"))
        start, length = obj._tab.Vector(offset), obj._tab.VectorLen(offset)
        found["vector_length"].append((start - 4, "<I"))
        if kind == "tables":
            found["offset"].extend((start + 4 * i, "<I") for i in range(length))
        elif kind:
            found[kind].extend((start + struct.calcsize(fmt) * i, fmt) for i in range(length))
        return length

    model = schema.Model.GetRootAs(data, 0)
    found["offset"].append((0, "<I"))
    table(model._tab)
    for slot in (6, 8, 12, 16, 18):  # operator_codes, subgraphs, buffers, metadata, signature_defs
        vector(model, slot, "tables")
    for c in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(c)
        table(code._tab)
        scalar(code, 4, "index", "<b")
        scalar(code, 10, "index", "<i")
    for b in range(model.BuffersLength()):
        buffer = model.Buffers(b)
        table(buffer._tab)
        if vector(buffer, 4):
            start = buffer._tab.Vector(buffer._tab.Offset(4))
            found["weights"].append((start, start + buffer.DataLength()))
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        table(graph._tab)
        vector(graph, 4, "tables")
        vector(graph, 10, "tables")
        vector(graph, 6, "index")
        vector(graph, 8, "index")
        for t in range(graph.TensorsLength()):
            tensor = graph.Tensors(t)
            table(tensor._tab)
            vector(tensor, 4, "shape")
            vector(tensor, 10)  # the name
            scalar(tensor, 6, "tensor_type", "<b")
            scalar(tensor, 8, "index", "<I")
            quant = tensor.Quantization()
            if quant is not None:
                scalar(tensor, 12, "offset", "<I")
                table(quant._tab)
                vector(quant, 8, "quantization", "<f")
                vector(quant, 10, "quantization", "<q")
                scalar(quant, 16, "quantization", "<i")
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            table(op._tab)
            scalar(op, 4, "index", "<I")
            vector(op, 6, "index")
            vector(op, 8, "index")
            options = op.BuiltinOptions()
            if options is not None:
                scalar(op, 12, "offset", "<I")
                table(options)
    return found


# --- mutations -----------------------------------------------------------------------------------


def _write(data: bytearray, pos: int, fmt: str, value) -> str:
    """Writes `value` at `pos` in `fmt` (integers wrapped to the field's width); returns the note."""
    old = struct.unpack_from(fmt, data, pos)[0]
    if fmt[-1] != "f":
        bits = 8 * struct.calcsize(fmt)
        value = int(value) % (1 << bits)
        if fmt[-1].islower() and value >= 1 << (bits - 1):  # signed field
            value -= 1 << bits
    struct.pack_into(fmt, data, pos, value)
    return f"{fmt[1:]} at {pos}: {old} -> {value}"


def _position(rng: random.Random, data: bytes, loc) -> int:
    """A byte position: half the time outside the weights, where the structure lives."""
    if rng.random() < 0.5:
        return rng.randrange(len(data))
    weights = sorted(loc["weights"])
    gaps, previous = [], 0
    for start, end in weights:
        if start > previous:
            gaps.append((previous, start))
        previous = max(previous, end)
    gaps.append((previous, len(data)))
    low, high = rng.choices(gaps, weights=[b - a for a, b in gaps])[0]
    return rng.randrange(low, high)


def bit_flip(data, rng, loc):
    out, notes = bytearray(data), []
    for _ in range(rng.choice((1, 2, 4, 8))):
        pos, bit = _position(rng, data, loc), rng.randrange(8)
        out[pos] ^= 1 << bit
        notes.append(f"{pos}.{bit}")
    return bytes(out), "flipped bits " + " ".join(notes)


def boundary_bytes(data, rng, loc):
    out, notes = bytearray(data), []
    for _ in range(rng.choice((1, 2, 4))):
        pos, run, value = _position(rng, data, loc), rng.choice((1, 2, 4, 8)), rng.choice(BOUNDARY_BYTES)
        out[pos : pos + run] = bytes([value]) * len(out[pos : pos + run])
        notes.append(f"{run}x{value:#04x} at {pos}")
    return bytes(out), ", ".join(notes)


def truncate(data, rng, loc):
    cut = rng.choice((rng.randrange(64), rng.randrange(len(data)), len(data) - 1 - rng.randrange(4096)))
    return data[:cut], f"cut to {cut} of {len(data)} bytes"


def chunk(data, rng, loc):
    pos, size = _position(rng, data, loc), rng.choice((1, 3, 4, 16, 64, 4096))
    how = rng.choice(("remove", "duplicate", "copy"))
    if how == "remove":
        return data[:pos] + data[pos + size :], f"removed {size} bytes at {pos}"
    if how == "duplicate":
        return data[: pos + size] + data[pos : pos + size] + data[pos + size :], f"duplicated {size} bytes at {pos}"
    source = _position(rng, data, loc)
    out = bytearray(data)
    piece = data[source : source + size]
    out[pos : pos + len(piece)] = piece[: len(out) - pos]
    return bytes(out), f"copied {size} bytes from {source} to {pos}"


def header(data, rng, loc):
    out = bytearray(data)
    how = rng.choice(("root", "identifier", "swap", "size_prefix"))
    if how == "root":
        value = rng.choice(BOUNDARY_INTS + (len(data), len(data) - 4, rng.randrange(len(data)), 4, 8))
        data, note = _bytes_with(out, 0, "<I", value)
        return data, "root offset " + note
    if how == "identifier":
        ident = rng.choice((b"TFL2", b"tfl3", b"\0\0\0\0", b"\xff\xff\xff\xff",
                            bytes(rng.randrange(256) for _ in range(4))))
        out[4:8] = ident
        return bytes(out), f"identifier {ident!r}"
    if how == "swap":
        out[0:4], out[4:8] = data[4:8], data[0:4]
        return bytes(out), "root offset and identifier swapped"
    return struct.pack("<I", len(data)) + data, "size-prefixed"


def _bytes_with(out: bytearray, pos: int, fmt: str, value) -> tuple[bytes, str]:
    note = _write(out, pos, fmt, value)
    return bytes(out), note


def _field_mutator(kind: str, values):
    """A mutation class that rewrites one located field of `kind` with `values(rng, old, fmt, file size)`."""

    def mutate(data, rng, loc):
        pos, fmt = rng.choice(loc[kind])
        old = struct.unpack_from(fmt, data, pos)[0]
        return _bytes_with(bytearray(data), pos, fmt, values(rng, old, fmt, len(data)))

    mutate.__name__ = kind
    return mutate


def _int_values(extra):
    def values(rng, old, fmt, size):
        if fmt[-1] == "f":
            return rng.choice(BAD_FLOATS)
        if fmt[-1] == "q":
            return rng.choice((2**63 - 1, -(2**63), 128, -129, 256, 1000))
        return rng.choice(BOUNDARY_INTS + extra(rng, old, size))

    return values


MUTATORS = {
    "bit_flip": bit_flip,
    "boundary_bytes": boundary_bytes,
    "truncate": truncate,
    "chunk": chunk,
    "header": header,
    "offset": _field_mutator("offset", _int_values(
        lambda rng, old, size: (old + 4, old - 4, size, rng.randrange(size)))),
    "vtable": _field_mutator("vtable", _int_values(lambda rng, old, size: (old + 2, old - 2, old + 4, 2, 4))),
    "vector_length": _field_mutator("vector_length", _int_values(lambda rng, old, size: (old + 1, old * 2, size // 4))),
    "index": _field_mutator("index", _int_values(lambda rng, old, size: (old + 1, old - 1, rng.randrange(256)))),
    "tensor_type": _field_mutator("tensor_type", lambda rng, old, fmt, size: rng.choice(
        tuple(range(23)) + (23, 100, 127, -1))),
    "shape": _field_mutator("shape", _int_values(lambda rng, old, size: (old * 2, old + 1, rng.randrange(4096)))),
    "quantization": _field_mutator("quantization", _int_values(lambda rng, old, size: (4, 1000, -1))),
}


def cases(total: int = MUTATIONS, models=MODELS):
    """`total` seeded mutations (rounded up to a multiple of models x classes), each class equally often."""
    per = -(-total // (len(models) * len(MUTATORS)))
    for model in models:
        data = (SHIPPED / f"{model}.tflite").read_bytes()
        loc = locate(data)
        for kind, mutate in MUTATORS.items():
            for i in range(per):
                mutated, note = mutate(data, random.Random(f"{model}/{kind}/{i}"), loc)
                yield Case(model, kind, i, note, mutated)


class UnvalidatedChild(ChildProbe):
    """The probe's child with validation switched off: the interpreter sees each file as it is
    (INT4 models still go through the object-API unpacking first). For comparison only."""

    child_code = ("import tfdefakeq.runtime.interpreter as i; i.validate_flatbuffer = lambda data, label: None; "
                  "from tfdefakeq.runtime.validate import _serve; _serve({limit!r})")


def run_campaign(all_cases, workdir: Path, validate: bool = True, timeout_s: float = 60.0) -> list[Outcome]:
    """Each case through the harness: validation here, then load + invoke in a child when it passes.

    `validate=False` skips validation (here and in the child) to show what the interpreter alone does.
    """
    out = []
    probe_class = ChildProbe if validate else UnvalidatedChild
    with probe_class(timeout_s=timeout_s, memory_limit_bytes=CHILD_MEMORY_BYTES) as probe:
        for case in all_cases:
            path = workdir / case.name
            path.write_bytes(case.data)
            start = time.perf_counter()
            try:
                if validate:
                    check_tflite_file(path)
            except UserError as e:
                out.append(Outcome(case, path, "rejected", str(e), time.perf_counter() - start))
            else:
                result = probe.run(path)
                outcome = {"ok": "ran"}.get(result.status, result.status)
                out.append(Outcome(case, path, outcome, result.message, time.perf_counter() - start))
            path.unlink()
    return out


def tally(outcomes) -> dict[tuple[str, str], Counter]:
    """{(model, class): Counter(outcome)}."""
    table = defaultdict(Counter)
    for o in outcomes:
        table[(o.case.model, o.case.kind)][o.outcome] += 1
    return table


# --- the test ------------------------------------------------------------------------------------


def test_mutations_are_deterministic():
    first = [(c.note, c.data) for c in cases(48)]
    assert [(c.note, c.data) for c in cases(48)] == first
    assert len(first) == 48 and len({d for _, d in first}) > 40  # nearly all distinct


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    start = time.perf_counter()
    outcomes = run_campaign(cases(), tmp_path_factory.mktemp("fuzz"))
    return outcomes, time.perf_counter() - start


def test_fuzzed_models_never_crash_the_harness(campaign):
    outcomes, seconds = campaign
    assert len(outcomes) >= 500
    counts = Counter(o.outcome for o in outcomes)
    print(f"\n{len(outcomes)} mutations in {seconds:.1f} s: {dict(counts)}")
    for (model, kind), c in sorted(tally(outcomes).items()):
        print(f"  {model:18s} {kind:15s} {dict(c)}")
    assert set(counts) <= set(OUTCOMES)
    # this process is still here; every failure is a one-line UserError naming the file
    for o in outcomes:
        if o.outcome != "ran":
            assert o.message.startswith(f"{o.path}: ") and "\n" not in o.message, o.message
    # a crash that validation misses (it checks tensors one by one; kernels also abort on scale ratios
    # between tensors) ends only the child, as a UserError; at this seed there are none, and more than
    # a few would mean validation has lost ground
    crashes = [(o.case.name, o.case.note, o.message) for o in outcomes if o.outcome in ("crashed", "timeout")]
    assert all("crashed the TFLite interpreter" in m or "took over" in m for _, _, m in crashes)
    assert len(crashes) <= len(outcomes) // 100, crashes
    assert counts["rejected"] > len(outcomes) / 2  # the validator catches most damage before any interpreter
    assert counts["ran"] > 0 and counts["error"] > 0  # lets sound structure through, to the interpreter's own checks


def test_truncated_and_misaddressed_files_never_reach_the_interpreter(campaign):
    outcomes, _ = campaign
    for o in outcomes:
        if o.case.kind in ("truncate", "header"):
            assert o.outcome == "rejected", (o.case.note, o.outcome, o.message)
