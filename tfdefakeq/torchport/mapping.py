"""PyTorch state dicts -> our Keras twins, layer by layer.

Each family lists its (Keras layer, torch module prefix) pairs; the conversion follows the Keras layer
type: Conv2D OIHW -> HWIO, DepthwiseConv2D (C, 1, kh, kw) -> (kh, kw, C, 1), SeparableConv2D = a
depthwise `conv1` + a 1x1 `pointwise` (Cadene's 2-D pointwise weights too), BatchNormalization
(gamma, beta, running mean, running var), Dense (out, in) -> (in, out). Every expected key is checked
against the file before anything is built: missing and unexpected keys and shape mismatches are
reported in one line (the first few names and shapes, and the count).

Heads: our detectors have one logit for "fake". A 1-logit head is taken as it is (negated when
`fake_class=0`); a 2-logit head becomes `z_fake - z_real` (the same softmax probability); larger
heads are refused. DeepfakeBench's `backbone.` / DataParallel's `module.` prefixes are stripped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tfdefakeq.core.errors import UserError

_PREFIXES = ("module.", "backbone.", "model.", "net.")
_IGNORED_SUFFIXES = ("num_batches_tracked",)


@dataclass
class Family:
    """How one backbone's torch checkpoints are laid out."""

    backbone: str
    torch_layout: str
    heads: tuple[str, ...]  # candidate module names of the final Linear, first found wins
    normalize: tuple = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # torchvision's ImageNet mean/std
    strip: tuple[str, ...] = ()  # extra module prefixes to strip (DeepfakeBench's `efficientnet.`)
    ignore: tuple[str, ...] = ()  # modules in the file that the detector does not use
    reference: str = ""
    extra_kwargs: dict = field(default_factory=dict)


FAMILIES = {
    "resnet18": Family("resnet18", "torchvision", ("fc",), reference="torchvision.models.resnet18"),
    "resnet34": Family("resnet34", "torchvision", ("fc",), reference="torchvision.models.resnet34"),
    "resnet50": Family("resnet50", "torchvision", ("fc",), reference="torchvision.models.resnet50 (v1.5; CNNDetection)"),
    "mobilenet_v2": Family("mobilenet_v2", "torchvision", ("classifier.1",), reference="torchvision.models.mobilenet_v2"),
    # DeepfakeBench's xception.yaml normalises with mean = std = 0.5; its Xception always holds an
    # (unused unless mode='adjust_channel') adjust_channel block.
    "xception": Family("xception", "deepfakebench", ("last_linear.1", "last_linear", "fc"), normalize=((0.5,) * 3, (0.5,) * 3),
                       ignore=("adjust_channel.",), reference="DeepfakeBench networks/xception.py (Cadene layout)"),
    "efficientnet_b0": Family("efficientnet_b0", "efficientnet_pytorch", ("last_layer", "_fc"), strip=("efficientnet.",),
                              ignore=("adjust_channel.",), reference="efficientnet_pytorch efficientnet-b0"),
    "efficientnet_b4": Family("efficientnet_b4", "efficientnet_pytorch", ("last_layer", "_fc"), strip=("efficientnet.",),
                              ignore=("adjust_channel.",), reference="efficientnet_pytorch efficientnet-b4 / DeepfakeBench"),
}


def normalize_keys(state: dict, family: Family) -> dict[str, np.ndarray]:
    """Strips `module.` / `backbone.` (and the family's own) prefixes; drops BN step counters."""
    out = {}
    prefixes = _PREFIXES + family.strip
    for key, value in state.items():
        name = key
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if name.startswith(p):
                    name, changed = name[len(p):], True
        if name.endswith(_IGNORED_SUFFIXES) or name.startswith(family.ignore):
            continue
        out[name] = value
    return out


# ---------------------------------------------------------------------------------------------
# (Keras layer, torch prefix) pairs per family. A SeparableConv2D maps to a torch SeparableConv2d
# module (its `conv1` + `pointwise`); the head is handled apart.


def _resnet_pairs(depths, bottleneck: bool):
    pairs = [("conv1_conv", "conv1"), ("conv1_bn", "bn1")]
    convs = 3 if bottleneck else 2
    for stage, blocks in enumerate(depths):
        for block in range(blocks):
            k, t = f"conv{stage + 2}_block{block + 1}", f"layer{stage + 1}.{block}"
            for i in range(1, convs + 1):
                pairs += [(f"{k}_{i}_conv", f"{t}.conv{i}"), (f"{k}_{i}_bn", f"{t}.bn{i}")]
            pairs += [(f"{k}_0_conv", f"{t}.downsample.0"), (f"{k}_0_bn", f"{t}.downsample.1")]
    return pairs


