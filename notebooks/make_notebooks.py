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
from tfdefakeq.core.manifest import Manifest, manifest_path
from tfdefakeq.runtime.modelinfo import read_model_info

int4_path = os.path.join(WORK, "detector_int4.tflite")
if not os.path.exists(int4_path):
    convert.main(convert.parse_args([os.path.join(w4a8_dir, "model.weights.h5"), "--data", str(data), "--out", int4_path]))
info = read_model_info(int4_path)
print(f"{info.size_bytes:,} bytes; weight bytes by type: {dict(info.weight_bytes)}")
Manifest.load(manifest_path(int4_path)).metrics["parity"]'''),
    new_markdown_cell("""## 5. Evaluate and benchmark with the runtime alone
`tfdefakeq.runtime` needs only numpy, Pillow and ai-edge-litert: the same code runs on the device."""),
    new_code_cell('''from tfdefakeq.runtime.scoring import evaluate_model, format_table
from tfdefakeq.runtime.latency import bench_model

rows, scores = evaluate_model(int4_path, data, split="test")
print(format_table(rows))
result = bench_model(int4_path, threads=1, warmup=3, runs=10 if SMOKE else 100)
print(f"p50 {result['latency_ms_p50']:.3f} ms, p90 {result['latency_ms_p90']:.3f} ms on {result['processor']}")'''),
    new_code_cell('''from tfdefakeq.core.report import plot_roc_pr
from IPython.display import Image

labels = [s["label"] for s in scores]
probs = [s["prob"] for s in scores]
generators = [s["generator"] for s in scores]
Image(filename=str(plot_roc_pr(labels, probs, generators, os.path.join(WORK, "curves.png"), "int4 detector on the test split")))'''),
]


ADAPTIVE = [
    new_markdown_cell(f"""# tfdefakeq 02: adaptive bidirectional quantization

{badge("02_adaptive_quantization.ipynb")}

W4A8 gives every layer 4 bits. Layers are not equally fragile: some lose nothing at 2 bits, others
hurt the detector already at 4. The adaptive scheme (after DeFakeQ) measures this on calibration images
and spends a bit budget where it matters, in two directions: horizontally, bits per layer (8, 4, 3 or
2); vertically, inside a low-bit convolution, the few input channels that carry most of the forgery
signal stay on an 8-bit path. This notebook makes a plan and looks at it, fine-tunes and converts at two
budgets, compares with uniform 4-bit weights and the float model, and reuses an edited plan."""),
    new_code_cell(INSTALL),
    new_code_cell(PARAMETERS),
    new_markdown_cell("""## 1. Data and a float detector
The data and the float ResNet-18 of notebook 01 (reused when notebook 01 ran with the same
`TFDEFAKEQ_WORK`)."""),
    new_code_cell('''from tfdefakeq.data.synthetic import SyntheticConfig, generate
from tfdefakeq import train

config = SyntheticConfig(ae_steps=20, max_crops_per_photo=4, upsampler_sigma=0.1) if SMOKE else SyntheticConfig()
data = generate(os.path.join(WORK, "data") if SMOKE else None, config, progress=not SMOKE)
common = ["--data", str(data), "--input-size", str(INPUT_SIZE), "--batch-size", str(BATCH), "--aug-prob", "0.1"]
float_dir = os.path.join(WORK, "float")
float_weights = os.path.join(float_dir, "model.weights.h5")
if not os.path.exists(float_weights):
    train.main(train.parse_args(common + ["--out", float_dir, "--backbone", "resnet18", "--width", str(WIDTH),
                                          "--highpass", "--epochs", str(EPOCHS), "--lr", "3e-3" if SMOKE else "2e-3"]))'''),
    new_markdown_cell("""## 2. The plan
`quantize(model, "adaptive", calib_images, budget=3)` returns the QAT model, with its plan in
`.quant_plan`. The budget is the average number of bits per weight of the whole `.tflite`: scales,
biases and graph count too, so a budget of 3 leaves fewer bits than that to the weights themselves.
The calibration images here are the ones `tfdefakeq.train` measures with (128 train crops, seed 0),
so this plan is the one the 3-bit run of section 3 makes."""),
    new_code_cell('''import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
