"""A seeded mutation campaign over the shipped models: untrusted files must never crash the harness.

Each mutation (of the `.tflite` bytes, or of its manifest) is written to a file with a manifest beside
it and opened through a command's own loader, in a worker process that stands for the user's process:
`bench`, `evaluate` or `predict` (`main(parse_args(argv))`, on a one-image dataset). The manifest is
either "matching" (it records the SHA-256 of the mutated bytes: the loader trusts them and opens them
in the worker itself, with validation as the only defence) or "copied" (the shipped model's manifest:
the hash differs, so the loader tries the file in a child process first). The worker's death is a
harness crash (`harness_crashed`), the outcome the campaign exists to rule out.

Used by tests/runtime/test_fuzz.py (CI: every shipped model, >= 500 mutations) and by
benchmarks/reliability.py (>= 10,000).

    >>> outcomes = run_campaign(cases(600), Path("/tmp/fuzz"))          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import struct
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfdefakeq.core.errors import UserError
from tfdefakeq.core.manifest import manifest_path
from tfdefakeq.runtime.probe import ChildProbe, serve

SHIPPED = Path(__file__).resolve().parents[2] / "tflite_models"
MODELS = ("resnet18_64_int8", "resnet18_64_int4", "resnet18_64_adaptive-avg3", "resnet18_64_adaptive-avg2.5")
MUTATIONS = 544  # CI: 8 per model and class (4 models x 17 classes)
ENTRY_POINTS = ("bench", "evaluate", "predict")
MANIFEST_MODES = ("matching", "copied")
# rejected: a one-line error before any interpreter sees the file (validation); manifest_rejected: the
# manifest's fields; ran: the command completed; error: the interpreter refused it with an error (one line);
# probe_crashed / probe_timeout: the interpreter died or hung in the loader's child, reported in one line;
# uncaught: a Python traceback (a bug); harness_crashed / harness_timeout: the worker itself died or hung
OUTCOMES = ("rejected", "manifest_rejected", "ran", "error", "probe_crashed", "probe_timeout", "uncaught",
            "harness_crashed", "harness_timeout")
FAILURES = ("uncaught", "harness_crashed", "harness_timeout")
WORKER_MEMORY_BYTES = 8 * 2**30  # a shape asking for terabytes fails in the worker, not in the machine's swap

BOUNDARY_BYTES = (0x00, 0xFF, 0x7F, 0x80)
BOUNDARY_INTS = (0, 1, -1, -2, 0x7FFFFFFF, -0x80000000, 0x7FFF, 0xFFFF, 65536, 1 << 20)
BAD_FLOATS = (math.nan, math.inf, -math.inf, 0.0, -1.0, 1e38, 1e-45)


@dataclass
class Case:
    model: str
    kind: str  # a key of MUTATORS or MANIFEST_MUTATORS
    index: int
    note: str  # what was changed, e.g. "u32 at 1232: 1024 -> 4294967295"
    data: bytes
    manifest: dict | None = None  # a tampered manifest (manifest classes), else None: the shipped one
    entry: str = "bench"  # the command whose loader opens it: one of ENTRY_POINTS
    manifest_mode: str = "matching"  # one of MANIFEST_MODES

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
                vector(quant, 8, "scale", "<f")
                vector(quant, 10, "zero_point", "<q")
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


def _field_mutator(kind: str, values, kinds: tuple[str, ...] = ()):
    """A mutation class that rewrites one located field of `kind` (or of any of `kinds`) with
    `values(rng, old, fmt, file size)`."""

    def mutate(data, rng, loc):
        pos, fmt = rng.choice([p for k in (kinds or (kind,)) for p in loc[k]])
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


SCALE_VALUES = {  # the scale mutation class: category -> values (float32)
    "huge": (1e38, 3.4e38, 1e30, 1e10), "tiny": (1e-45, 1e-39, 1e-30, 1e-20), "zero": (0.0, -0.0),
    "negative": (-1.0, -1e-3, -1e38), "nan": (math.nan,), "inf": (math.inf, -math.inf),
}
ZERO_POINT_VALUES = {  # the zero_point mutation class: category -> values (int64)
    "huge": (2**63 - 1, 2**31, 1 << 40), "negative": (-(2**63), -(2**31) - 1, -129, -9),
    "edge": (127, -128, 128, 255, 256, 7, 8), "random": (),
}


def _scale_mutator(data, rng, loc):
    """One scale set to a value of a category of SCALE_VALUES (the note names the category)."""
    pos, fmt = rng.choice(loc["scale"])
    category = rng.choice(sorted(SCALE_VALUES))
    value = rng.choice(SCALE_VALUES[category])
    if category != "zero" and rng.random() < 0.5 and category in ("huge", "tiny"):
        old = struct.unpack_from(fmt, data, pos)[0]
        value = old * (1e7 if category == "huge" else 1e-7)  # plausible alone, wrong next to its neighbours
    out, note = _bytes_with(bytearray(data), pos, fmt, value)
    return out, f"{category} scale: {note}"


def _zero_point_mutator(data, rng, loc):
    """One zero point set to a value of a category of ZERO_POINT_VALUES."""
    pos, fmt = rng.choice(loc["zero_point"])
    category = rng.choice(sorted(ZERO_POINT_VALUES))
    value = rng.choice(ZERO_POINT_VALUES[category]) if ZERO_POINT_VALUES[category] else rng.randrange(-300, 300)
    out, note = _bytes_with(bytearray(data), pos, fmt, value)
    return out, f"{category} zero point: {note}"


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
    "quantization": _field_mutator("quantization", _int_values(lambda rng, old, size: (4, 1000, -1)),
                                   kinds=("scale", "zero_point", "quantization")),
    "scale": _scale_mutator,
    "zero_point": _zero_point_mutator,
}


# --- manifest tampering: the model's bytes are left alone ------------------------------------------


def _no_hash(manifest: dict, rng: random.Random) -> tuple[dict, str]:
    manifest = dict(manifest)
    how = rng.choice(("removed", "empty", "other"))
    if how == "removed":
        manifest.pop("sha256", None)
    elif how == "empty":
        manifest["sha256"] = ""
    else:
        manifest["sha256"] = "%064x" % rng.getrandbits(256)
    return manifest, f"sha256 {how}"


def _input_shape(manifest: dict, rng: random.Random) -> tuple[dict, str]:
    manifest = dict(manifest)
    value = rng.choice(([32, 32, 3], [64, 64, 1], [64, 64], [0, 64, 3], [-64, 64, 3], [2**31, 64, 3], "64x64x3",
                        None, [64.5, 64, 3], [True, 64, 3], [[64], 64, 3], [64, 64, 3, 1]))
    manifest["input_shape"] = value
    return manifest, f"input_shape {value!r}"


def _preprocess(manifest: dict, rng: random.Random) -> tuple[dict, str]:
    manifest = dict(manifest)
    value = rng.choice(({"mean": 128.0, "std": 0.0}, {"mean": math.nan, "std": 128.0}, {"mean": 128.0, "std": math.inf},
                        {"mean": "128", "std": 128.0}, {"mean": 128.0, "std": None}, {"mean": 1e300, "std": 1e-300},
                        {"mean": 0.0, "std": -1.0}, {"scale": 2.0}, [128.0, 128.0], None, {"mean": True, "std": 1}))
    manifest["preprocess"] = value
    return manifest, f"preprocess {value!r}"


MANIFEST_MUTATORS = {"manifest_hash": _no_hash, "manifest_input_shape": _input_shape,
                     "manifest_preprocess": _preprocess}
ALL_CLASSES = tuple(MUTATORS) + tuple(MANIFEST_MUTATORS)


def shipped_manifest(model: str) -> dict:
    return json.loads(manifest_path(SHIPPED / f"{model}.tflite").read_text())


def cases(total: int = MUTATIONS, models=MODELS, classes=ALL_CLASSES):
    """`total` seeded mutations (rounded up to a multiple of models x classes), each class equally often,
    made one at a time in rounds over every model and class (a run cut short still covers them all);
    the commands and manifest modes rotate, so that each (model, class) meets all of them."""
    per = -(-total // (len(models) * len(classes)))
    shipped = {}
    for model in models:
        data = (SHIPPED / f"{model}.tflite").read_bytes()
        shipped[model] = (data, shipped_manifest(model), locate(data))
    for i in range(per):
        for m, model in enumerate(models):
            data, manifest, loc = shipped[model]
            for k, kind in enumerate(classes):
                rng = random.Random(f"{model}/{kind}/{i}")
                turn = i + m + k  # every (model, class) meets every command and manifest in turn
                entry, mode = ENTRY_POINTS[turn % len(ENTRY_POINTS)], MANIFEST_MODES[(turn // len(ENTRY_POINTS)) % 2]
                if kind in MANIFEST_MUTATORS:
                    tampered, note = MANIFEST_MUTATORS[kind](manifest, rng)
                    yield Case(model, kind, i, note, data, tampered, entry, mode)
                else:
                    mutated, note = MUTATORS[kind](data, rng, loc)
                    yield Case(model, kind, i, note, mutated, None, entry, mode)


def case_manifest(case: Case) -> dict:
    """The manifest written beside the case's file: "matching" records the SHA-256 of its bytes
    (kept as tampered for the hash class), "copied" is the shipped model's (or its tampered copy) as is."""
    manifest = dict(case.manifest if case.manifest is not None else shipped_manifest(case.model))
    if case.manifest_mode == "matching" and not (case.kind == "manifest_hash"):
        from tfdefakeq.runtime.loader import sha256_hex

        manifest["sha256"] = sha256_hex(case.data)
    return manifest