def _mobilenet_v2_pairs():
    pairs = [("Conv1", "features.0.0"), ("bn_Conv1", "features.0.1"),
             ("expanded_conv_depthwise", "features.1.conv.0.0"), ("expanded_conv_depthwise_BN", "features.1.conv.0.1"),
             ("expanded_conv_project", "features.1.conv.1"), ("expanded_conv_project_BN", "features.1.conv.2")]
    for b in range(1, 17):
        k, t = f"block_{b}_", f"features.{b + 1}.conv"
        pairs += [(k + "expand", t + ".0.0"), (k + "expand_BN", t + ".0.1"), (k + "depthwise", t + ".1.0"),
                  (k + "depthwise_BN", t + ".1.1"), (k + "project", t + ".2"), (k + "project_BN", t + ".3")]
    return pairs + [("Conv_1", "features.18.0"), ("Conv_1_bn", "features.18.1")]


def _xception_pairs():
    pairs = [("block1_conv1", "conv1"), ("block1_conv1_bn", "bn1"), ("block1_conv2", "conv2"), ("block1_conv2_bn", "bn2")]
    # torch BlockN = our block N+1; its `rep` Sequential interleaves ReLUs: separable convs sit at
    # 0, 3 (block1, no leading ReLU) or 1, 4, 7, each followed by its BatchNorm.
    for n in range(1, 13):
        k, t = f"block{n + 1}", f"block{n}"
        reps = 3 if 4 <= n <= 11 else 2
        first = 0 if n == 1 else 1
        for j in range(reps):
            pairs += [(f"{k}_sepconv{j + 1}", f"{t}.rep.{first + 3 * j}"), (f"{k}_sepconv{j + 1}_bn", f"{t}.rep.{first + 3 * j + 1}")]
        if not 4 <= n <= 11:
            pairs += [(f"{k}_residual_conv", f"{t}.skip"), (f"{k}_residual_bn", f"{t}.skipbn")]
    return pairs + [("block14_sepconv1", "conv3"), ("block14_sepconv1_bn", "bn3"),
                    ("block14_sepconv2", "conv4"), ("block14_sepconv2_bn", "bn4")]


def _efficientnet_pairs(model):
    pairs = [("stem_conv", "_conv_stem"), ("stem_bn", "_bn0")]
    blocks = sorted({layer.name.split("_")[0] for layer in model.layers if layer.name.startswith("block")},
                    key=lambda s: (int(s[5:-1]), s[-1]))
    for n, b in enumerate(blocks):
        t = f"_blocks.{n}"
        for k, m in (("expand_conv", "_expand_conv"), ("expand_bn", "_bn0"), ("dwconv", "_depthwise_conv"), ("bn", "_bn1"),
                     ("se_reduce", "_se_reduce"), ("se_expand", "_se_expand"), ("project_conv", "_project_conv"),
                     ("project_bn", "_bn2")):
            pairs.append((f"{b}_{k}", f"{t}.{m}"))
    return pairs + [("top_conv", "_conv_head"), ("top_bn", "_bn1")]


def layer_pairs(backbone: str, model) -> list[tuple[str, str]]:
    """(Keras layer name, torch module prefix) for every weighted layer but the head and the
    fixed torch_normalize layer; pairs whose Keras layer the graph lacks (no shortcut conv) are dropped."""
    if backbone in ("resnet18", "resnet34", "resnet50"):
        depths = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3]}[backbone]
        pairs = _resnet_pairs(depths, backbone == "resnet50")
    elif backbone == "mobilenet_v2":
        pairs = _mobilenet_v2_pairs()
    elif backbone == "xception":
        pairs = _xception_pairs()
    elif backbone.startswith("efficientnet"):
        pairs = _efficientnet_pairs(model)
    else:
        raise UserError(f"--backbone {backbone}: no PyTorch mapping (known: {', '.join(sorted(FAMILIES))})")
    names = {layer.name for layer in model.layers}
    return [(k, t) for k, t in pairs if k in names]


# ---------------------------------------------------------------------------------------------
# Per-layer conversion: what the torch tensors must look like, and how they become Keras weights.


def _torch_conv_shape(kernel_shape):
    kh, kw, cin, cout = kernel_shape
    return (cout, cin, kh, kw)