from tfdefakeq import quant
from tfdefakeq.data.folders import balanced_subset, scan_forensynths
from tfdefakeq.engine.modelio import load_detector
from tfdefakeq.runtime.images import load_images

BUDGETS = (3.0,) if SMOKE else (3.0, 2.5)  # smoke runs: one budget (the test suite only checks that every cell runs)
CALIB = 32 if SMOKE else 128  # calibration images: QAT ranges and sensitivity (train's --calib-images)
model, manifest = load_detector(float_weights)
calib = balanced_subset(scan_forensynths(data, "train"), CALIB, seed=0)
calib_images = manifest.preprocess.apply(load_images([s.path for s in calib], (INPUT_SIZE, INPUT_SIZE)))
qat = quant.quantize(model, "adaptive", calib_images, budget=BUDGETS[0])
plan = qat.quant_plan
plan.budget'''),
    new_markdown_cell("""### Sensitivity
Each layer alone is put on the b-bit grid (everything else float) and scored by the mean squared change
of the detector's logit on the calibration images. Options: the bits, with `s` the same bits with
the layer's salient input channels kept at 8 bits, and with `t` one scale for the whole kernel instead
of one per output channel (offered where the scales are a large share of the layer's bytes). The high-pass front end, the first convolution and
the classifier stay at 8 bits and are not measured. The allocator picks one option per layer (white
dots) that minimises the summed score within the budget; a split costs file bytes too (a second
convolution, gather indices), so it must earn its place."""),
    new_code_cell('''from tfdefakeq.quant.horizontal import option_key

options = ["8", "8t", "4", "4s", "4t", "3", "3s", "3t", "2", "2s", "2t"]
sens = pd.DataFrame(plan.sensitivity).T.reindex(columns=options)
chosen = {n: option_key(plan.weight_bits[n], n in plan.salient_channels, n in plan.per_tensor) for n in sens.index}
fig, ax = plt.subplots(figsize=(7, 0.3 * len(sens) + 1.5))
im = ax.imshow(np.log10(sens.to_numpy(dtype=float)), aspect="auto", cmap="viridis")
ax.scatter([options.index(chosen[n]) for n in sens.index], range(len(sens)), color="white", s=25)
ax.set_xticks(range(len(options)), options)
ax.set_yticks(range(len(sens)), sens.index, fontsize=8)
ax.set_xlabel("option (bits; s: salient input channels at 8 bits; t: one scale per tensor)")
ax.set_title(f"sensitivity per layer; white: chosen at {BUDGETS[0]:g} bits")
fig.colorbar(im, label="log10 mean squared logit change")
plt.show()'''),
    new_markdown_cell("""### The bit map
Bits per layer (BatchNorm folded into the convolutions, as the plan names them) next to the layers'
sizes: the budget goes to the small, sensitive layers; the large late layers go to 2 bits."""),
    new_code_cell('''from tfdefakeq.quant.fold import fold_batchnorm

folded = fold_batchnorm(model)  # the plan's layers are those of the BN-folded model
kernels = {n: folded.get_layer(n).weights[0].shape for n in plan.weight_bits}
sizes = {n: int(np.prod(shape)) for n, shape in kernels.items()}
bitmap = pd.DataFrame({
    "weights": sizes,
    "bits": plan.weight_bits,
    "input channels": {n: int(shape[-2]) for n, shape in kernels.items()},
    "at 8 bits": {n: len(plan.salient_channels.get(n, [])) for n in plan.weight_bits},
    "sensitivity": {n: plan.sensitivity[n][chosen[n]] for n in sens.index},
})
fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
colors = bitmap["bits"].map({8: "tab:blue", 4: "tab:green", 3: "tab:olive", 2: "tab:orange"})
top.bar(bitmap.index, bitmap["bits"], color=colors, hatch=["//" if k else "" for k in bitmap["at 8 bits"]])
top.set_ylabel("weight bits")
top.set_yticks([2, 3, 4, 8])
top.set_title(f"plan at {BUDGETS[0]:g} bits: weights {plan.budget['weight_bits_avg']:.2f}, file "
              f"{plan.budget['file_bits_avg']:.2f} bits per weight (hatched: salient channels split off)", fontsize=9)