# --- the worker: a command's own loader, in a process whose death is counted ------------------------


class EntryWorker(ChildProbe):
    """A worker python that runs a command (`bench`, `evaluate`, `predict`) on one file per request."""

    child_code = "from tfdefakeq.runtime.fuzz import _serve_entries; _serve_entries({limit!r})"

    def run_entry(self, path, entry: str, data_root, image):
        return self.ask({"path": str(path), "entry": entry, "data_root": str(data_root), "image": str(image)}, path)


def _serve_entries(memory_limit_bytes=None) -> None:
    serve(memory_limit_bytes, _run_entry)


def _run_entry(path: str, entry: str, data_root: str, image: str) -> dict:
    import importlib

    argv = {"bench": [path, "--runs", "1", "--warmup", "0"],
            "evaluate": [path, "--data", data_root, "--split", "test"],
            "predict": [path, image]}[entry]
    module = importlib.import_module(f"tfdefakeq.{entry}")
    try:
        module.main(module.parse_args(argv))
    except UserError as e:
        return {"status": "error", "message": str(e)}
    except SystemExit as e:
        return {"status": "error", "message": f"{path}: exit {e.code}"}
    except Exception as e:  # noqa: BLE001 - a traceback a user would see: counted as a bug
        return {"status": "uncaught", "message": f"{path}: {type(e).__name__}: {' '.join(str(e).split())[:200]}"}
    return {"status": "ok"}