def expected_tensors(layer, prefix: str) -> dict[str, tuple]:
    """torch key -> shape that Keras `layer` needs."""
    from tfdefakeq.core.tfcompat import keras

    L = keras.layers
    w = [tuple(v.shape) for v in layer.weights]
    if isinstance(layer, L.SeparableConv2D):
        kh, kw, cin, _ = w[0]
        out = {f"{prefix}.conv1.weight": (cin, 1, kh, kw), f"{prefix}.pointwise.weight": _torch_conv_shape(w[1])}
        if layer.use_bias:
            out[f"{prefix}.pointwise.bias"] = w[2]
        return out
    if isinstance(layer, L.DepthwiseConv2D):
        kh, kw, cin, mult = w[0]
        out = {f"{prefix}.weight": (cin * mult, 1, kh, kw)}
    elif isinstance(layer, L.Conv2D):
        out = {f"{prefix}.weight": _torch_conv_shape(w[0])}
    elif isinstance(layer, L.BatchNormalization):
        return {f"{prefix}.{n}": w[0] for n in ("weight", "bias", "running_mean", "running_var")}
    else:
        raise TypeError(f"no torch mapping for {type(layer).__name__} {layer.name}")
    if layer.use_bias:
        out[f"{prefix}.bias"] = w[1]
    return out


def keras_weights(layer, prefix: str, state: dict) -> list[np.ndarray]:
    """The Keras weights of `layer` from torch tensors `state[prefix.*]` (shapes already checked)."""
    from tfdefakeq.core.tfcompat import keras

    L = keras.layers
    f = lambda k: np.asarray(state[f"{prefix}.{k}"], np.float32)  # noqa: E731
    if isinstance(layer, L.SeparableConv2D):
        pointwise = f("pointwise.weight")
        pointwise = pointwise.reshape(pointwise.shape[:2] + (1, 1)) if pointwise.ndim == 2 else pointwise
        out = [f("conv1.weight").transpose(2, 3, 0, 1), pointwise.transpose(2, 3, 1, 0)]
        return out + ([f("pointwise.bias")] if layer.use_bias else [])
    if isinstance(layer, L.DepthwiseConv2D):
        kh, kw, cin, mult = layer.weights[0].shape
        kernel = f("weight").reshape(cin, mult, kh, kw).transpose(2, 3, 0, 1)  # torch out channel = c * mult + m
        return [kernel] + ([f("bias")] if layer.use_bias else [])
    if isinstance(layer, L.Conv2D):
        return [f("weight").transpose(2, 3, 1, 0)] + ([f("bias")] if layer.use_bias else [])
    if isinstance(layer, L.BatchNormalization):
        return [f("weight"), f("bias"), f("running_mean"), f("running_var")]
    raise TypeError(f"no torch mapping for {type(layer).__name__} {layer.name}")


def _shape_of(value) -> tuple:
    return tuple(np.shape(value))


def _describe(items, limit: int = 3) -> str:
    shown = ", ".join(f"{k} {list(s)}" for k, s in items[:limit])
    return shown + (", ..." if len(items) > limit else "")


def find_head(state: dict, family: Family) -> str:
    """The torch prefix of the final Linear (the family's last candidate when none is there: then
    check_fit reports it missing with the rest)."""
    for head in family.heads:
        if np.ndim(state.get(head + ".weight")) == 2:
            return head
    return family.heads[-1]


def head_weights(weight: np.ndarray, bias: np.ndarray | None, fake_class: int | None, path) -> list[np.ndarray]:
    """A (K, in) Linear -> our Dense(1) [(in, 1), (1,)] giving the logit of "fake"."""
    weight = np.asarray(weight, np.float32)
    bias = np.zeros(weight.shape[0], np.float32) if bias is None else np.asarray(bias, np.float32)
    logits = weight.shape[0]
    if logits == 1:
        if fake_class not in (None, 0, 1):
            raise UserError(f"{path}: --fake-class {fake_class} but the head has a single logit (fake class 1, or 0 to negate it)")
        sign = -1.0 if fake_class == 0 else 1.0
        return [sign * weight.T, sign * bias]
    if logits == 2:
        k = 1 if fake_class is None else fake_class
        if k not in (0, 1):
            raise UserError(f"{path}: --fake-class {k} but the head has 2 logits (0 or 1)")
        return [(weight[k] - weight[1 - k])[:, None], np.asarray([bias[k] - bias[1 - k]], np.float32)]
    raise UserError(f"{path}: a {logits}-logit head has no single-logit equivalent (softmax over {logits} classes); "
                    f"ported detectors need a 1- or 2-logit head")


def mobilenet_v2_alpha(state: dict) -> float:
    """torchvision's width_mult, from the stem width and the first block's output (0.25 ... 1.4)."""
    from tfdefakeq.backbones.mobilenet import make_divisible

    stem = state.get("features.0.0.weight")
    block = state.get("features.1.conv.1.weight")
    if stem is None or block is None:
        return 1.0
    for alpha in (1.0, 0.75, 0.5, 0.35, 0.25, 1.3, 1.4, 0.1):
        if make_divisible(32 * alpha, 8) == stem.shape[0] and make_divisible(16 * alpha, 8) == block.shape[0]:
            return alpha
    return 1.0


