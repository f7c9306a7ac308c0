"""Saving and loading Keras detectors (float or QAT) with their manifest.

A detector is stored as weights only (`NAME.weights.h5`) beside its manifest
(`NAME.manifest.json`), which names the backbone, its build arguments, the quantization scheme and
the bits per layer. Loading rebuilds the graph from our own code and then reads the weights: no
layer config or code is taken from the file (safer than deserializing a model), and tfmot QAT
models round-trip exactly (tf-keras' `.keras` format fails on tfmot's QuantizeLayer variables).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tfdefakeq.core.errors import UserError
from tfdefakeq.core.fileio import check_writable, json_bytes, publish_together, stage_bytes
from tfdefakeq.core.manifest import Manifest, manifest_path

WEIGHTS_SUFFIX = ".weights.h5"


def save_detector(model, path, manifest: Manifest, overwrite: bool = False) -> Path:
    """Writes the weights to `path` (NAME.weights.h5) and the manifest beside it, atomically."""
    path = Path(path)
    if not path.name.endswith(WEIGHTS_SUFFIX):
        raise UserError(f"{path}: a detector path must end in {WEIGHTS_SUFFIX}")
    check_writable(path, overwrite=overwrite)
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


def build_detector(manifest: Manifest, calib_images=None):
    """The (untrained) Keras graph a manifest describes: the backbone, quantized by its scheme."""
    from tfdefakeq.backbones import build

    model = build(manifest.backbone, input_shape=tuple(manifest.input_shape), **manifest.build_kwargs)
    if manifest.scheme == "float":
        return model
    from tfdefakeq.quant import quantize

    from tfdefakeq.quant.qat import get_scheme

    if get_scheme(manifest.scheme).adaptive:  # the plan is in the manifest: nothing to measure
        return quantize(model, manifest.scheme, calib_images, bit_plan=manifest.weight_bits,
                        salient_channels=manifest.salient_channels)
    return quantize(model, manifest.scheme, calib_images, bit_plan=manifest.weight_bits or None)


def load_detector(path):
    """Loads a float or QAT detector saved by `save_detector`: (model, manifest)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such model file")
    mpath = manifest_path(path)
    if not mpath.is_file():
        raise UserError(f"{mpath}: manifest missing (detectors are saved with one by tfdefakeq.train)")
    manifest = Manifest.load(mpath)
    if manifest.format != "keras":
        raise UserError(f"{mpath}: describes a {manifest.format} model, not Keras weights")
    model = build_detector(manifest)
    try:
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path}: weights do not load into {manifest.backbone}/{manifest.scheme} ({str(e).splitlines()[0][:200]})") from e
    return model, manifest
