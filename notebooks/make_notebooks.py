"""Writes the notebooks from the cells below (one source of truth, reviewable as Python).

    python notebooks/make_notebooks.py
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = "tfdefakeq/tfdefakeq"  # GitHub owner/name the Colab badge and the install cell point at
HERE = Path(__file__).resolve().parent


def badge(name: str) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{name})")


INSTALL = f'''# On Colab: install tfdefakeq (elsewhere it is already installed with `pip install -e ".[dev]"`).
import sys
if "google.colab" in sys.modules:
    !pip install -q "tfdefakeq[dev] @ git+https://github.com/{REPO}"'''

PARAMETERS = '''# Parameters. SMOKE=1 (set by the test suite) runs everything at a tiny size in about a minute.
import os
SMOKE = os.environ.get("TFDEFAKEQ_SMOKE") == "1"
WORK = os.path.abspath(os.environ.get("TFDEFAKEQ_WORK", "nb_work"))
INPUT_SIZE = 32 if SMOKE else 64
WIDTH = 0.25 if SMOKE else 0.5
EPOCHS, QAT_EPOCHS = (12, 1) if SMOKE else (8, 2)
BATCH = 8 if SMOKE else 32
print(f"SMOKE={SMOKE}, outputs under {WORK}")'''

QUICKSTART = [
    new_markdown_cell(f"""# tfdefakeq 01: quickstart

{badge("01_quickstart.ipynb")}

From data to a quantized detector that runs on a Raspberry Pi, in five steps: generate the embedded
data set, train a float ResNet-18 detector, fine-tune it quantization-aware with 4-bit weights (W4A8),
convert it to an int4 `.tflite`, and evaluate the `.tflite` with the TensorFlow-free runtime."""),
    new_code_cell(INSTALL),
    new_code_cell(PARAMETERS),
    new_markdown_cell("""## 1. Data
Real photographs that ship inside installed wheels, cut into crops; fakes made here by an autoencoder
and a perturbed upsampler, JPEG on both classes, split by source photo. Nothing is downloaded."""),
    new_code_cell('''from tfdefakeq.data.synthetic import SyntheticConfig, generate, dataset_info

config = SyntheticConfig(ae_steps=20, max_crops_per_photo=4, upsampler_sigma=0.1) if SMOKE else SyntheticConfig()
data = generate(os.path.join(WORK, "data") if SMOKE else None, config, progress=not SMOKE)
info = dataset_info(data)
{split: {g: c["0_real"] + c["1_fake"] for g, c in gens.items()} for split, gens in info["counts"].items()}'''),
    new_markdown_cell("""## 2. Train a float detector
ResNet-18 with a fixed high-pass front end (it lets a detector trained from scratch see upsampling
traces from the first step), CNNDetection's blur + JPEG augmentation at p = 0.1."""),
    new_code_cell('''from tfdefakeq import train

common = ["--data", str(data), "--input-size", str(INPUT_SIZE), "--batch-size", str(BATCH), "--aug-prob", "0.1"]
float_dir = os.path.join(WORK, "float")
if not os.path.exists(os.path.join(float_dir, "model.weights.h5")):
    train.main(train.parse_args(common + ["--out", float_dir, "--backbone", "resnet18", "--width", str(WIDTH),
                                          "--highpass", "--epochs", str(EPOCHS), "--lr", "3e-3" if SMOKE else "2e-3"]))'''),
    new_markdown_cell("""## 3. Quantization-aware fine-tuning, 4-bit weights
BatchNorm is folded into the convolutions first, weight ranges are learned, activations stay 8-bit;
the first convolutions and the classifier keep 8-bit weights."""),
    new_code_cell('''w4a8_dir = os.path.join(WORK, "w4a8")
if not os.path.exists(os.path.join(w4a8_dir, "model.weights.h5")):
    train.main(train.parse_args(common + ["--out", w4a8_dir, "--init", os.path.join(float_dir, "model.weights.h5"),
                                          "--scheme", "w4a8", "--epochs", str(QAT_EPOCHS), "--lr", "1e-4"]))'''),
    new_markdown_cell("""## 4. Convert to an int4 `.tflite`
The converter stores the 4-bit weights as packed INT4 tensors whose scales are the learned ones; the
`.tflite` is run on calibration images and compared with the Keras model before it is written."""),
    new_code_cell('''from tfdefakeq import convert
from tfdefakeq.manifest import Manifest, manifest_path
from tfdefakeq.runtime.modelinfo import read_model_info

int4_path = os.path.join(WORK, "detector_int4.tflite")
if not os.path.exists(int4_path):
    convert.main(convert.parse_args([os.path.join(w4a8_dir, "model.weights.h5"), "--data", str(data), "--out", int4_path]))
info = read_model_info(int4_path)
print(f"{info.size_bytes:,} bytes; weight bytes by type: {dict(info.weight_bytes)}")
Manifest.load(manifest_path(int4_path)).metrics["parity"]'''),
    new_markdown_cell("""## 5. Evaluate and benchmark with the runtime alone
`tfdefakeq.runtime` needs only numpy, Pillow and ai-edge-litert: the same code runs on the device."""),
    new_code_cell('''from tfdefakeq.runtime.evaluate import evaluate_model, format_table
from tfdefakeq.runtime.bench import bench_model

rows, scores = evaluate_model(int4_path, data, split="test")
print(format_table(rows))
result = bench_model(int4_path, threads=1, warmup=3, runs=10 if SMOKE else 100)
print(f"p50 {result['latency_ms_p50']:.3f} ms, p90 {result['latency_ms_p90']:.3f} ms on {result['processor']}")'''),
    new_code_cell('''from tfdefakeq.report import plot_roc_pr
from IPython.display import Image

labels = [s["label"] for s in scores]
probs = [s["prob"] for s in scores]
generators = [s["generator"] for s in scores]
Image(filename=str(plot_roc_pr(labels, probs, generators, os.path.join(WORK, "curves.png"), "int4 detector on the test split")))'''),
]


