"""Sony model-compression-toolkit (MCT) mixed-precision PTQ (optionally GPTQ) of a float Keras detector.

Runs in MCT's own environment (TensorFlow 2.15, Python 3.11, model-compression-toolkit 2.6.1: MCT's
Keras path refuses TensorFlow >= 2.16), made by benchmarks/quant_methods.py; it imports nothing from
tfdefakeq. Input: the float model as a plain Keras .h5 file and calibration images (.npy, (N, H, W, 3)
float32, normalised as the model expects). MCT's ILP picks per-layer weight bits (its default IMX500
target platform offers 8, 4 and 2 bits for kernels) under `--weights-memory` bytes; the quantized model
is exported as an INT8 .tflite (MCT keeps low-bit weights in int8 containers). Writes `--out` and
`--out`.json (versions, the weight bits it chose per layer, seconds).

    python mct_mixed.py --model float.h5 --calib calib.npy --weights-memory 1000000 --out mct.tflite [--gptq-epochs 5]
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--calib", required=True)
    p.add_argument("--weights-memory", type=float, required=True, help="bytes of quantized weights (MCT's ResourceUtilization)")
    p.add_argument("--out", required=True)
    p.add_argument("--gptq-epochs", type=int, default=0, help="0: plain PTQ; N: MCT's GPTQ for N epochs")
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args(argv)

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
    if args.gptq_epochs > 0:
        gptq = mct.gptq.get_keras_gptq_config(n_epochs=args.gptq_epochs)
        qmodel, _ = mct.gptq.keras_gradient_post_training_quantization(model, representative_data, gptq_config=gptq, **kwargs)
    else:
        qmodel, _ = mct.ptq.keras_post_training_quantization(model, representative_data, **kwargs)
    bits = {}
    for layer in qmodel.layers:
        for name, quantizer in getattr(layer, "weights_quantizers", {}).items():
            n = getattr(quantizer, "num_bits", None)
            if n is not None:
                bits[f"{layer.name}/{name}"] = int(n)
    mct.exporter.keras_export_model(model=qmodel, save_model_path=args.out,
                                    serialization_format=mct.exporter.KerasExportSerializationFormat.TFLITE,
                                    quantization_format=mct.exporter.QuantizationFormat.INT8)
    from importlib import metadata

    info = {"versions": {d: metadata.version(d) for d in ("model-compression-toolkit", "tensorflow-cpu", "numpy")},
            "python": sys.version.split()[0], "weight_bits": bits, "weights_memory": args.weights_memory,
            "gptq_epochs": args.gptq_epochs, "seconds": round(time.time() - started, 1)}
    with open(args.out + ".json", "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps({k: v for k, v in info.items() if k != "weight_bits"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