def make_inputs(workdir: Path) -> tuple[Path, Path]:
    """A one-generator test split (one real, one fake 64x64 image) and one image: what evaluate and
    predict read."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = workdir / "data"
    for cls in ("0_real", "1_fake"):
        folder = root / "test" / "noise" / cls
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "a.png")
    return root, root / "test" / "noise" / "0_real" / "a.png"


def classify(status: str, message: str) -> str:
    """A worker's reply -> one of OUTCOMES."""
    if status == "ok":
        return "ran"
    if status == "crashed":
        return "harness_crashed"
    if status == "timeout":
        return "harness_timeout"
    if status == "uncaught":
        return "uncaught"
    if "crashed the TFLite interpreter in a child process" in message:
        return "probe_crashed"
    if "took over" in message and "child process stopped" in message:
        return "probe_timeout"
    if "not a valid manifest" in message or "does not match the model's" in message:
        return "manifest_rejected"
    if "invalid TFLite model" in message or "not a TFLite flatbuffer" in message:
        return "rejected"
    return "error"


def run_campaign(all_cases, workdir: Path, timeout_s: float = 120.0, progress=None) -> list[Outcome]:
    """Each case through its command's loader in the worker; a dead worker is restarted and counted."""
    workdir.mkdir(parents=True, exist_ok=True)
    data_root, image = make_inputs(workdir)
    out = []
    with EntryWorker(timeout_s=timeout_s, memory_limit_bytes=WORKER_MEMORY_BYTES) as worker:
        for n, case in enumerate(all_cases):
            path = workdir / case.name
            path.write_bytes(case.data)
            manifest_path(path).write_text(json.dumps(case_manifest(case)))
            start = time.perf_counter()
            result = worker.run_entry(path, case.entry, data_root, image)
            outcome = classify(result.status, result.message)
            kept = dataclasses.replace(case, data=b"")  # the bytes are ~1 MB: a long campaign keeps only the note
            out.append(Outcome(kept, path, outcome, result.message, time.perf_counter() - start))
            path.unlink()
            manifest_path(path).unlink()
            if progress is not None:
                progress(n + 1, out[-1])
    return out


class UnvalidatedChild(ChildProbe):
    """The probe's child with validation switched off: the interpreter sees each file as it is
    (packed models still go through the object-API unpacking first). For comparison only."""

    child_code = ("import tfdefakeq.runtime.probe as p; p.read_tflite = lambda path: open(path, 'rb').read(); "
                  "p.serve({limit!r})")


def tally(outcomes, key=lambda o: (o.case.model, o.case.kind)) -> dict:
    """{key(outcome): Counter(outcome)}; default key (model, class)."""
    table = defaultdict(Counter)
    for o in outcomes:
        table[key(o)][o.outcome] += 1
    return table
