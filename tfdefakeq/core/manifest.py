"""The manifest that travels with every `.tflite`: what the model is and how to feed it.

A `.tflite` at `DIR/NAME.tflite` has its manifest at `DIR/NAME.manifest.json`. The runtime reads it
to apply the same preprocessing as training; no TensorFlow needed.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tfdefakeq.core.fileio import read_json, write_json_atomic


@dataclass
class Preprocess:
    """uint8 RGB image -> model input: `(pixel - mean) / std`, after a center crop to the input size.

    The default maps pixels to [-1, 127/128] so that an int8 input with scale 1/128 and zero point 0
    holds `pixel - 128` exactly: quantizing the input loses nothing of the faint artifacts.
    """

    mean: float | list[float] = 128.0  # one value, or one per channel (in `channel_order`)
    std: float | list[float] = 128.0
    channel_order: str = "rgb"  # "bgr": channels reversed first (keras.applications' caffe mode)

    def apply(self, images_uint8):
        import numpy as np

        x = np.asarray(images_uint8, dtype=np.float32)
        if self.channel_order == "bgr":
            x = x[..., ::-1]
        return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)

    def input_range(self) -> tuple[float, float]:
        """(lowest, highest) model input over all channels for pixels 0..255: the int8 input range."""
        import numpy as np

        ends = self.apply(np.array([[0, 0, 0], [255, 255, 255]], np.uint8))
        return float(ends.min()), float(ends.max())


@dataclass
class Manifest:
    backbone: str
    input_shape: list[int]  # [height, width, channels]
    format: str  # "keras" | "float32" | "int8" | "int4" ("int4": packed weights, INT4 and, for 2-bit layers, INT2)
    scheme: str = "float"  # quantization scheme name, e.g. "tfmot_int8", "w4a8"
    preprocess: Preprocess = field(default_factory=Preprocess)
    weight_bits: dict[str, int] = field(default_factory=dict)  # layer name -> bits of its weights
    salient_channels: dict[str, list[int]] = field(default_factory=dict)  # conv -> input channels kept at 8 bits
    per_tensor: list[str] = field(default_factory=list)  # layers whose kernel has one scale (adaptive plans)
    activation_bits: int | None = None
    dataset: str = ""
    train_generators: list[str] = field(default_factory=list)  # generators seen in training (empty: all)
    metrics: dict = field(default_factory=dict)
    # the decision threshold on P(fake) and how it was chosen ({"value", "method", ...}: runtime.threshold);
    # empty in manifests written before thresholds were calibrated (the verbs then use 0.5 and say so)
    threshold: dict = field(default_factory=dict)
    size_bytes: int | None = None
    sha256: str = ""  # hex SHA-256 of the .tflite's bytes: the runtime skips the child probe only when they match
    # the converter's tensor names by tensor index (the .tflite names its tensors by index to save bytes;
    # runtime.unpack.shorten_tensor_names); empty: the file keeps its own names
    tensor_names: list[str] = field(default_factory=list)
    build_kwargs: dict = field(default_factory=dict)  # extra builder arguments (width, alpha)
    # weights or a model from outside: {"file", "sha256", "format", ...} (tfdefakeq.port) or {"file"} (a user's
    # Keras model, tfdefakeq.engine.importer, backbone "custom")
    source: dict = field(default_factory=dict)
    # which class of the source model's head is "fake"; for backbone "custom" the sha256 of the
    # normalised architecture JSON stored beside the weights
    fake_class: int | None = None
    architecture_sha256: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    command: str = ""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "Manifest":
        obj = dict(obj)
        obj["preprocess"] = Preprocess(**obj.get("preprocess", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in known})

    def save(self, path, overwrite: bool = True) -> Path:
        return write_json_atomic(path, self.to_json(), overwrite=overwrite)

    @classmethod
    def load(cls, path) -> "Manifest":
        return cls.from_json(read_json(path))


def manifest_path(model_path) -> Path:
    """`DIR/NAME.tflite` or `DIR/NAME.weights.h5` -> `DIR/NAME.manifest.json`."""
    model_path = Path(model_path)
    name = model_path.name
    stem = name[: -len(".weights.h5")] if name.endswith(".weights.h5") else model_path.stem
    return model_path.with_name(stem + ".manifest.json")


def versions() -> dict[str, str]:
    """Versions of the parts that made or run a model, without importing TensorFlow."""
    from importlib import metadata

    out = {"python": platform.python_version(), "machine": f"{platform.system()} {platform.machine()}"}
    for dist in ("tfdefakeq", "tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def command_line(argv: list[str] | None = None, main_module=None) -> str:
    """The command as the user typed it: `python -m tfdefakeq.VERB ...` for our modules.

    The module name comes from `__main__.__spec__` (set by `python -m`), else from `argv[0]`
    resolved against this package's real location: a clone in a folder itself named `tfdefakeq`
    must not turn into `tfdefakeq.tfdefakeq.VERB`.
    """
    import shlex

    argv = list(sys.argv if argv is None else argv)
    main_module = sys.modules.get("__main__") if main_module is None else main_module
    program = argv[0] if argv else ""
    module = _our_module(getattr(main_module, "__spec__", None), program)
    if module:
        head = ["python", "-m", module]
    else:
        head = ["python", program] if program else ["python"]
    return shlex.join(head + argv[1:])


def _our_module(spec, program: str) -> str | None:
    """`tfdefakeq.VERB` when the running program is one of our modules, else None."""
    name = getattr(spec, "name", None) or ""
    if name == "tfdefakeq" or name.startswith("tfdefakeq."):
        return name.removesuffix(".__main__")
    if not program.endswith(".py"):
        return None
    package_dir = Path(__file__).resolve().parent.parent  # .../tfdefakeq (this file is core/manifest.py)
    try:
        rel = Path(program).resolve().relative_to(package_dir.parent)
    except ValueError:
        return None
    if rel.parts[0] != package_dir.name:
        return None
    return ".".join(rel.with_suffix("").parts).removesuffix(".__main__")
