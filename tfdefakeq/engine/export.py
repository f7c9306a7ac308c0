"""Keras detector (float or QAT) -> .tflite, proven to compute what the Keras model computes (the
engine behind `python -m tfdefakeq.convert`).

The format follows the model: a float model gives float32 (or int8 by post-training quantization),
a tfmot_int8/w8a8 QAT model gives full-integer int8, a w4a8/LSQ/adaptive QAT model gives int4
(packed INT4 weights, int8 activations, int8 I/O). The learned ranges are the stored scales; 2-bit
layers are repacked as INT2. The .tflite is run by the runtime on calibration images and compared
with Keras: the logits within MAX_LOGIT_LSB output steps, or else (a QAT model) op by op, every
int8 tensor within 1 LSB of Keras on TFLite's own inputs and off only at rounding ties
(`tfdefakeq.engine.parity`); a model that disagrees is not written. Nor is a quantized model whose
output is one constant on the images where the float model's logits spread over at least one
output LSB (`check_not_collapsed`): Keras and TFLite agreeing on a constant proves nothing.
"""

from __future__ import annotations

import contextlib

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfdefakeq.core.errors import UserError


FORMATS = ("float32", "int8", "int4")


# Quantized logits may differ from the Keras QAT model by this many output steps. The Keras
# simulation matches exact integer arithmetic (checked on a W4A8 conv: 0 of 8,192 outputs differ),
# but TFLite's integer kernels requantize with double rounding: about 1-4% of a layer's outputs
# that lie within ~0.05 LSB of a rounding tie come out one LSB off, and these flips compound
# through a deep residual net. Measured: the demo's ResNet-18 at 64 px 2-3 LSB, test-size
# ResNet-18s at width 1/4 up to 5 LSB. Gross export errors (a re-rounded grid, lost scales,
# unfolded BatchNorm) move logits by tens of LSB. Deep, narrow nets compound tie flips further
# (tests/backbones/test_zoo_export.py: up to 17 LSB): beyond this bound convert_model decides op by op.
MAX_LOGIT_LSB = 6.0


MAX_FLOAT_DIFF = 1e-3  # float32: relative to the logit scale


# Post-training quantization approximates the float model instead of reproducing a QAT graph, so its
# bound is relative: the int8 logits may move by this fraction of the largest float logit.
MAX_PTQ_RELATIVE_DIFF = 0.1


class ParityError(UserError):
    """The converted model does not compute what the Keras model computes; `result` holds the figures."""

    def __init__(self, message: str, result: dict | None = None):
        super().__init__(message)
        self.result = result or {}


@dataclass
class ThresholdReference:
    """What a quantized model's decision threshold is calibrated on (`runtime.threshold.match_real_fpr`):
    labelled images of the val split and the float model's probabilities on them."""

    images_uint8: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) 0 real / 1 fake
    reference_probs: np.ndarray | None  # (N,) the float Keras model's P(fake); None: no float model at hand
    reference: str = ""  # which float model (or, with reference_probs None, why there is none)
    split: str | None = "val"