def guess_build_kwargs(backbone: str, state: dict, input_size: int) -> dict:
    """Builder kwargs (torch_layout, torch_normalize, ...) for the twin of the checkpoint in `state`."""
    family = FAMILIES[backbone]
    kwargs = {"torch_layout": family.torch_layout, "torch_normalize": [list(family.normalize[0]), list(family.normalize[1])]}
    if backbone == "mobilenet_v2":
        kwargs["alpha"] = mobilenet_v2_alpha(state)
    if backbone.startswith("efficientnet"):
        deepfakebench = "last_layer.weight" in state
        kwargs["torch_layout"] = "deepfakebench" if deepfakebench else "efficientnet_pytorch"
        # efficientnet_pytorch pads for the image size it was built with (from_name/from_pretrained: native)
        kwargs["torch_image_size"] = {"efficientnet_b0": 224, "efficientnet_b4": 380}[backbone]
    return kwargs


def check_fit(model, pairs, state: dict, head: str, path, label: str) -> None:
    """Raises one UserError line listing missing / unexpected keys and shape mismatches, with counts."""
    expected: dict[str, tuple] = {}
    for keras_name, prefix in pairs:
        expected.update(expected_tensors(model.get_layer(keras_name), prefix))
    dense = model.get_layer("predictions")
    in_features = int(dense.weights[0].shape[0])
    head_keys = {f"{head}.weight", f"{head}.bias"}
    missing = [(k, s) for k, s in expected.items() if k not in state]
    if f"{head}.weight" not in state:
        missing.append((f"{head}.weight", ("K", in_features)))
    mismatched = [(k, s) for k, s in expected.items() if k in state and _shape_of(state[k]) != tuple(s)
                  and not (k.endswith("pointwise.weight") and _shape_of(state[k]) == tuple(s[:2]))]
    w = state.get(f"{head}.weight")
    if w is not None and np.shape(w)[1] != in_features:
        mismatched.append((f"{head}.weight", (np.shape(w)[0], in_features)))
    extra = [(k, _shape_of(v)) for k, v in state.items() if k not in expected and k not in head_keys]
    if not (missing or mismatched or extra):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_describe(missing)})")
    if extra:
        parts.append(f"{len(extra)} unexpected ({_describe(extra)})")
    if mismatched:
        shown = ", ".join(f"{k} file {list(_shape_of(state[k]))} vs model {list(s)}" for k, s in mismatched[:3])
        parts.append(f"{len(mismatched)} with other shapes ({shown}{', ...' if len(mismatched) > 3 else ''})")
    raise UserError(f"{path}: does not fit {label} ({len(expected) + 2} tensors expected): " + "; ".join(parts))


def port_state_dict(state: dict, backbone: str, input_size: int, fake_class: int | None = None, path="checkpoint",
                    build_kwargs: dict | None = None):
    """Builds the Keras twin of `backbone` and loads `state` into it.

    Returns (model, build_kwargs). The model takes our Preprocess output ((pixel - 128) / 128) and
    gives one logit for "fake"; torch's normalisation is its first layer (`torch_normalize`).
    """
    from tfdefakeq.backbones import build

    if backbone not in FAMILIES:
        raise UserError(f"--backbone {backbone}: no PyTorch mapping (known: {', '.join(sorted(FAMILIES))})")
    family = FAMILIES[backbone]
    state = normalize_keys(state, family)
    head = find_head(state, family)
    kwargs = dict(build_kwargs or guess_build_kwargs(backbone, state, input_size))
    model = build(backbone, input_shape=(input_size, input_size, 3), num_classes=1, **kwargs)
    pairs = layer_pairs(backbone, model)
    label = f"{backbone} ({family.reference})"
    check_fit(model, pairs, state, head, path, label)
    for keras_name, prefix in pairs:
        layer = model.get_layer(keras_name)
        layer.set_weights(keras_weights(layer, prefix, state))
    model.get_layer("predictions").set_weights(head_weights(state[f"{head}.weight"], state.get(f"{head}.bias"), fake_class, path))
    return model, kwargs


def max_relative_diff(a, b) -> float:
    """max |a - b| / max |b|: the error relative to the reference's scale."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = float(np.max(np.abs(b))) or 1.0
    return float(np.max(np.abs(a - b))) / scale if a.size else 0.0


__all__ = ["FAMILIES", "port_state_dict", "normalize_keys", "head_weights", "max_relative_diff"]
