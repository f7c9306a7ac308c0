"""The one way a `.tflite` a user names is opened: by every command and every notebook helper.

Trust is earned by bytes, not by a sidecar. `admit_model(path)` reads the file ONCE, validates those
bytes (`validate.validate_flatbuffer`), hashes them (SHA-256) and reads the sidecar manifest
(`NAME.manifest.json`) when there is one, checking the fields the runtime uses. The model is then
opened in this process without further ado only when its bytes hash to the `sha256` its manifest
records (what `tfdefakeq.convert` writes), or to the `expected_sha256` a caller that made the bytes
itself passes. Every other file (no manifest, a manifest without a hash, a hash that differs: a
manifest copied beside another file proves nothing) is first loaded and invoked once in a child
process (`tfdefakeq.runtime.probe`, ~0.4 s), so that a file that crashes the C++ interpreter ends the
child and this process raises a one-line UserError. The bytes checked are the bytes the interpreter
gets (`model_content`), and the child checks it read the same bytes.

- `load_model(path)` -> (TFLiteModel, Manifest): evaluate, predict, robustness, scoring, notebooks.
- `open_model(path)` -> TFLiteModel: bench (no preprocessing needed), convert's parity check.
- `admit_model(path)` -> ModelFile (bytes admitted): diagnose's tensor-by-tensor interpreter, bench --profile.
- `load_interpreter(path)` -> a bare interpreter: the face detector.

`edgetpu` never opens an interpreter on the model (it parses the validated flatbuffer in Python).

    >>> model, manifest = load_model("tflite_models/resnet18_64_int8.tflite")   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfdefakeq.core.errors import UserError
from tfdefakeq.core.manifest import Manifest, manifest_path
from tfdefakeq.runtime.interpreter import TFLiteModel, open_interpreter
from tfdefakeq.runtime.probe import ProbeResult, probe_in_child
from tfdefakeq.runtime.validate import read_tflite

SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def sha256_hex(data) -> str:
    """Hex SHA-256 of `data` (the bytes of a model): what a manifest's `sha256` records."""
    return hashlib.sha256(memoryview(data)).hexdigest()


@dataclass
class ModelFile:
    """A model file as admitted: its bytes (validated, and probed unless trusted) and its manifest."""

    path: Path
    data: bytes  # the bytes validated, hashed and handed to the interpreter
    sha256: str
    manifest_path: Path
    manifest: Manifest | None  # the sidecar, checked; None when there is none
    trusted: bool  # the bytes hash to the manifest's (or the caller's) sha256
    probe: ProbeResult | None = None  # the child's run, when there was one

    @property
    def trust(self) -> str:
        """Why the file was or was not opened without a probe, in a few words."""
        if self.trusted:
            return "bytes match the recorded sha256"
        if self.manifest is None:
            return "no manifest"
        return "manifest records no sha256" if not self.manifest.sha256 else "bytes differ from the manifest's sha256"


def read_model_file(path, expected_sha256: str | None = None) -> ModelFile:
    """Reads, validates and hashes `path`, and reads its sidecar manifest (checked) when present.

    `expected_sha256`: the caller made these bytes and vouches for them by hash; a file that hashes
    otherwise raises UserError. Without it, the file is trusted when its manifest records its hash.
    """
    path = Path(path)
    data = read_tflite(path)
    digest = sha256_hex(data)
    sidecar = manifest_path(path)
    manifest = read_manifest(sidecar) if sidecar.exists() else None
    if expected_sha256 is not None:
        if digest != expected_sha256:
            raise UserError(f"{path}: the file's SHA-256 {digest[:12]}... is not the {expected_sha256[:12]}... "
                            "of the bytes that were written")
        trusted = True
    else:
        trusted = manifest is not None and manifest.sha256 == digest
    return ModelFile(path, data, digest, sidecar, manifest, trusted)


def admit_model(path, num_threads: int = 1, use_xnnpack: bool = True, unpack_packed: bool = True,
                probe: bool = False, expected_sha256: str | None = None) -> ModelFile:
    """`read_model_file`, then the child probe under the same settings unless the bytes are trusted
    (`probe=True` probes a trusted file too). Raises UserError naming the file when the child could
    not load and run it, or crashed."""
    model_file = read_model_file(path, expected_sha256)
    if probe or not model_file.trusted:
        model_file.probe = probe_in_child(model_file.path, num_threads=num_threads, use_xnnpack=use_xnnpack,
                                          unpack_packed=unpack_packed, sha256=model_file.sha256)
    return model_file


def open_model(path, num_threads: int = 1, use_xnnpack: bool = True, unpack_packed: bool = True,
               probe: bool = False, expected_sha256: str | None = None) -> TFLiteModel:
    """The TFLiteModel of an admitted `path` (`admit_model`); a manifest present must match its input shape."""
    model, _ = _open(path, num_threads, use_xnnpack, unpack_packed, probe, expected_sha256)
    return model