def keras_probs(model, preprocess, images_uint8: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """A Keras detector's P(fake) (N,) on uint8 images (N, H, W, 3), preprocessed as its manifest says."""
    logits = model.predict(preprocess.apply(images_uint8), verbose=0, batch_size=batch_size).reshape(-1)
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def check_not_collapsed(quantized_logits: np.ndarray, float_logits: np.ndarray, output_lsb: float, label,
                        images: str) -> dict:
    """A parity check cannot prove anything about a model that gives one output whatever the image:
    Keras and TFLite then agree on a constant. Raises ParityError (naming `label`, the measured spreads)
    when the quantized logits over `images` (e.g. "64 calibration images") spread less than one output
    LSB, i.e. sit on one int8 value, while the float model's logits on the same images spread over at
    least one LSB (the output grid could show them): the quantization collapsed the model. A float
    model that is itself constant at this resolution is not refused.

    Returns {"quantized_logit_spread", "float_logit_spread" (max - min, logits), "output_lsb"}.
    """
    q = np.asarray(quantized_logits, dtype=np.float64).reshape(-1)
    f = np.asarray(float_logits, dtype=np.float64).reshape(-1)
    q_spread, f_spread = float(np.ptp(q)), float(np.ptp(f))
    result = {"quantized_logit_spread": q_spread, "float_logit_spread": f_spread, "output_lsb": float(output_lsb)}
    # an int8 output differs by whole LSBs: below half of one it is a single value
    if len(q) > 1 and output_lsb > 0 and q_spread < 0.5 * output_lsb and f_spread >= output_lsb:
        raise ParityError(
            f"{label}: the quantized model gives one constant output (logit {q[0]:.4g}; spread {q_spread:.3g} < 1 "
            f"output LSB {output_lsb:.3g}) on {images} where the float model's logits spread {f_spread:.3g} "
            f"({f_spread / output_lsb:.0f} LSB): the quantization collapsed it, and parity with Keras proves nothing",
            result)
    return result


def _logits(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-15, 1 - 1e-15)
    return np.log(p) - np.log1p(-p)


def calibrate_threshold(fmt: str, reference: ThresholdReference | None, probs: np.ndarray | None = None) -> dict:
    """The manifest's `threshold` record (runtime.threshold explains the choice): a float32 model keeps
    the float model's 0.5; a quantized one gets the threshold matching the float model's real-image
    false-positive rate on `reference`, `probs` being the .tflite's P(fake) on `reference.images_uint8`
    (`_check_against_float` computes them). Without a float reference, or without real images in it,
    the record says 0.5 and why (warned on stderr when `reference` was given)."""
    import sys

    from tfdefakeq.runtime.threshold import DEFAULT_THRESHOLD, FLOAT_THRESHOLD, match_real_fpr

    if fmt == "float32":
        return {"value": FLOAT_THRESHOLD, "method": "float_model",
                "reason": "a float model keeps its own operating point"}
    reason = "no calibration images were given" if reference is None else reference.reference
    if reference is not None and reference.reference_probs is not None:
        try:
            record = match_real_fpr(reference.labels, probs, reference.reference_probs)
            return {**record, "split": reference.split, "reference": reference.reference}
        except UserError as e:
            reason = str(e)
    if reference is not None:  # asked for and not possible (a caller that gave no reference chose 0.5)
        print(f"tfdefakeq: warning: threshold {DEFAULT_THRESHOLD} not calibrated: {reason}", file=sys.stderr)
    return {"value": DEFAULT_THRESHOLD, "method": "default", "reason": reason}


def target_format(manifest, requested: str) -> str:
    """The .tflite format for a model with `manifest`, checking the request is possible."""
    from tfdefakeq.quant.qat import get_scheme

    natural = "float32" if manifest.scheme == "float" else get_scheme(manifest.scheme).format
    if requested == "auto":
        return natural
    if requested == natural or (manifest.scheme == "float" and requested == "int8"):
        return requested
    if requested == "int4":
        raise UserError(f"int4 needs a model fine-tuned with --scheme w4a8 (this one is {manifest.scheme}): 4-bit weights must be learned")
    raise UserError(f"a {manifest.scheme} model converts to {natural}, not {requested}")


def as_written(flatbuffer: bytes, fmt: str, int2: bool = True) -> bytes:
    """A converted model (`to_tflite`) as `convert_model` writes it: an int4 model's 2-bit weights
    repacked as INT2 (unless int2=False), tensors named by index. For pricing a plan's file;
    `convert_model` does the same in two steps, with its parity check in between."""
    from tfdefakeq.runtime.unpack import pack_int2, shorten_tensor_names

    if int2 and fmt == "int4":
        flatbuffer, _ = pack_int2(flatbuffer)
    return shorten_tensor_names(flatbuffer)[0]


def to_tflite(model, fmt: str, representative: np.ndarray | None = None) -> bytes:
    """Converts `model`. int8/int4: full integer, int8 input and output; `representative` (N,H,W,3)
    normalised images are needed for post-training quantization of a float model."""
    from tfdefakeq.core.tfcompat import tf

    with tempfile.TemporaryDirectory(prefix="tfdefakeq-savedmodel-") as saved:
        converter = _inference_converter(model, saved)
        if fmt != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
            if representative is not None:
                converter.representative_dataset = lambda: ([img[None].astype(np.float32)] for img in representative)
        return converter.convert()


def _inference_converter(model, saved_dir: str):
    """A TFLiteConverter for `model`'s inference call, from a SavedModel holding that one traced function.

    `TFLiteConverter.from_keras_model` saves the model the Keras way first: every layer's call traced and
    serialised, then loaded back, which was 60-75% of a conversion (EfficientNet-B4 at test size: 36 of
    ~42 CPU s). Saved here: a tf.Module with the model's variables and one tf.function, the call with
    training=False over the inputs' specs (batch dimension free), returning the outputs under the
    model's output names. The flatbuffer is the same as from_keras_model's but for its
    CONVERSION_METADATA entry (tests/engine/test_export.py compares them), and for dilated Conv2D
    layers, traced as one dilated conv each (`dilated_conv2d_ops`)."""
    from tfdefakeq.core.tfcompat import tf

    specs = [tf.TensorSpec([None, *t.shape[1:]], t.dtype, name=t.name.split(":")[0]) for t in model.inputs]
    names = list(model.output_names)

    def serve(*inputs):
        outputs = model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        return dict(zip(names, outputs if isinstance(outputs, (list, tuple)) else [outputs]))

    module = tf.Module()
    module.model_variables = list(model.variables)
    module.serve = tf.function(serve, input_signature=specs)
    with dilated_conv2d_ops():
        tf.saved_model.save(module, saved_dir, signatures=module.serve.get_concrete_function(),
                            options=tf.saved_model.SaveOptions(save_debug_info=True))
    return tf.lite.TFLiteConverter.from_saved_model(saved_dir)


@contextlib.contextmanager
def dilated_conv2d_ops():
    """While tracing for conversion, a dilated keras Conv2D is one TF Conv2D op with its dilations.

    Keras' Conv2D calls tf.nn.convolution, which writes a dilated convolution (outside a TPU
    context) as SpaceToBatchND -> Conv2D -> BatchToSpaceND, and the TF 2.21 converter keeps the
    three ops (it never rewrote them into one dilated CONV_2D here, float32 or int8, 32 or 33 px,
    dilation 2 or 3, SAME or VALID). The split costs: a BatchNormalization after the conv is not
    folded into it (tfmot_int8 kept it as an int8 MUL with its own requantization, which Keras does
    not model: 4-6 LSB off op by op on MesoInception-4), a ReLU after it is not fused (a RELU op
    XNNPACK leaves undelegated when its scales differ), and the two reshuffles run every call.
    tf.nn.conv2d with `dilations` is the same arithmetic in one op, which TFLite's CONV_2D (and
    XNNPACK) run natively. Only the graph traced for conversion changes: training keeps Keras' path
    unchanged."""
    from tfdefakeq.core.tfcompat import keras, tf

    conv2d = keras.layers.Conv2D
    inherited = conv2d.convolution_op

    def convolution_op(self, inputs, kernel):
        if (max(self.dilation_rate) == 1 or self.groups != 1 or self.data_format != "channels_last"
                or not isinstance(self.padding, str) or self.padding == "causal"):
            return inherited(self, inputs, kernel)
        return tf.nn.conv2d(inputs, kernel, strides=list(self.strides), padding=self.padding.upper(),
                            dilations=list(self.dilation_rate), name=self.__class__.__name__)

    had_own = "convolution_op" in vars(conv2d)
    conv2d.convolution_op = convolution_op
    try:
        yield
    finally:
        if had_own:
            conv2d.convolution_op = inherited
        else:
            del conv2d.convolution_op


def check_parity(keras_model, tflite_path, images_uint8: np.ndarray, preprocess, ptq: bool = False, label=None,
                 sha256: str | None = None) -> dict:
    """Runs the .tflite in the runtime and compares its logits with the Keras model's.

    Returns max |logit difference| (and in output LSB for quantized models) and the share of equal
    decisions at 0.5. Raises ParityError (naming `label`, default the path) when they disagree
    beyond rounding; `ptq` (a float Keras model quantized after training) allows a relative error.
    `sha256`: the hash of the bytes the caller wrote (opened without the child probe when the file has it).
    """
    from tfdefakeq.runtime.loader import open_model

    tfl = open_model(tflite_path, expected_sha256=sha256)
    x = preprocess.apply(images_uint8)
    keras_logits = keras_model.predict(x, verbose=0, batch_size=32).reshape(-1)
    tfl_logits = tfl.predict_logits(images_uint8, preprocess).reshape(-1)
    diff = np.abs(keras_logits - tfl_logits)
    out_scale = tfl.output_quant[0] if tfl.output_quant and tfl.output_quant[0] else 0.0
    result = {
        "images": int(len(x)),
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "decision_agreement": float(np.mean((keras_logits > 0) == (tfl_logits > 0))),
    }
    logit_range = max(1.0, float(np.abs(keras_logits).max()))
    if ptq:
        ok = diff.max() <= MAX_PTQ_RELATIVE_DIFF * logit_range
        limit = f"{MAX_PTQ_RELATIVE_DIFF:.0%} of the largest logit ({logit_range:.3g})"
        if out_scale:
            result["output_lsb"] = float(out_scale)
            result["max_diff_lsb"] = float(diff.max() / out_scale)
    elif out_scale:
        result["output_lsb"] = float(out_scale)
        result["max_diff_lsb"] = float(diff.max() / out_scale)
        ok = result["max_diff_lsb"] <= MAX_LOGIT_LSB + 1e-3  # float division of an exact multiple
        limit = f"{MAX_LOGIT_LSB} LSB"
    else:
        ok = diff.max() <= MAX_FLOAT_DIFF * logit_range
        limit = f"{MAX_FLOAT_DIFF} relative"
    result["agrees"] = bool(ok)
    if ptq and out_scale and ok:  # the Keras model is the float one: its logits are the reference
        result["collapse"] = check_not_collapsed(tfl_logits, keras_logits, out_scale, label or tflite_path,
                                                 f"{len(x)} parity images")
    if not ok:
        raise ParityError(
            f"{label or tflite_path}: TFLite output disagrees with Keras: max |logit diff| {diff.max():.4g}"
            + (f" = {result['max_diff_lsb']:.1f} output LSB" if out_scale else "")
            + f" > {limit} on {len(x)} images",
            result,
        )
    return result


def _per_layer_parity(model, tflite_path, calib_uint8, preprocess, parity: dict) -> dict:
    """Logits beyond MAX_LOGIT_LSB: decide op by op (tfdefakeq.diagnose). Rounding-tie flips (see
    parity.TIE_LSB) compound through deep, narrow nets to more logit LSB than a shallow net shows;
    an export error shows up as an op that departs from Keras on TFLite's own inputs."""
    import sys

    from tfdefakeq.engine.parity import layer_parity, per_layer_verdict

    print(f"{parity['error']}; checking op by op ...", file=sys.stderr, flush=True)
    verdict = per_layer_verdict(layer_parity(model, tflite_path, calib_uint8, preprocess, use_xnnpack=True))
    parity = {**parity, "logits_agree": False, "per_layer": verdict, "agrees": verdict["agrees"]}
    if verdict["agrees"]:
        del parity["error"]
        print(f"  every op within {verdict['max_local_lsb']:.0f} LSB of Keras on TFLite's own inputs, off only at "
              f"rounding ties ({verdict['matched']}/{verdict['tensors']} tensors): parity holds", file=sys.stderr)
    else:
        parity["error"] += (f"; op by op: {verdict['first_failing'] or 'too few tensors matched'} departs from Keras "
                            f"(python -m tfdefakeq.diagnose shows where)")
    return parity


def _shorten_names(staged: Path, flatbuffer: bytes, sha256: str, calib_uint8, preprocess, label) -> tuple[bytes, list[str]]:
    """The checked .tflite at `staged` rewritten with index names (`runtime.unpack.shorten_tensor_names`),
    in place -> (its bytes, the converter's names by tensor index). Its logits on the calibration
    images must equal the checked file's bit for bit, or nothing is written."""
    from tfdefakeq.runtime.loader import open_model, sha256_hex
    from tfdefakeq.runtime.unpack import shorten_tensor_names

    short, names = shorten_tensor_names(flatbuffer)
    if short == flatbuffer:
        return flatbuffer, names
    before = open_model(staged, expected_sha256=sha256).predict_logits(calib_uint8, preprocess)
    staged.write_bytes(short)
    after = open_model(staged, expected_sha256=sha256_hex(short)).predict_logits(calib_uint8, preprocess)
    if not np.array_equal(before, after):
        raise ParityError(f"{label}: renaming the tensors changed the logits (max |diff| "
                          f"{float(np.abs(before - after).max()):.4g}); nothing written", {})
    return short, names


def _check_against_float(tflite_path, sha256, preprocess, reference: ThresholdReference, parity: dict, label) -> np.ndarray:
    """A quantized .tflite against the float model on the threshold images (`check_not_collapsed`);
    records the spreads in `parity["collapse"]`. Returns the .tflite's P(fake) on them."""
    from tfdefakeq.runtime.interpreter import sigmoid
    from tfdefakeq.runtime.loader import open_model

    tfl = open_model(tflite_path, expected_sha256=sha256)
    logits = tfl.predict_logits(reference.images_uint8, preprocess).reshape(-1)
    out_scale = tfl.output_quant[0] if tfl.output_quant and tfl.output_quant[0] else 0.0
    where = f"{len(logits)} {reference.split or 'reference'} images"
    parity["collapse"] = check_not_collapsed(logits, _logits(reference.reference_probs), out_scale, label, where)
    return sigmoid(logits)  # what predict_proba gives


def convert_model(model, manifest, fmt: str, calib_uint8: np.ndarray, out_path, overwrite: bool = False, int2: bool = True,
                  require_parity: bool = True, plan=None, fake_class: int | None = None, preprocess: str | None = None,
                  threshold_reference: ThresholdReference | None = None):
    """Converts, checks parity and writes `out_path` + manifest. Returns the written Manifest.

    `manifest=None`: `model` is a user's float keras.Model, imported first (`importer.load_user_model`
    with `fake_class` and `preprocess`; the written manifest says backbone "custom").

    Parity: the logits within MAX_LOGIT_LSB of Keras, or else (a QAT model) every op within 1 LSB of
    Keras on TFLite's own inputs and off only at rounding ties (`_per_layer_parity`).
    `require_parity=False` writes a model that disagrees too (its manifest says so): for measuring
    post-training quantization, whose error is the thing measured.

    A QAT `model` has its biases snapped to the stored int32 grid first (modified in place).
    `plan` (the adaptive scheme's QuantPlan): the file must hold its budget (`--avg-bits` /
    `--budget-bytes`), or nothing is written (horizontal.check_file_budget).
    `threshold_reference`: val images and the float model's scores on them, for the manifest's calibrated
    decision threshold (`calibrate_threshold`; without it a quantized model's manifest records 0.5 and why).
    """
    import dataclasses

    from tfdefakeq.core.fileio import check_writable, json_bytes, publish_together, stage_bytes
    from tfdefakeq.core.manifest import command_line, manifest_path, versions
    from tfdefakeq.runtime.loader import sha256_hex
    from tfdefakeq.runtime.modelinfo import read_model_info

    from tfdefakeq.quant.calibrate import snap_biases

    out_path = check_writable(out_path, overwrite=overwrite)
    if manifest is None:
        from tfdefakeq.core.manifest import Manifest
        from tfdefakeq.engine.importer import load_user_model

        model, fields = load_user_model(model, fake_class=fake_class, preprocess=preprocess)
        manifest = Manifest(format="keras", **fields)
    elif fake_class is not None or preprocess is not None:
        raise UserError("fake_class / preprocess apply to a model imported here (manifest=None); the manifest already says them")
    if manifest.scheme != "float":
        snap_biases(model)  # Keras then adds exactly the int32 biases TFLite stores
    representative = manifest.preprocess.apply(calib_uint8) if fmt != "float32" else None
    flatbuffer = to_tflite(model, fmt, representative)
    if int2 and fmt == "int4":
        from tfdefakeq.runtime.unpack import pack_int2

        flatbuffer, _ = pack_int2(flatbuffer)
    digest = sha256_hex(flatbuffer)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        staged = Path(tmp) / "model.tflite"
        staged.write_bytes(flatbuffer)
        info = read_model_info(staged)
        if fmt == "int4" and not (info.tensor_types.get("INT4") or info.tensor_types.get("INT2")):
            raise UserError(f"{out_path}: the converter stored no INT4 tensors; refusing to call this model int4")
        ptq = manifest.scheme == "float" and fmt != "float32"
        try:
            parity = check_parity(model, staged, calib_uint8, manifest.preprocess, ptq=ptq, label=out_path,
                                  sha256=digest)
        except ParityError as e:
            parity = {**e.result, "error": str(e)}
            if not ptq and fmt != "float32":
                parity = _per_layer_parity(model, staged, calib_uint8, manifest.preprocess, parity)
            if require_parity and not parity["agrees"]:
                raise ParityError(parity["error"], parity) from None
        parity.setdefault("logits_agree", bool(parity.get("agrees")))
        # the op-by-op check above reads the converter's names; then they give way to indices
        flatbuffer, tensor_names = _shorten_names(staged, flatbuffer, digest, calib_uint8, manifest.preprocess, out_path)
        digest = sha256_hex(flatbuffer)
        if plan is not None:
            from tfdefakeq.quant.horizontal import check_file_budget

            check_file_budget(staged, plan, label=out_path)
        quant_probs = None
        if fmt != "float32" and threshold_reference is not None and threshold_reference.reference_probs is not None:
            quant_probs = _check_against_float(staged, digest, manifest.preprocess, threshold_reference, parity, out_path)
        threshold = calibrate_threshold(fmt, threshold_reference, quant_probs)
    from tfdefakeq.quant.schemes import plan_weight_bits

    bits = manifest.weight_bits
    if manifest.scheme == "float":
        bits = plan_weight_bits(model, 8) if fmt == "int8" else {}
    out_manifest = dataclasses.replace(
        manifest,
        format=fmt,
        scheme=manifest.scheme if not (manifest.scheme == "float" and fmt == "int8") else "ptq_int8",
        weight_bits=bits,
        activation_bits=None if fmt == "float32" else 8,
        size_bytes=len(flatbuffer),
        sha256=digest,
        tensor_names=tensor_names,
        metrics={"parity": parity, "weight_bytes_by_type": dict(info.weight_bytes), "ops": dict(info.op_counts)},
        threshold=threshold,
        versions=versions(),
        command=command_line(),
    )
    # both staged beside their targets, then published together: a model never stands without its manifest
    staged_model = stage_bytes(out_path, flatbuffer)
    try:
        staged_manifest = stage_bytes(manifest_path(out_path), json_bytes(out_manifest.to_json()))
    except UserError:
        staged_model.unlink()
        raise
    publish_together((staged_model, out_path), (staged_manifest, manifest_path(out_path)))
    return out_manifest
