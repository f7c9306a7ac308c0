"""Saving and loading Keras detectors (float or QAT) with their manifest.

A detector is stored as weights only (`NAME.weights.h5`) beside its manifest
(`NAME.manifest.json`), which names the backbone, its build arguments, the quantization scheme and
the bits per layer. Loading rebuilds the graph from our own code and then reads the weights: no
layer config or code is taken from the file (safer than deserializing a model), and tfmot QAT
models round-trip exactly (tf-keras' `.keras` format fails on tfmot's QuantizeLayer variables).

A user's model (backbone "custom", `tfdefakeq.engine.importer`) has no builder of ours: its
normalised float architecture is stored beside the weights (`NAME.architecture.json`), checked as
data (stock layers only, no Lambda) and against the manifest's `architecture_sha256`, then built
with safe mode. `load_detector` also takes a user's `.keras` / full-model `.h5` file directly.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tfdefakeq.core.errors import UserError
from tfdefakeq.core.fileio import check_writable, json_bytes, publish_together, stage_bytes
from tfdefakeq.core.manifest import Manifest, manifest_path

WEIGHTS_SUFFIX = ".weights.h5"
ARCHITECTURE_SUFFIX = ".architecture.json"


def architecture_path(weights_path) -> Path:
    """`DIR/NAME.weights.h5` -> `DIR/NAME.architecture.json` (custom detectors only)."""
    weights_path = Path(weights_path)
    return weights_path.with_name(weights_path.name[: -len(WEIGHTS_SUFFIX)] + ARCHITECTURE_SUFFIX)


def save_detector(model, path, manifest: Manifest, overwrite: bool = False, architecture: str | None = None) -> Path:
    """Writes the weights to `path` (NAME.weights.h5) and the manifest beside it, atomically.

    A custom detector (manifest.backbone "custom") also needs `architecture`: the normalised float
    model's JSON (`importer.architecture_json`), written beside them."""
    import hashlib
    import json

    from tfdefakeq.core.fileio import write_text_atomic

    path = Path(path)
    if not path.name.endswith(WEIGHTS_SUFFIX):
        raise UserError(f"{path}: a detector path must end in {WEIGHTS_SUFFIX}")
    check_writable(path, overwrite=overwrite)
    if manifest.backbone == "custom":
        if architecture is None:
            raise ValueError("a custom detector is saved with its architecture JSON")
        canonical = json.dumps(json.loads(architecture), sort_keys=True, separators=(",", ":"))
        if manifest.architecture_sha256 and hashlib.sha256(canonical.encode()).hexdigest() != manifest.architecture_sha256:
            raise ValueError("architecture JSON does not match manifest.architecture_sha256")
        write_text_atomic(architecture_path(path), canonical, overwrite=True)
    staged_manifest = stage_bytes(manifest_path(path), json_bytes(manifest.to_json()))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=WEIGHTS_SUFFIX, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # h5py writes a new file; only the unique name is wanted
    try:
        model.save_weights(tmp, overwrite=True)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    except BaseException as e:
        for staged in (tmp, staged_manifest):
            if os.path.exists(staged):
                os.unlink(staged)
        if isinstance(e, OSError):
            raise UserError(f"{path}: cannot write ({e.strerror or e})") from e
        raise
    # published together (fileio.publish_together): the weights never stand without their manifest
    publish_together((Path(tmp), path), (staged_manifest, manifest_path(path)))
    return path


def build_detector(manifest: Manifest, calib_images=None, architecture_file=None):
    """The (untrained) Keras graph a manifest describes: the backbone, quantized by its scheme.
    A custom backbone is built from `architecture_file` (see the module docstring)."""
    if manifest.backbone == "custom":
        from tfdefakeq.engine.importer import rebuild_architecture

        if architecture_file is None or not Path(architecture_file).is_file():
            raise UserError(f"{architecture_file}: architecture missing (a custom detector is rebuilt from it)")
        model = rebuild_architecture(Path(architecture_file).read_text(), architecture_file, manifest.architecture_sha256)
    else:
        from tfdefakeq.backbones import build

        model = build(manifest.backbone, input_shape=tuple(manifest.input_shape), **manifest.build_kwargs)
    if manifest.scheme == "float":
        return model
    from tfdefakeq.quant import quantize

    from tfdefakeq.quant.qat import get_scheme

    input_range = manifest.preprocess.input_range()
    if get_scheme(manifest.scheme).adaptive:  # the plan is in the manifest: nothing to measure
        return quantize(model, manifest.scheme, calib_images, bit_plan=manifest.weight_bits,
                        salient_channels=manifest.salient_channels, per_tensor=manifest.per_tensor, input_range=input_range)
    return quantize(model, manifest.scheme, calib_images, bit_plan=manifest.weight_bits or None, input_range=input_range)


def import_detector(path, fake_class: int | None = None, preprocess: str | None = None):
    """A user's `.keras` / `.h5` model as a float detector: (model, manifest, architecture JSON)."""
    from tfdefakeq.core.manifest import command_line, versions
    from tfdefakeq.engine.importer import architecture_json, load_user_model

    model, fields = load_user_model(path, fake_class=fake_class, preprocess=preprocess)
    manifest = Manifest(format="keras", versions=versions(), command=command_line(), **fields)
    return model, manifest, architecture_json(model)


def load_detector(path, fake_class: int | None = None, preprocess: str | None = None):
    """Loads a float or QAT detector saved by `save_detector`, or a user's `.keras` / full-model
    `.h5` file (imported as a float custom detector, `fake_class` and `preprocess` as in
    `importer.load_user_model`): (model, manifest)."""
    from tfdefakeq.engine.importer import is_user_model_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such model file")
    if is_user_model_file(path):
        model, manifest, _ = import_detector(path, fake_class, preprocess)
        return model, manifest
    for flag, value in (("--fake-class", fake_class), ("--preprocess", preprocess)):
        if value is not None:
            raise UserError(f"{path}: {flag} applies to a Keras model file (.keras / .h5) being imported; "
                            "a tfdefakeq detector's manifest already says it")
    mpath = manifest_path(path)
    if not mpath.is_file():
        raise UserError(f"{mpath}: manifest missing (detectors are saved with one by tfdefakeq.train)")
    manifest = Manifest.load(mpath)
    if manifest.format != "keras":
        raise UserError(f"{mpath}: describes a {manifest.format} model, not Keras weights")
    model = build_detector(manifest, architecture_file=architecture_path(path))
    try:
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path}: weights do not load into {manifest.backbone}/{manifest.scheme} ({str(e).splitlines()[0][:200]})") from e
    return model, manifest