def load_model(path, num_threads: int = 1, use_xnnpack: bool = True, unpack_packed: bool = True,
               probe: bool = False, expected_sha256: str | None = None) -> tuple[TFLiteModel, Manifest]:
    """Admits and opens `path` -> (TFLiteModel, Manifest).

    Without a sidecar manifest, warns on stderr and uses Manifest defaults (normalisation
    (x - 128) / 128) with the input shape read from the model. A manifest whose sha256 is not the
    file's is still used for preprocessing (after the probe), with a warning. Raises UserError when
    the manifest is malformed or its input shape disagrees with the model's.
    """
    model, model_file = _open(path, num_threads, use_xnnpack, unpack_packed, probe, expected_sha256)
    manifest = model_file.manifest
    if manifest is None:
        fmt = "float32" if model.input_dtype is np.float32 else "int8"
        manifest = Manifest(backbone="unknown", input_shape=list(model.input_shape[1:]), format=fmt, scheme="unknown")
        print(f"tfdefakeq: warning: {model_file.manifest_path} not found; using default preprocessing "
              f"(x - {manifest.preprocess.mean}) / {manifest.preprocess.std}", file=sys.stderr)
    elif not model_file.trusted:
        print(f"tfdefakeq: warning: {model_file.manifest_path}: {model_file.trust}; the model was checked in a "
              "child process, but this manifest may not describe it", file=sys.stderr)
    return model, manifest


def load_interpreter(path, num_threads: int = 1, use_xnnpack: bool = True, unpack_packed: bool = True):
    """An allocated interpreter on an admitted `path` (any inputs and outputs: not only detectors)."""
    model_file = admit_model(path, num_threads, use_xnnpack, unpack_packed)
    return open_interpreter(model_file.data, model_file.path, num_threads, use_xnnpack, unpack_packed).interpreter


def _open(path, num_threads, use_xnnpack, unpack_packed, probe, expected_sha256) -> tuple[TFLiteModel, ModelFile]:
    if num_threads < 1:
        raise UserError(f"--threads must be >= 1, got {num_threads}")
    model_file = admit_model(path, num_threads, use_xnnpack, unpack_packed, probe, expected_sha256)
    model = TFLiteModel(model_file.path, num_threads=num_threads, use_xnnpack=use_xnnpack,
                        unpack_packed=unpack_packed, data=model_file.data)
    if model_file.manifest is not None:
        model_hwc = list(model.input_shape[1:])
        if [int(d) for d in model_file.manifest.input_shape] != model_hwc:
            raise UserError(f"{model_file.manifest_path}: input_shape {list(model_file.manifest.input_shape)} "
                            f"does not match the model's {model_hwc}")
    return model, model_file


def read_manifest(sidecar) -> Manifest:
    """The manifest at `sidecar`, with the fields the runtime uses checked (a manifest is user input).

    Raises UserError "`sidecar`: not a valid manifest (...)" naming the first bad field.
    """
    try:
        manifest = Manifest.load(sidecar)
    except (TypeError, ValueError, AttributeError) as e:  # JSON of the wrong shape
        raise UserError(f"{sidecar}: not a valid manifest ({' '.join(str(e).split())})") from e
    problem = manifest_problem(manifest)
    if problem:
        raise UserError(f"{sidecar}: not a valid manifest ({problem})")
    return manifest


def manifest_problem(manifest: Manifest) -> str:
    """What is wrong with the fields of `manifest` the runtime reads, or "" when nothing is."""
    shape = manifest.input_shape
    if (not isinstance(shape, list) or len(shape) != 3 or not all(_is_int(d) and 0 < d <= 65536 for d in shape)
            or shape[2] != 3):
        return f"input_shape {shape!r} is not [height, width, 3] with positive sizes"
    for name in ("mean", "std"):
        value = getattr(manifest.preprocess, name)
        if not _is_real(value) or not math.isfinite(value):
            return f"preprocess.{name} {value!r} is not a finite number"
    if manifest.preprocess.std == 0:
        return "preprocess.std is 0"
    for name in ("backbone", "format", "scheme", "sha256"):
        if not isinstance(getattr(manifest, name), str):
            return f"{name} {getattr(manifest, name)!r} is not a string"
    if manifest.sha256 and not SHA256_HEX.fullmatch(manifest.sha256):
        return f"sha256 {manifest.sha256[:80]!r} is not 64 lowercase hex digits"
    if not isinstance(manifest.train_generators, list) or not all(isinstance(g, str) for g in manifest.train_generators):
        return "train_generators is not a list of names"
    if not isinstance(manifest.threshold, dict):
        return f"threshold {str(manifest.threshold)[:80]!r} is not an object"
    value = manifest.threshold.get("value")
    if value is not None and not (_is_real(value) and 0 < value < 1):  # NaN fails the comparison too
        return f"threshold.value {str(value)[:80]!r} is not a probability between 0 and 1 (exclusive)"
    return ""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
