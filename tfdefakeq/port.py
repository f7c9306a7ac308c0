"""python -m tfdefakeq.port CHECKPOINT --backbone NAME --out det.weights.h5: a PyTorch checkpoint
into our Keras twin, saved as a float detector (weights + manifest) that `convert` and
`train --init` take as they take their own.

Reads `.pth`/`.pt` (zip or legacy) and `.safetensors` without torch and without running code from
the file (tfdefakeq.torchport.checkpoint). Maps torchvision ResNet-18/34/50 and MobileNetV2,
DeepfakeBench's Xception and EfficientNet-B4, and efficientnet_pytorch's B0/B4
(tfdefakeq.torchport.mapping). The detector takes our Preprocess ((pixel - 128) / 128); torch's
mean/std normalisation becomes its first layer, so the runtime feeds it exactly what torch saw.

    python -m tfdefakeq.port cnndetection.pth --backbone resnet50 --out det.weights.h5 --input-size 224
    python -m tfdefakeq.convert det.weights.h5 --data DIR --out det_int8.tflite --format int8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tfdefakeq.core.cli import run_cli
from tfdefakeq.core.errors import UserError

VERB = "port"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tfdefakeq.port", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path, help=".pth / .pt (zip or legacy torch.save) or .safetensors")
    p.add_argument("--backbone", required=True,
                   help="resnet18 | resnet34 | resnet50 | mobilenet_v2 | xception | efficientnet_b0 | efficientnet_b4")
    p.add_argument("--out", type=Path, required=True, help="NAME.weights.h5 (its NAME.manifest.json is written beside it)")
    p.add_argument("--input-size", type=int, default=None, help="input side in pixels (default: the backbone's native size)")
    p.add_argument("--fake-class", type=int, default=None,
                   help="index of the 'fake' logit in a 2-logit head (default 1, DeepfakeBench's label); 0 negates a 1-logit head")
    p.add_argument("--mean", type=float, nargs=3, default=None, help="torch's normalisation mean on [0, 1] pixels "
                   "(default: ImageNet's; 0.5 0.5 0.5 for DeepfakeBench's Xception)")
    p.add_argument("--std", type=float, nargs=3, default=None, help="torch's normalisation std (default as --mean)")
    p.add_argument("--torch-image-size", type=int, default=None,
                   help="EfficientNet: the image size efficientnet_pytorch built the model with (its static padding; default native)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    from tfdefakeq.core.fileio import check_writable
    from tfdefakeq.core.manifest import manifest_path
    from tfdefakeq.engine.modelio import WEIGHTS_SUFFIX
    from tfdefakeq.torchport.checkpoint import checkpoint_format, read_state_dict, sha256
    from tfdefakeq.torchport.detector import port_checkpoint
    from tfdefakeq.torchport.mapping import FAMILIES

    if args.backbone not in FAMILIES:
        raise UserError(f"--backbone {args.backbone}: no PyTorch mapping (known: {', '.join(sorted(FAMILIES))})")
    if not args.out.name.endswith(WEIGHTS_SUFFIX):
        raise UserError(f"{args.out}: a detector path must end in {WEIGHTS_SUFFIX}")
    check_writable(args.out, overwrite=args.overwrite)
    check_writable(manifest_path(args.out), overwrite=args.overwrite)
    if (args.mean is None) != (args.std is None):
        raise UserError("--mean and --std go together")
    if args.std is not None and min(args.std) <= 0:
        raise UserError(f"--std {args.std}: must be positive")
    state = read_state_dict(args.checkpoint)  # everything that can fail runs before anything is written
    model, manifest = port_checkpoint(state, args.backbone, args.input_size, args.fake_class, path=args.checkpoint,
                                      mean_std=None if args.mean is None else [args.mean, args.std],
                                      torch_image_size=args.torch_image_size)
    manifest.source = {"file": args.checkpoint.name, "sha256": sha256(args.checkpoint),
                       "format": checkpoint_format(args.checkpoint), "tensors": len(state), **manifest.source}
    from tfdefakeq.engine.modelio import save_detector

    save_detector(model, args.out, manifest, overwrite=args.overwrite)
    print(f"{args.out}: {args.backbone} ({manifest.build_kwargs.get('torch_layout')}) from {args.checkpoint.name}, "
          f"{manifest.input_shape[0]} px, {model.count_params():,} parameters")
    return 0


def cli(argv=None) -> None:
    run_cli(VERB, parse_args, main, argv)


if __name__ == "__main__":
    cli(sys.argv[1:])
