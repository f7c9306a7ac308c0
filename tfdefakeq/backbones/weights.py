"""Load keras.applications weights (an .h5 saved by `model.save_weights`, e.g. the ImageNet files
Colab downloads) into our backbones.

Layers are matched by name. keras.applications leaves a few layers unnamed (Xception's residual 1x1
convs and their BatchNorms: `conv2d_3`, `batch_normalization_7`, ... depending on the session); those
are matched in order with our layers that no name matched, weight shapes checked one by one.
"""

from __future__ import annotations

import numpy as np

import re

from tfdefakeq.core.errors import UserError

# keras.applications' input normalisation (EfficientNet's Normalization statistics): ours lives in
# the manifest's Preprocess, not in the graph, so these stored layers have no counterpart.
_PREPROCESSING = re.compile(r"^normalization(_\d+)?$")


def _read_h5(path) -> list[tuple[str, list[np.ndarray]]]:
    import h5py

    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        out = []
        for name in group.attrs["layer_names"]:
            name = name.decode() if isinstance(name, bytes) else name
            g = group[name]
            weight_names = [w.decode() if isinstance(w, bytes) else w for w in g.attrs["weight_names"]]
            if weight_names:
                out.append((name, [np.asarray(g[w]) for w in weight_names]))
        return out


# Our layers that a backbone's weights file need not hold: the detector head (a keras.applications
# file without its top has none, one with its top has 1,000 classes) and the fixed high-pass front end.
# They are loaded when the file has them with our shapes, left as built otherwise.
OPTIONAL_LAYERS = ("predictions", "highpass")


def load_keras_weights(model, path, partial: bool = False, optional=OPTIONAL_LAYERS) -> dict[str, str]:
    """Sets `model`'s weights from the .h5 at `path`. Returns {our layer: file layer} for every layer
    loaded.

    Strict by default: every layer of ours with weights, but the `optional` ones, must be matched (by
    name, else the file's unnamed layers in order) with weights of the same shapes; otherwise a
    UserError names the layers and loads nothing. `partial=True` loads what matches and leaves the
    rest as built (the caller lists them: the layers of `model` with weights missing from the result).
    """
    try:
        stored = _read_h5(path)
    except (OSError, KeyError) as e:
        raise UserError(f"{path}: not a Keras weights file ({e.__class__.__name__}: {str(e).splitlines()[0][:160]})") from e
    optional = set(optional)
    ours = {layer.name: layer for layer in model.layers if layer.weights}
    shapes = {name: [tuple(w.shape) for w in layer.weights] for name, layer in ours.items()}
    mapping, leftovers = {}, []
    for name, weights in stored:
        if name in ours:
            mapping[name] = name
        elif not _PREPROCESSING.match(name):
            leftovers.append((name, weights))
    unmatched = [name for name in ours if name not in mapping and name not in optional]
    if len(unmatched) == len(leftovers):
        for ours_name, (file_name, _) in zip(unmatched, leftovers):
            mapping[ours_name] = file_name
    elif not partial:
        holds = (f"its {len(leftovers)} other layers ({', '.join(n for n, _ in leftovers[:5])}) do not match" if leftovers
                 else "it holds no weights")
        raise UserError(f"{path}: covers less than the backbone: {holds} for {len(unmatched)} of our layers "
                        f"({', '.join(unmatched[:5])}{', ...' if len(unmatched) > 5 else ''}); pass --partial to load what matches")
    stored = dict(stored)
    for ours_name, file_name in list(mapping.items()):
        if shapes[ours_name] != [w.shape for w in stored[file_name]]:
            if not (partial or ours_name in optional):
                raise UserError(f"{path}: layer {file_name} has weights {[w.shape for w in stored[file_name]]}, "
                                f"ours {ours_name} {shapes[ours_name]}")
            del mapping[ours_name]
    for ours_name, file_name in mapping.items():
        ours[ours_name].set_weights(stored[file_name])
    return mapping


def not_loaded(model, mapping: dict[str, str]) -> list[str]:
    """Our layers with weights that `mapping` (load_keras_weights' result) left as built, in graph order."""
    return [layer.name for layer in model.layers if layer.weights and layer.name not in mapping]