bottom.bar(bitmap.index, bitmap["weights"], color="gray")
bottom.set_yscale("log")
bottom.set_ylabel("weights")
bottom.tick_params(axis="x", labelrotation=90, labelsize=8)
plt.show()
bitmap'''),
    new_markdown_cell("""### Salient channels
Saliency of input channel c of a convolution: the mean over calibration images of |sum over the image
of x_c * dz/dx_c| (how much the logit z moves with that channel). Every low-bit convolution is offered
its top 1/32 of channels (at least one) as an 8-bit path; where the allocator takes the offer, those
channels go through a separate 8-bit convolution whose output is added to the low-bit one's."""),
    new_code_cell('''from tfdefakeq.quant.vertical import channel_saliency, pick_salient

offered = [n for n in plan.sensitivity if any(k.endswith("s") for k in plan.sensitivity[n])]
saliency = channel_saliency(model, offered, calib_images)  # a conv's inputs are the same with BN folded or not
candidates = pick_salient(saliency, 1 / 32)
share = {n: saliency[n][candidates[n]].sum() / saliency[n].sum() for n in offered}
print(f"{len(offered)} convolutions offered a split; kept in {len(plan.salient_channels)}: "
      + (", ".join(f"{n} (channels {c})" for n, c in plan.salient_channels.items()) or "none"))
print("saliency held by the offered channels:\\n" + "\\n".join(
    f"  {n}: {len(candidates[n])} of {len(saliency[n])} channels hold {share[n]:.0%}" for n in offered))

name = next(iter(plan.salient_channels), max(offered, key=lambda n: sizes[n]))
order = np.argsort(-saliency[name])
fig, ax = plt.subplots(figsize=(8, 3))
ax.bar(range(len(order)), saliency[name][order],
       color=["tab:red" if c in candidates[name] else "tab:gray" for c in order])
ax.set_xlabel("input channel, by saliency")
ax.set_ylabel("saliency")
ax.set_title(f"{name}: in red the channels kept at 8 bits" + ("" if name in plan.salient_channels else " if split"))
plt.show()'''),
    new_markdown_cell("""### A budget has a floor
The first convolution, the classifier and every layer's scales and biases cost what they cost: a budget
below the cheapest plan is refused with one line, before any training."""),
    new_code_cell('''from tfdefakeq.core.errors import UserError

try:
    quant.quantize(model, "adaptive", calib_images, budget=2.0)
except UserError as e:
    print("UserError:", e)'''),
    new_markdown_cell("""## 3. Fine-tune and convert
`python -m tfdefakeq.convert FLOAT --scheme adaptive --avg-bits B --out X.tflite` makes the plan,
fine-tunes the QAT model in `X.qat/` (distilling from the float model, logits and features: see
`--distill`) and converts it: 4- and 3-bit weights are stored as INT4 tensors, 2-bit ones as INT2, and
the runtime unpacks them to INT8 when it loads the model. For comparison: `lsq_w4a8` (4 bits in every
body layer, learned step sizes), `w4a8` (both not in smoke runs) and the float32 model."""),
    new_code_cell('''from tfdefakeq import convert

out_dir = os.path.join(WORK, "adaptive")
runs = {"float32": ["--format", "float32"]}
runs.update({f"adaptive {b:g} bits": ["--scheme", "adaptive", "--avg-bits", str(b)] for b in BUDGETS})
runs.update({s: ["--scheme", s] for s in ([] if SMOKE else ["lsq_w4a8", "w4a8"])})
os.makedirs(out_dir, exist_ok=True)
paths = {}
for name, extra in runs.items():
    paths[name] = os.path.join(out_dir, name.replace(" ", "_") + ".tflite")
    if not os.path.exists(paths[name]):
        qat = ["--epochs", str(QAT_EPOCHS), "--batch-size", str(BATCH), "--calib-images", str(CALIB)] if "--scheme" in extra else []  # QAT flags need a scheme
        convert.main(convert.parse_args([float_weights, "--data", str(data), "--out", paths[name]] + qat + extra))'''),
    new_markdown_cell("""Each `.tflite` evaluated on the test split by the runtime. `bits/weight` is the file's size over the
model's weights, what the budget is about; `planned` is the plan's own estimate of it (`file_bits_avg` in
`X.qat/bit_plan.json`); `kernels` counts the constant tensors by type."""),
    new_code_cell('''from tfdefakeq.runtime.scoring import evaluate_model
