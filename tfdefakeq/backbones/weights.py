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


def load_keras_weights(model, path) -> dict[str, str]:
    """Sets `model`'s weights from the .h5 at `path`. Returns {our layer: file layer} for every layer
    loaded. Raises UserError when a layer with weights stays unmatched or a shape differs."""
    stored = _read_h5(path)
    ours = {layer.name: layer for layer in model.layers if layer.weights}
    mapping, leftovers = {}, []
    for name, weights in stored:
        if name in ours:
            mapping[name] = name
        elif not _PREPROCESSING.match(name):
            leftovers.append((name, weights))
    unmatched = [name for name in ours if name not in mapping]
    if len(unmatched) != len(leftovers):
        raise UserError(f"{path}: {len(leftovers)} unnamed stored layers ({', '.join(n for n, _ in leftovers[:5])}) "
                        f"for {len(unmatched)} of ours ({', '.join(unmatched[:5])})")
    stored = dict(stored)
    for ours_name, (file_name, _) in zip(unmatched, leftovers):
        mapping[ours_name] = file_name
    for ours_name, file_name in mapping.items():
        layer, weights = ours[ours_name], stored[file_name]
        shapes = [tuple(w.shape) for w in layer.weights]
        if shapes != [w.shape for w in weights]:
            raise UserError(f"{path}: layer {file_name} has weights {[w.shape for w in weights]}, ours {ours_name} {shapes}")
        layer.set_weights(weights)
    return mapping
