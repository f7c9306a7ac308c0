"""A `.tflite` detector behind one small class, with no TensorFlow: numpy + a TFLite interpreter.

The interpreter is `ai_edge_litert.interpreter.Interpreter` (pip install tfdefakeq[edge]); the older
`tflite_runtime` is the fallback where litert has no wheel, and only with numpy<2.

Every detector made by `tfdefakeq.convert` has one input (1, H, W, 3) and one output (1, 1) that is
a LOGIT (no sigmoid in the graph): `predict_logits` returns it dequantized, `predict_proba` returns
`sigmoid(logit)`, the probability that the image is fake.

A user's file is opened through `tfdefakeq.runtime.loader` (`load_model`, `open_model`), which
validates it, hashes it and, unless its bytes match its manifest's SHA-256, first runs it in a child
process. This module only turns bytes already checked into an interpreter (`open_interpreter`) and
wraps it (`TFLiteModel`):

    >>> model, manifest = load_model("tflite_models/resnet18_64_int8.tflite")   # doctest: +SKIP
    >>> model.predict_proba(load_images(paths, model.image_size), manifest.preprocess)  # doctest: +SKIP

A model with packed INT4 (or INT2) weights is unpacked to INT8 in memory before the interpreter
sees it (`unpack_packed=True`, the default; see `tfdefakeq.runtime.unpack`): XNNPACK has no INT4
convolution, so the packed model would run 4-5x slower. The file on disk stays packed.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfdefakeq.core.errors import UserError
from tfdefakeq.runtime.validate import check_tflite_file, read_tflite  # noqa: F401 - check_tflite_file re-exported
from tfdefakeq.core.stderr import dropping


@dataclass(frozen=True)
class Runtime:
    """The interpreter implementation found on this machine."""

    name: str  # "ai-edge-litert" | "tflite-runtime"
    version: str
    interpreter_class: type
    op_resolver_type: object | None  # the OpResolverType enum, None when the runtime has none


def find_runtime() -> Runtime:
    """Imports ai_edge_litert, else tflite_runtime. Raises UserError when neither can be used."""
    import importlib

    litert_error = ""
    try:
        mod = importlib.import_module("ai_edge_litert.interpreter")
    except ImportError as e:
        mod = None
        if not (isinstance(e, ModuleNotFoundError) and (e.name or "").startswith("ai_edge_litert")):
            litert_error = f" (ai_edge_litert is installed but fails to import: {_one_line(e)})"
    if mod is not None:
        return Runtime(
            "ai-edge-litert",
            _dist_version("ai-edge-litert", "ai_edge_litert"),
            mod.Interpreter,
            getattr(mod, "OpResolverType", None),
        )
    try:
        pkg = importlib.import_module("tflite_runtime")
    except ImportError:
        raise UserError(
            f"no TFLite interpreter installed: install tfdefakeq[edge] (pip install ai-edge-litert){litert_error}"
        ) from None
    version = getattr(pkg, "__version__", None) or _dist_version("tflite-runtime", "tflite_runtime")
    if int(np.__version__.split(".")[0]) >= 2:
        # tflite-runtime wheels (<= 2.14) are built against numpy 1.x and crash under numpy 2.
        raise UserError(
            f"tflite_runtime {version} does not work with numpy {np.__version__}: install "
            "tfdefakeq[edge] (pip install ai-edge-litert), or pip install 'numpy<2'"
        )
    try:
        mod = importlib.import_module("tflite_runtime.interpreter")
    except ImportError as e:
        raise UserError(f"tflite_runtime {version} cannot be imported ({e}): install tfdefakeq[edge]") from e
    return Runtime("tflite-runtime", version, mod.Interpreter, getattr(mod, "OpResolverType", None))


def _dist_version(dist: str, module: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return str(getattr(sys.modules.get(module), "__version__", "unknown"))


# TFLite's MinimalLogger prints this on every load, from C++, with no setting to turn it off
DELEGATE_INFO = re.compile(r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$")


@dataclass
class LoadedInterpreter:
    """An allocated interpreter and what it took to make it."""

    interpreter: object
    runtime: Runtime
    size_bytes: int  # of the model as stored (packed)
    init_ms: float  # unpacking (if any) + interpreter construction + allocate_tensors
    unpack_ms: float  # part of init_ms spent unpacking INT4/INT2 weights (0 when nothing was unpacked)
    unpacked_tensors: int  # tensors handed to the interpreter as INT8 instead of INT4/INT2
    content: bytes  # the bytes given as model_content (kept alive with the interpreter)


def open_interpreter(data: bytes, label, num_threads: int = 1, use_xnnpack: bool = True,
                     unpack_packed: bool = True) -> LoadedInterpreter:
    """An allocated interpreter on `data`, the bytes of a model ALREADY checked by
    `validate.validate_flatbuffer` (and, for a user's file, admitted by `tfdefakeq.runtime.loader`).

    `use_xnnpack=False` selects `BUILTIN_WITHOUT_DEFAULT_DELEGATES` (the plain builtin kernels).
    `unpack_packed=True` hands the interpreter the model with packed INT4/INT2 weights unpacked to
    INT8 (same integer arithmetic, int8 speed); False gives it `data` as it is.
    Raises UserError naming `label` when the interpreter refuses the model.
    """
    from tfdefakeq.runtime.unpack import unpacked_content

    if num_threads < 1:
        raise UserError(f"--threads must be >= 1, got {num_threads}")
    runtime = find_runtime()
    kwargs = {"num_threads": int(num_threads)}
    if not use_xnnpack:
        if runtime.op_resolver_type is None:
            raise UserError(f"{runtime.name} {runtime.version} cannot disable XNNPACK (no OpResolverType)")
        kwargs["experimental_op_resolver_type"] = runtime.op_resolver_type.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    start = time.perf_counter()
    content, unpacked, unpack_ms = bytes(data), 0, 0.0
    if unpack_packed:
        try:
            unpacked_bytes, unpacked = unpacked_content(content)
        except UserError as e:
            raise UserError(f"{label}: {e}") from e
        if unpacked_bytes is not None:
            content = unpacked_bytes
            unpack_ms = (time.perf_counter() - start) * 1e3
    try:
        with dropping(DELEGATE_INFO):
            interpreter = runtime.interpreter_class(model_content=content, **kwargs)
            interpreter.allocate_tensors()
    except ValueError as e:
        raise UserError(f"{label}: not a TFLite flatbuffer ({runtime.name}: {_one_line(e)})") from e
    except RuntimeError as e:
        raise UserError(f"{label}: {runtime.name} cannot load this model ({_one_line(e)})") from e
    init_ms = (time.perf_counter() - start) * 1e3
    return LoadedInterpreter(interpreter, runtime, len(data), init_ms, unpack_ms, unpacked, content)


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or e.__class__.__name__


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float32."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out.astype(np.float32)


class TFLiteModel:
    """A single-input, single-logit TFLite detector.

    Opened on `data` (bytes validated and admitted by `tfdefakeq.runtime.loader`, which is how every
    command opens a user's file) or, without `data`, on the file at `path` read and validated here but
    NOT tried in a child process first: only for files this process made.

    Attributes: `path`, `interpreter`, `runtime` (Runtime), `size_bytes`, `init_ms` (interpreter
    construction + allocate_tensors, and unpacking when it happened), `num_threads`, `use_xnnpack`,
    `unpack_packed`, `unpack_ms`, `unpacked_tensors` (INT4/INT2 tensors run as INT8), `input_shape` (1, H, W, 3),
    `input_dtype` (np.float32 / np.int8 / np.uint8), `input_quant` and `output_quant`
    ((scale, zero_point); scale 0.0 means not quantized), `image_size` (H, W), `input_details` and
    `output_details` (the interpreter's tensor details).
    """

    def __init__(self, path, num_threads: int = 1, use_xnnpack: bool = True, unpack_packed: bool = True,
                 data: bytes | None = None):
        self.path = Path(path)
        self.num_threads = int(num_threads)
        self.use_xnnpack = bool(use_xnnpack)
        self.unpack_packed = bool(unpack_packed)
        if num_threads < 1:
            raise UserError(f"--threads must be >= 1, got {num_threads}")
        loaded = open_interpreter(read_tflite(path) if data is None else data, path, num_threads, use_xnnpack,
                                  unpack_packed)
        self.interpreter, self.runtime, self.size_bytes, self.init_ms = (
            loaded.interpreter, loaded.runtime, loaded.size_bytes, loaded.init_ms)
        self.unpack_ms, self.unpacked_tensors = loaded.unpack_ms, loaded.unpacked_tensors
        self._content = loaded.content  # the interpreter reads these bytes: keep them alive
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(
                f"{path}: expected a detector with 1 input and 1 output, found {len(inputs)} and {len(outputs)}"
            )
        self.input_details, self.output_details = inputs[0], outputs[0]
        shape = tuple(int(d) for d in self.input_details["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise UserError(f"{path}: expected an input of shape (1, H, W, 3), found {shape}")
        if self.input_details["dtype"] not in (np.float32, np.int8, np.uint8):
            raise UserError(f"{path}: unsupported input type {np.dtype(self.input_details['dtype']).name}")
        if int(np.prod(self.output_details["shape"])) != 1:
            raise UserError(
                f"{path}: expected one logit per image (output shape (1, 1)), found {tuple(self.output_details['shape'])}"
            )
        self.input_shape = shape
        self.input_dtype = np.dtype(self.input_details["dtype"]).type
        self.input_quant = _quant(self.input_details)
        self.output_quant = _quant(self.output_details)
        if self.input_dtype is not np.float32 and self.input_quant[0] == 0.0:
            raise UserError(f"{path}: integer input without quantization parameters")

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) the images must be cropped to."""
        return self.input_shape[1], self.input_shape[2]

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Normalised float input -> the input tensor's dtype (round + clip when integer)."""
        if self.input_dtype is np.float32:
            return np.asarray(x, dtype=np.float32)
        scale, zero_point = self.input_quant
        info = np.iinfo(self.input_dtype)
        q = np.round(np.asarray(x, dtype=np.float32) / scale) + zero_point
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def invoke_raw(self, x: np.ndarray) -> np.ndarray:
        """Runs one input tensor already in the input dtype and shape; returns the raw output."""
        self.interpreter.set_tensor(self.input_details["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_details["index"])

    def predict_logits(self, images_uint8: np.ndarray, preprocess) -> np.ndarray:
        """uint8 images (N, H, W, 3) -> float32 logits (N,), dequantized from the output tensor.

        `preprocess` is the manifest's `Preprocess` (its `apply` maps uint8 to the float input).
        """
        images = np.asarray(images_uint8)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1:] != self.input_shape[1:]:
            raise UserError(
                f"{self.path}: images of shape {images.shape[1:]} do not match the model input {self.input_shape[1:]}"
            )
        logits = np.empty(len(images), dtype=np.float32)
        scale, zero_point = self.output_quant
        for i in range(len(images)):  # the converted models have a fixed batch of 1
            x = self.quantize_input(preprocess.apply(images[i : i + 1]))
            raw = self.invoke_raw(x).reshape(-1)[0]
            logits[i] = (float(raw) - zero_point) * scale if scale else float(raw)
        return logits

    def predict_proba(self, images_uint8: np.ndarray, preprocess) -> np.ndarray:
        """uint8 images (N, H, W, 3) -> float32 (N,) probability that each image is fake.

        The model output is always a logit (tfdefakeq.convert exports no sigmoid), so this is
        `sigmoid(predict_logits(...))`.
        """
        return sigmoid(self.predict_logits(images_uint8, preprocess))

    def __repr__(self) -> str:
        return (
            f"TFLiteModel({str(self.path)!r}, input={self.input_shape} {np.dtype(self.input_dtype).name}, "
            f"{self.runtime.name} {self.runtime.version}, threads={self.num_threads}, xnnpack={self.use_xnnpack}, "
            f"unpacked_tensors={self.unpacked_tensors})"
        )


def _quant(details: dict) -> tuple[float, int]:
    scale, zero_point = details.get("quantization", (0.0, 0))
    return float(scale), int(zero_point)


def machine_info() -> dict[str, str]:
    """Where a measurement was taken: architecture, CPU model name, its int8 extensions (runtime.amx:
    whether AMX is there and denied changes int8 latency several-fold), OS, python, CPU count."""
    from tfdefakeq.runtime.amx import int8_isa

    return {
        "machine": platform.machine(),
        "processor": cpu_name(),
        "int8_isa": int8_isa(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpus": str(os.cpu_count() or ""),
    }


def cpu_name() -> str:
    """CPU/board from /proc/cpuinfo (Pi: 'Model', x86: 'model name'), else platform.processor()."""
    from tfdefakeq.runtime.amx import cpuinfo_fields

    fields = cpuinfo_fields()
    for key in ("model", "model name", "hardware", "cpu model"):  # x86 'model' is a number: skipped
        value = fields.get(key, "")
        if value and not value.isdigit():
            return value
    return platform.processor() or platform.machine()