from tfdefakeq.runtime.modelinfo import read_model_info
from tfdefakeq.quant.horizontal import QuantPlan

n_weights = sum(sizes.values())


def result(path):
    rows, _ = evaluate_model(path, data, split="test")
    info = read_model_info(path)
    types = {t: c for t, c in info.tensor_types.items() if t in ("FLOAT32", "INT8", "INT4", "INT2")}
    plan_json = path.replace(".tflite", ".qat/bit_plan.json")
    planned = QuantPlan.load(plan_json).budget["file_bits_avg"] if os.path.exists(plan_json) else ""
    return {"bytes": info.size_bytes, "bits/weight": round(8 * info.size_bytes / n_weights, 3), "planned": planned,
            "AP": round(rows[-1]["ap"], 4), "AUC": round(rows[-1]["auc"], 4),
            "kernels": ", ".join(f"{c} {t}" for t, c in sorted(types.items()))}


results = pd.DataFrame({name: result(path) for name, path in paths.items()}).T
results'''),
    new_code_cell('''from matplotlib.ticker import FuncFormatter


def plot_results(results):
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in results.iterrows():
        point = "float32" in name
        ax.scatter(r["bytes"] / 1024, r["AP"], s=120 if point else 50, marker="*" if point else "o",
                   color="black" if point else None)
        ax.annotate(name, (r["bytes"] / 1024, r["AP"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.15)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
    ax.set_xlabel(".tflite size (KiB, log scale)")
    ax.set_ylabel("AP, test split")
    ax.set_title("AP against file size" + (" (smoke size: AP is noise)" if SMOKE else ""))
    ax.grid(alpha=0.3)
    plt.show()


plot_results(results)'''),
    new_markdown_cell("""## 4. Reuse a plan
Each adaptive run writes its plan to `X.qat/bit_plan.json`; `--bit-plan FILE` fine-tunes with a plan as
it is, without measuring: to train longer, on other data, or with a plan edited by hand. Here the layer
that suffers most at 2 bits goes back to 4 bits."""),
    new_code_cell('''edited = QuantPlan.load(os.path.join(out_dir, f"adaptive_{BUDGETS[0]:g}_bits.qat", "bit_plan.json"))
at_two = {n: s[option_key(2, n in edited.salient_channels, n in edited.per_tensor)]  # its score as planned
          for n, s in edited.sensitivity.items() if edited.weight_bits[n] == 2}
if at_two:
    worst = max(at_two, key=at_two.get)
    edited.weight_bits[worst] = 4
    print(f"{worst}: 2 -> 4 bits")
plan_file = edited.save(os.path.join(out_dir, "edited_plan.json"), overwrite=True)
# without salient channels in the file, --bit-plan picks 1/32 of each low-bit conv's channels again
keep_split = [] if edited.salient_channels else ["--salient-ratio", "0"]
paths["adaptive edited"] = os.path.join(out_dir, "adaptive_edited.tflite")
if not os.path.exists(paths["adaptive edited"]):
    convert.main(convert.parse_args([float_weights, "--data", str(data), "--out", paths["adaptive edited"],
                                     "--scheme", "adaptive", "--bit-plan", str(plan_file),
                                     "--epochs", str(QAT_EPOCHS), "--batch-size", str(BATCH), "--calib-images", str(CALIB)]
                                    + keep_split))
used = QuantPlan.load(os.path.join(out_dir, "adaptive_edited.qat", "bit_plan.json"))
same = used.weight_bits == edited.weight_bits and used.salient_channels == edited.salient_channels
print(f"fine-tuned with the edited plan: {same} (file {used.budget['file_bits_avg']:.3f} bits per weight)")
results.loc["adaptive edited"] = result(paths["adaptive edited"])
plot_results(results)
results'''),
    new_markdown_cell("""## Where to go next
- `benchmarks/quant_methods.py` compares the methods as the device runs them (protocol v2): float,
  int8 PTQ, tfmot, ai-edge-quantizer, Sony MCT's mixed precision, LSQ and the adaptive scheme at file
  budgets of the float32 file over 8, 10.7, 13 and 16, each over three seeds, trained on two generator
  families and scored on two held out, with paired bootstrap intervals against the float model and the
  best peer whose file fits the same bytes. Ablations: no split `--salient-ratio 0`, channels picked at
  random as DeFakeQ picks them `--channel-choice random`, no distillation `--distill off`. Results:
  `benchmarks/results/quant_methods.md`.
- `--budget-bytes N` instead of `--avg-bits B` sets the budget as a file size.
- The adaptive `.tflite` files run with the runtime alone, like the others (notebook 03)."""),
]


DEPLOY = [
    new_markdown_cell(f"""# tfdefakeq 03: Raspberry Pi and Coral deployment

{badge("03_deployment.ipynb")}

The shipped detectors (`tflite_models/` in the repository, `tfdefakeq.shipped_model(name)` in an installed
package) run with the runtime alone (`pip install tfdefakeq[edge]`:
numpy, Pillow, ai-edge-litert). This notebook does on this machine what you do on the device: copy a
model, benchmark it, score images / folders / videos, and check whether it maps onto a Coral Edge TPU."""),
    new_code_cell(INSTALL),
    new_code_cell(PARAMETERS),
    new_markdown_cell("""## 1. Copy the model to the device
A `.tflite` travels with its `NAME.manifest.json` (preprocessing, bits per layer, measured metrics, and the
SHA-256 of the model's bytes: the runtime opens a model without first trying it in a child process only when
they match).
On a Pi: `scp tflite_models/resnet18_64_int4.* pi@raspberrypi.local:~/models/`."""),
    new_code_cell('''import shutil, pathlib, tfdefakeq

# the installed package carries the shipped models (a source checkout reads tflite_models/)
device_dir = pathlib.Path(WORK) / "device_models"
device_dir.mkdir(parents=True, exist_ok=True)
for name in ("resnet18_64_int8", "resnet18_64_int4"):
    model = tfdefakeq.shipped_model(name)
    for suffix in (".tflite", ".manifest.json"):
        shutil.copyfile(model.with_name(name + suffix), device_dir / (name + suffix))
sorted(p.name for p in device_dir.iterdir())'''),
    new_markdown_cell("""## 2. Benchmark
INT4 weights are unpacked to INT8 when the model loads (XNNPACK has no INT4 convolution kernels), so the
int4 file is half the size of the int8 one and runs at int8 speed. `--packed packed` shows the difference."""),
    new_code_cell('''from tfdefakeq.runtime.latency import bench_model

runs = 10 if SMOKE else 200
for name in ("resnet18_64_int8", "resnet18_64_int4"):
    for mode in (("unpacked", "packed") if "int4" in name else ("unpacked",)):
        r = bench_model(device_dir / f"{name}.tflite", threads=1, warmup=5, runs=runs, unpack_packed=(mode == "unpacked"))
        print(f"{name:18s} weights {mode:8s} p50 {r['latency_ms_p50']:.3f} ms  p90 {r['latency_ms_p90']:.3f} ms  "
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
    new_code_cell('''from tfdefakeq.runtime.edgetpu_ops import check_model, format_report

for name in ("resnet18_64_int8", "resnet18_64_int4"):
    print(format_report(check_model(device_dir / f"{name}.tflite")))
    print()'''),
]


BYO = [
    new_markdown_cell(f"""# tfdefakeq 04: bring your own detector

{badge("04_bring_your_own.ipynb")}

Two detectors that were not trained with tfdefakeq, taken to a Raspberry Pi: a Keras model built from
`keras.applications` with a head of your own, and a PyTorch checkpoint. Each goes to a float32, an int8
and an adaptive ~3-bit `.tflite`, each `.tflite` proven to compute what its Keras model computes, then
evaluated and benchmarked with the TensorFlow-free runtime."""),
    new_code_cell(INSTALL),
    new_code_cell(PARAMETERS + """
AVG_BITS = 3.0  # the adaptive target (a model whose cheapest plan is larger runs without a budget)
SENS_IMAGES = 8 if SMOKE else 128  # calibration images for the adaptive scheme's sensitivity
SPLIT = ["--salient-ratio", "0"] if SMOKE else []  # smoke: horizontal only (no salient-channel options to measure)"""),
    new_markdown_cell("""## 1. Data
The embedded data set (notebook 01): real photographs shipped with the package, fakes made here."""),
    new_code_cell('''from tfdefakeq.data.synthetic import SyntheticConfig, generate

config = SyntheticConfig(ae_steps=20, max_crops_per_photo=4, upsampler_sigma=0.1) if SMOKE else SyntheticConfig()
data = generate(os.path.join(WORK, "data") if SMOKE else None, config, progress=not SMOKE)
os.makedirs(WORK, exist_ok=True)'''),
    new_markdown_cell("""## 2. A Keras detector of your own
MobileNetV2 from `keras.applications` (ImageNet weights; none in a smoke run, which downloads nothing)
called inside a model with its own preprocessing (`Rescaling`) and a 2-class softmax head, trained with
plain `model.fit`, saved as `det.keras`. That file is all tfdefakeq needs."""),
    new_code_cell('''import numpy as np
from tfdefakeq.core.tfcompat import keras
from tfdefakeq.data.folders import balanced_subset, scan_forensynths
from tfdefakeq.runtime.images import load_images

keras.utils.set_random_seed(0)
size = INPUT_SIZE if SMOKE else 96
inputs = keras.Input((size, size, 3))
x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)  # keras.applications' "tf" preprocessing, in the graph
base = keras.applications.MobileNetV2(include_top=False, alpha=0.35 if SMOKE else 1.0, input_shape=(size, size, 3),
                                      weights=None if SMOKE else "imagenet")
x = keras.layers.GlobalAveragePooling2D()(base(x))
outputs = keras.layers.Dense(2, activation="softmax", name="real_fake")(keras.layers.Dropout(0.2)(x))
mine = keras.Model(inputs, outputs)
for layer in base.layers:  # keras.applications' BatchNorm momentum 0.999 suits ImageNet's long runs, not this short one
    if isinstance(layer, keras.layers.BatchNormalization):
        layer.momentum = 0.9
train = balanced_subset(scan_forensynths(data, "train"), 128 if SMOKE else 4096, seed=0)
images = load_images([s.path for s in train], (size, size)).astype("float32")
labels = np.array([s.label for s in train])
mine.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
mine.fit(images, labels, batch_size=BATCH, epochs=1 if SMOKE else 5, verbose=0 if SMOKE else 2)
keras_file = os.path.join(WORK, "det.keras")
mine.save(keras_file)'''),
    new_markdown_cell("""`convert` imports it: nothing in the file runs (a `Lambda` layer is refused), the nested MobileNetV2
is inlined into one flat graph, the `Rescaling` moves into the manifest's preprocessing and the softmax
head becomes one logit for P(fake) (`--fake-class` says which class is fake; default 1). float32, then
int8 by post-training quantization; each file is written only if its parity check passes."""),
    new_code_cell('''from tfdefakeq import convert
from tfdefakeq.core.manifest import Manifest, manifest_path

out_dir = os.path.join(WORK, "byo")
os.makedirs(out_dir, exist_ok=True)
models = {}


def run_convert(name, source, *flags):
    models[name] = os.path.join(out_dir, name.replace(" ", "_") + ".tflite")
    if not os.path.exists(models[name]):
        convert.main(convert.parse_args([str(source), "--data", str(data), "--out", models[name], "--calib-images", "32",
                                         *flags]))


run_convert("keras float32", keras_file)
run_convert("keras int8", keras_file, "--format", "int8")
manifest = Manifest.load(manifest_path(models["keras int8"]))
print(manifest.backbone, manifest.source, "fake class", manifest.fake_class, manifest.preprocess)'''),
    new_markdown_cell("""### Adaptive ~3 bits
`convert det.keras --scheme adaptive --avg-bits 3` measures each layer's sensitivity, allocates bits
under the budget, fine-tunes (distilling from the float model) and converts. Here the two steps it runs
are called one by one (`train`, then `convert`), to measure sensitivity on fewer images in a smoke run.
The budget counts the whole file: scales, biases and the graph too. MobileNetV2 spends much of its file
on those (many small layers, a scale and a bias per output channel): at alpha 1.0 the cheapest plan (every
free layer at 2 bits) already takes 3.9 bits per weight, at alpha 0.35 7.0. A budget a model cannot meet is
refused in one line, before anything is measured, naming the smallest one the plan can meet; such a model
runs here without a budget: the bytes of the uniform 4-bit file, redistributed by sensitivity."""),
    new_code_cell('''from tfdefakeq import train
from tfdefakeq.core.errors import UserError
from tfdefakeq.engine.modelio import load_detector
from tfdefakeq.quant import quantize
from tfdefakeq.quant.adaptive import BYTES_RESERVE, smallest_budget
from tfdefakeq.quant.horizontal import QuantPlan


def budget_flags(model_file):
    """["--avg-bits", AVG_BITS], or no budget (the uniform 4-bit file's bytes) for a model whose cheapest plan
    is above AVG_BITS."""
    model, manifest = load_detector(model_file)
    if AVG_BITS * (1 - BYTES_RESERVE) >= smallest_budget(model):  # the allocator keeps 2% for the size estimate
        return ["--avg-bits", str(AVG_BITS)]
    try:  # what the command line says, before anything is measured
        quantize(model, "adaptive", np.zeros((1, *manifest.input_shape), "float32"), budget=AVG_BITS)
    except UserError as e:
        print("refused:", e)
    return []


def run_adaptive(name, float_model):
    flags = budget_flags(float_model)
    qat_dir = os.path.join(out_dir, name.replace(" ", "_") + ".qat")
    if not os.path.exists(os.path.join(qat_dir, "model.weights.h5")):
        train.main(train.parse_args(["--data", str(data), "--init", str(float_model), "--out", qat_dir, "--quiet",
                                     "--scheme", "adaptive", "--calib-images", str(SENS_IMAGES),
                                     "--epochs", str(QAT_EPOCHS), "--batch-size", str(BATCH), *SPLIT, *flags]))
    plan = QuantPlan.load(os.path.join(qat_dir, "bit_plan.json"))
    label = f"{AVG_BITS:g} bits" if flags else f"uniform 4-bit file, {plan.budget['file_bits_avg']:.2f} bits"
    run_convert(f"{name} ({label})", os.path.join(qat_dir, "model.weights.h5"))


run_adaptive("keras adaptive", keras_file)'''),
    new_markdown_cell("""## 3. A PyTorch checkpoint
`python -m tfdefakeq.port CHECKPOINT --backbone NAME --out det.weights.h5` reads a `.pth` / `.pt` or
`.safetensors` **without torch and without running code from the file**, maps its state dict onto the
Keras twin of the architecture and saves a float detector. Mapped: torchvision ResNet-18/34/50 and
MobileNetV2, DeepfakeBench's Xception and EfficientNet-B4, efficientnet_pytorch's B0/B4.

The checkpoint here is the repository's test fixture: a torchvision MobileNetV2 (width 0.25) with a
2-logit head and seeded random weights, saved by `torch.save(model.state_dict(), ...)`, with torch's own
logits on two images beside it. Put your own checkpoint in its place (its AP here is chance: the
weights are noise)."""),
    new_code_cell('''import pathlib
import urllib.request
import tfdefakeq
from tfdefakeq import port

fixtures = pathlib.Path(tfdefakeq.__file__).resolve().parents[1] / "tests" / "fixtures" / "torch"
checkpoint, outputs = fixtures / "mobilenet_v2_w025.pth", fixtures / "mobilenet_v2_w025.npz"
if not checkpoint.exists():  # an installed package (Colab) has no tests/: fetch the two files from the repository
    raw = "https://raw.githubusercontent.com/{REPO}/main/tests/fixtures/torch/"
    fixtures = pathlib.Path(WORK)
    for f in (checkpoint, outputs):
        urllib.request.urlretrieve(raw + f.name, fixtures / f.name)
    checkpoint, outputs = fixtures / checkpoint.name, fixtures / outputs.name
ported = os.path.join(out_dir, "torch_det.weights.h5")
if not os.path.exists(ported):
    port.main(port.parse_args([str(checkpoint), "--backbone", "mobilenet_v2", "--out", ported, "--input-size", "64"]))'''.replace("{REPO}", REPO)),
    new_markdown_cell("""The float32 `.tflite` against torch: the fake logit (logit 1 minus logit 0 of the 2-logit head) that
the runtime computes from the same uint8 images, next to the one torch computed."""),
    new_code_cell('''from tfdefakeq.runtime.loader import load_model

run_convert("torch float32", ported)
fixture = np.load(outputs)
tfl, tfl_manifest = load_model(models["torch float32"])
ours = tfl.predict_logits(fixture["images"], tfl_manifest.preprocess).ravel()
theirs = fixture["logits"][:, 1] - fixture["logits"][:, 0]
print("torch  :", np.round(theirs, 5))
print("tflite :", np.round(ours, 5))
print(f"max |diff| {np.abs(ours - theirs).max():.2g}, relative to the largest |logit| "
      f"{np.abs(ours - theirs).max() / np.abs(theirs).max():.2g}")'''),
    new_code_cell('''run_convert("torch int8", ported, "--format", "int8")
if not SMOKE:  # smoke runs (the test suite) show the adaptive scheme once, on the Keras model above
    run_adaptive("torch adaptive", ported)'''),
    new_markdown_cell("""## 4. Evaluate and benchmark with the runtime alone
Every `.tflite` above on the test split (AP, AUC) and timed (1 thread, XNNPACK, median); `parity` is the
largest logit difference from its Keras model that convert measured before writing the file."""),
    new_code_cell('''import pandas as pd
from tfdefakeq.runtime.latency import bench_model
from tfdefakeq.runtime.scoring import evaluate_model

rows = {}
for name, path in models.items():
    summary = evaluate_model(path, data, split="test")[0][-1]
    parity = Manifest.load(manifest_path(path)).metrics["parity"]
    bench = bench_model(path, threads=1, warmup=3, runs=10 if SMOKE else 100)
    rows[name] = {"bytes": os.path.getsize(path), "AP": round(summary["ap"], 4), "AUC": round(summary["auc"], 4),
                  "parity": f"{parity['max_abs_logit_diff']:.2g}" + (f" ({parity['max_diff_lsb']:.1f} LSB)" if "max_diff_lsb" in parity else ""),
                  "p50 ms": round(bench["latency_ms_p50"], 3)}
pd.DataFrame(rows).T'''),
    new_markdown_cell("""## Where to go next
- `benchmarks/results/byo.md`: every ported architecture (ResNet-18/34/50, MobileNetV2, Xception,
  EfficientNet-B0/B4) through float32 (against torch's outputs), int8 and adaptive, with size and latency.
- `train --init det.keras` (or the ported `det.weights.h5`) fine-tunes on your data before quantizing.
- The `.tflite` files run on a Pi with the runtime alone (notebook 03)."""),
]


def cell_ids(name: str, count: int) -> list[str]:
    """Ids for a notebook's cells: those of the file already written, so that regenerating leaves it as
    it is (nbformat draws new ids at random); new cells get ids from the name and position."""
    import hashlib

    old = [cell.get("id") for cell in nbformat.read(HERE / name, as_version=4).cells] if (HERE / name).exists() else []
    return [old[i] if i < len(old) and old[i] else hashlib.sha1(f"{name}:{i}".encode()).hexdigest()[:8] for i in range(count)]


def main() -> None:
    notebooks = {"01_quickstart.ipynb": QUICKSTART, "02_adaptive_quantization.ipynb": ADAPTIVE, "03_deployment.ipynb": DEPLOY,
                 "04_bring_your_own.ipynb": BYO}
    for name, cells in notebooks.items():
        for cell, cell_id in zip(cells, cell_ids(name, len(cells))):
            cell["id"] = cell_id
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "colab": {"provenance": []},
        })
        nbformat.write(nb, HERE / name)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
