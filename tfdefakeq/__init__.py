"""tfdefakeq: deepfake detectors from Keras training to quantized TFLite for edge devices.

Importing the package imports no TensorFlow: `tfdefakeq.runtime` runs with only numpy and a
TFLite interpreter. Modules that train or convert import TensorFlow through `tfdefakeq.core.tfcompat`.
"""

__version__ = "0.1.0"


def shipped_model(name: str):
    """Path of a shipped detector, e.g. `shipped_model("resnet18_64_int8")`; its manifest lies beside it.

    An installed package holds copies in `tfdefakeq/_shipped/` (setup.py puts them into every wheel); a
    source checkout reads `tflite_models/` next to the package. Raises UserError listing the names known.
    """
    from importlib.resources import files
    from pathlib import Path

    from tfdefakeq.core.errors import UserError

    filename = name if name.endswith(".tflite") else name + ".tflite"
    folders = [Path(str(files("tfdefakeq") / "_shipped")), Path(__file__).resolve().parent.parent / "tflite_models"]
    for folder in folders:
        if (folder / filename).is_file():
            return folder / filename
    known = sorted({p.name[: -len(".tflite")] for f in folders if f.is_dir() for p in f.glob("*.tflite")})
    raise UserError(f"{filename}: not a shipped model (shipped: {', '.join(known) or 'none found'})")
