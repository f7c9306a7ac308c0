"""Raw int8 outputs of .tflite models on fixed inputs, for comparing machines (ci/rpi_emulated.sh).

    python ci/rpi_outputs.py INPUTS.npz OUT.npz MODEL.tflite [MODEL.tflite ...]

INPUTS.npz holds uint8 images (N, H, W, 3) under the key of each model's input size ("64" for
64x64). For each model it writes the raw output tensor of every image, loaded through
tfdefakeq.runtime (models with INT4/INT2 tensors twice: unpacked to int8 at load, and packed), with XNNPACK on and
off. A configuration the runtime refuses to load (packed INT2: the TFLite kernels take INT8 or INT4
filters only) is recorded as `error|KEY` holding the one-line reason, so both machines can be seen
to refuse it alike. Only numpy + the TFLite runtime are needed: it runs under qemu-aarch64 in an arm64 sysroot.
"""

import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tfdefakeq.core.errors import UserError  # noqa: E402
from tfdefakeq.core.manifest import Manifest, manifest_path  # noqa: E402
from tfdefakeq.runtime.interpreter import TFLiteModel  # noqa: E402
from tfdefakeq.runtime.unpack import packed_tensor_count  # noqa: E402


def main(argv):
    inputs_path, out_path, *models = argv
    inputs = np.load(inputs_path)
    results, seconds = {}, {}
    for path in models:
        path = Path(path)
        manifest = Manifest.load(manifest_path(path))
        packed = packed_tensor_count(path.read_bytes()) > 0
        for unpack in ([True, False] if packed else [True]):
            for xnnpack in (True, False):
                int4 = ("unpacked" if unpack else "packed") if packed else "no-int4"
                key = f"{path.stem}|{int4}|{'xnnpack' if xnnpack else 'builtin'}"
                try:
                    model = TFLiteModel(path, use_xnnpack=xnnpack, unpack_packed=unpack)
                except UserError as e:
                    results[f"error|{key}"] = np.array(str(e).split(": ", 1)[-1])
                    print(f"{key}: does not load: {e}", flush=True)
                    continue
                images = inputs[str(model.image_size[0])]
                start = time.perf_counter()
                raw = [model.invoke_raw(model.quantize_input(manifest.preprocess.apply(img[None]))).copy() for img in images]
                seconds[key] = time.perf_counter() - start
                results[key] = np.concatenate([r.reshape(1, -1) for r in raw])
                print(f"{key}: {len(images)} images, {seconds[key]:.2f} s, first outputs {results[key][:6, 0].tolist()}", flush=True)
    np.savez(out_path, **results)
    print(f"machine {platform.machine()} python {platform.python_version()} numpy {np.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
