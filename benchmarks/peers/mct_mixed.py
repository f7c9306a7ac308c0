"""Sony model-compression-toolkit (MCT) mixed-precision PTQ (optionally GPTQ, or QAT) of a float Keras detector.

Runs in MCT's own environment (TensorFlow 2.15, Python 3.11, model-compression-toolkit 2.6.1: MCT's
Keras path refuses TensorFlow >= 2.16), made by benchmarks/quant_methods.py; it imports nothing from
tfdefakeq. Input: the float model as a plain Keras .h5 file and calibration images (.npy, (N, H, W, 3)
float32, normalised as the model expects). MCT's ILP picks per-layer weight bits (its default IMX500
target platform offers 8, 4 and 2 bits for kernels) under `--weights-memory` bytes; the quantized model
is exported as an INT8 .tflite (MCT keeps low-bit weights in int8 containers). Writes `--out` and
`--out`.json (versions, the weight bits it chose per layer: `weight_bits` by its wrapper's name,
`layer_bits` by the wrapped Keras layer's name; seconds).

QAT (`--qat`): MCT's own Keras QAT (`mct.qat.keras_quantization_aware_training_init_experimental`: the same
mixed-precision search, then its trainable quantizer wrappers) fine-tuned for `--qat-epochs` on the
batches in `--train` (x.npy: (images, H, W, 3) float16, normalised and augmented by our data pipeline,
in training order; y.npy: their labels; sizes.npy: the batch sizes, epoch after epoch), as our QAT runs are: AdamW, cosine decay from `--lr` to 1% of it,
weight decay `--weight-decay`, binary cross-entropy on the logit; the epoch with the best AUC on
`--val` (x, y .npy) is kept, as `train --keep best` keeps ours; then finalized and exported.
`--qat-epochs 0`: the wrapped model exported untrained (what sizing needs: training changes no bit width).

    python mct_mixed.py --model float.h5 --calib calib.npy --weights-memory 1000000 --out mct.tflite [--gptq-epochs 5]
    python mct_mixed.py ... --qat --qat-epochs 3 --train DIR --val DIR [--lr 1e-4] [--seed 0]
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_plain_keras(path):
    """A tf-keras 2.21 .h5 model in TF 2.15's Keras, no custom objects: newer config keys its layers do
    not know (InputLayer's `optional`) are dropped, and every initializer becomes Zeros (ours include a
    custom one for the fixed high-pass kernel) before the architecture is rebuilt; then the weights,
    fixed ones included, are loaded from the file."""
    import h5py
    import tensorflow as tf

    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "InputLayer":
            layer["config"].pop("optional", None)
        for key in [k for k in layer["config"] if k.endswith("_initializer")]:
            layer["config"][key] = {"class_name": "Zeros", "config": {}}
    model = tf.keras.models.model_from_json(json.dumps(config))
    model.load_weights(path)
    return model


def fine_tune(qat, args) -> list[dict]:
    """Trains MCT's QAT model on the given batches; keeps the best val-AUC epoch's weights. -> per-epoch logs."""
    import numpy as np
    import tensorflow as tf

    tf.keras.utils.set_random_seed(args.seed)
    x = np.load(os.path.join(args.train, "x.npy"), mmap_mode="r")
    y = np.load(os.path.join(args.train, "y.npy"))
    sizes = np.load(os.path.join(args.train, "sizes.npy"))
    steps = len(sizes) // args.qat_epochs
    if steps < 1 or len(sizes) != steps * args.qat_epochs or sizes.sum() != len(x) or len(y) != len(x):
        raise SystemExit(f"mct_mixed: error: {args.train}: {len(sizes)} batches of {sizes.sum()} images for {len(x)} images "
                         f"and {len(y)} labels: not --qat-epochs {args.qat_epochs} epochs of equal length")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    val_x = np.load(os.path.join(args.val, "x.npy")).astype(np.float32)
    val_y = np.load(os.path.join(args.val, "y.npy")).astype(np.float32)
    schedule = tf.keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=steps * args.qat_epochs, alpha=0.01)
    optimizer = tf.keras.optimizers.AdamW(schedule, weight_decay=args.weight_decay)
    loss_fn = tf.keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            logits = tf.reshape(qat(images, training=True), [-1])
            loss = loss_fn(labels, logits)
        grads = tape.gradient(loss, qat.trainable_variables)
        optimizer.apply_gradients(zip(grads, qat.trainable_variables))
        return loss

    history, best, kept = [], -1.0, None
    for epoch in range(args.qat_epochs):
        losses = []
        for i in range(epoch * steps, (epoch + 1) * steps):
            batch = slice(starts[i], starts[i + 1])
            losses.append(float(step(tf.constant(x[batch], tf.float32), tf.constant(y[batch], tf.float32))))
        logits = np.concatenate([np.ravel(qat(val_x[i:i + 64], training=False)) for i in range(0, len(val_x), 64)])
        auc = tf.keras.metrics.AUC(from_logits=True)
        auc.update_state(val_y, logits)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_auc": float(auc.result())})
        print(json.dumps(history[-1]), flush=True)
        if history[-1]["val_auc"] > best:  # strictly: the earliest of equal epochs, as train --keep best
            best, kept = history[-1]["val_auc"], [v.numpy() for v in qat.weights]
    if kept is None:  # no epoch logged a finite val AUC (e.g. one class in --val): the last epoch stays, as train does
        return history
    for variable, value in zip(qat.weights, kept):
        variable.assign(value)
    return history


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--calib", required=True)
    p.add_argument("--weights-memory", type=float, required=True, help="bytes of quantized weights (MCT's ResourceUtilization)")
    p.add_argument("--out", required=True)
    p.add_argument("--gptq-epochs", type=int, default=0, help="0: plain PTQ; N: MCT's GPTQ for N epochs")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--qat", action="store_true", help="MCT's Keras QAT instead of PTQ")
    p.add_argument("--qat-epochs", type=int, default=0, help="with --qat: epochs of fine-tuning (0: export untrained)")
    p.add_argument("--train", default=None, help="with --qat-epochs > 0: folder of x.npy, y.npy (the training batches)")
    p.add_argument("--val", default=None, help="with --qat-epochs > 0: folder of x.npy, y.npy (the val images)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not args.qat and (args.qat_epochs or args.train or args.val):
        p.error("--qat-epochs, --train and --val need --qat")
    if args.qat and args.gptq_epochs:
        p.error("--qat and --gptq-epochs are two different methods: give one")
    if args.qat_epochs > 0 and not (args.train and args.val):
        p.error("--qat-epochs > 0 needs --train and --val")

    import numpy as np
    import model_compression_toolkit as mct

    started = time.time()
    model = load_plain_keras(args.model)
    images = np.load(args.calib).astype(np.float32)
    batches = [images[i:i + args.batch_size] for i in range(0, len(images), args.batch_size)]

    def representative_data():
        for batch in batches:
            yield [batch]

    ru = mct.core.ResourceUtilization(weights_memory=args.weights_memory)
    core = mct.core.CoreConfig(mixed_precision_config=mct.core.MixedPrecisionQuantizationConfig(num_of_images=min(32, len(images))))
    kwargs = {"target_resource_utilization": ru, "core_config": core}  # MCT's default target platform (IMX500 v1)
    history = []
    if args.qat:
        qat, _, _ = mct.qat.keras_quantization_aware_training_init_experimental(model, representative_data, **kwargs)
        if args.qat_epochs > 0:
            history = fine_tune(qat, args)
        qmodel = mct.qat.keras_quantization_aware_training_finalize_experimental(qat)
    elif args.gptq_epochs > 0:
        gptq = mct.gptq.get_keras_gptq_config(n_epochs=args.gptq_epochs)
        qmodel, _ = mct.gptq.keras_gradient_post_training_quantization(model, representative_data, gptq_config=gptq, **kwargs)
    else:
        qmodel, _ = mct.ptq.keras_post_training_quantization(model, representative_data, **kwargs)
    bits, layer_bits = {}, {}
    for layer in qmodel.layers:
        for name, quantizer in getattr(layer, "weights_quantizers", {}).items():
            n = getattr(quantizer, "num_bits", None)
            if n is not None:
                bits[f"{layer.name}/{name}"] = int(n)
                # the wrapped layer's name: the Keras layer's, "_bn" appended where MCT folded a BatchNorm into it
                layer_bits[getattr(layer, "layer", layer).name] = int(n)
    mct.exporter.keras_export_model(model=qmodel, save_model_path=args.out,
                                    serialization_format=mct.exporter.KerasExportSerializationFormat.TFLITE,
                                    quantization_format=mct.exporter.QuantizationFormat.INT8)
    from importlib import metadata

    info = {"versions": {d: metadata.version(d) for d in ("model-compression-toolkit", "tensorflow-cpu", "numpy")},
            "python": sys.version.split()[0], "weight_bits": bits, "layer_bits": layer_bits, "weights_memory": args.weights_memory,
            "gptq_epochs": args.gptq_epochs, "qat_epochs": args.qat_epochs if args.qat else None, "history": history,
            "seconds": round(time.time() - started, 1)}
    with open(args.out + ".json", "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps({k: v for k, v in info.items() if k != "weight_bits"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