DEPLOY = [
    new_markdown_cell(f"""# tfdefakeq 03: Raspberry Pi and Coral deployment

{badge("03_deployment.ipynb")}

The shipped detectors in `tflite_models/` run with the runtime alone (`pip install tfdefakeq[edge]`:
numpy, Pillow, ai-edge-litert). This notebook does on this machine what you do on the device: copy a
model, benchmark it, score images / folders / videos, and check whether it maps onto a Coral Edge TPU."""),
    new_code_cell(INSTALL),
    new_code_cell(PARAMETERS),
    new_markdown_cell("""## 1. Copy the model to the device
A `.tflite` travels with its `NAME.manifest.json` (preprocessing, bits per layer, measured metrics).
On a Pi: `scp tflite_models/resnet18_64_int4.* pi@raspberrypi.local:~/models/`."""),
    new_code_cell('''import shutil, pathlib, tfdefakeq

shipped = pathlib.Path(tfdefakeq.__file__).resolve().parents[1] / "tflite_models"
device_dir = pathlib.Path(WORK) / "device_models"
device_dir.mkdir(parents=True, exist_ok=True)
for name in ("resnet18_64_int8", "resnet18_64_int4"):
    for suffix in (".tflite", ".manifest.json"):
        shutil.copyfile(shipped / (name + suffix), device_dir / (name + suffix))
sorted(p.name for p in device_dir.iterdir())'''),
    new_markdown_cell("""## 2. Benchmark
INT4 weights are unpacked to INT8 when the model loads (XNNPACK has no INT4 convolution kernels), so the
int4 file is half the size of the int8 one and runs at int8 speed. `--int4 packed` shows the difference."""),
    new_code_cell('''from tfdefakeq.runtime.bench import bench_model

runs = 10 if SMOKE else 200
for name in ("resnet18_64_int8", "resnet18_64_int4"):
    for mode in (("unpacked", "packed") if "int4" in name else ("unpacked",)):
        r = bench_model(device_dir / f"{name}.tflite", threads=1, warmup=5, runs=runs, unpack_int4=(mode == "unpacked"))
        print(f"{name:18s} int4 {mode:8s} p50 {r['latency_ms_p50']:.3f} ms  p90 {r['latency_ms_p90']:.3f} ms  "
              f"{r['size_bytes']:,} bytes")'''),
    new_markdown_cell("""## 3. Score images, a folder and a video
`python -m tfdefakeq.predict MODEL PATH` takes an image, a folder (recursive) or a video (frames sampled,
scores averaged per video); `--face-crop` scores the largest face found by BlazeFace."""),
    new_code_cell('''import numpy as np
from PIL import Image
from tfdefakeq import predict
from tfdefakeq.data.synthetic import SyntheticConfig, generate

data = generate(os.path.join(WORK, "data") if SMOKE else None,
                SyntheticConfig(ae_steps=20, max_crops_per_photo=4) if SMOKE else SyntheticConfig(), progress=False)
folder = data / "test" / "upsampler"
scores_csv = pathlib.Path(WORK) / "scores.csv"
predict.main(predict.parse_args([str(device_dir / "resnet18_64_int4.tflite"), str(folder), "--out", str(scores_csv), "--overwrite"]))'''),
    new_code_cell('''import av

# a short clip made from test crops, to show per-video aggregation
video = pathlib.Path(WORK) / "clip.mp4"
frames = [np.asarray(Image.open(p).convert("RGB").resize((128, 128))) for p in sorted((folder / "1_fake").glob("*.png"))[:24]]
with av.open(str(video), "w") as container:
    stream = container.add_stream("libx264", rate=8)
    stream.width, stream.height, stream.pix_fmt = 128, 128, "yuv420p"
    for frame in frames:
        container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())
predict.main(predict.parse_args([str(device_dir / "resnet18_64_int8.tflite"), str(video), "--frames", "8"]))'''),
    new_markdown_cell("""## 4. Coral Edge TPU
The Edge TPU needs a full-integer int8 model with supported ops only; the first unsupported op sends the
rest of the graph to the CPU. `python -m tfdefakeq.edgetpu MODEL` checks op by op, and runs
`edgetpu_compiler` when it is installed (Debian/Ubuntu x86 hosts, from Coral's apt repository)."""),
    new_code_cell('''from tfdefakeq.edgetpu import check_model, format_report

for name in ("resnet18_64_int8", "resnet18_64_int4"):
    print(format_report(check_model(device_dir / f"{name}.tflite")))
    print()'''),
]


def main() -> None:
    notebooks = {"01_quickstart.ipynb": QUICKSTART, "03_deployment.ipynb": DEPLOY}
    for name, cells in notebooks.items():
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "colab": {"provenance": []},
        })
        nbformat.write(nb, HERE / name)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
