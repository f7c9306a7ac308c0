"""benchmarks/runtime.py says which photos it could not read, and why, instead of skipping them silently."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def runtime_benchmark():
    pytest.importorskip("skimage")
    spec = importlib.util.spec_from_file_location("benchmark_runtime", ROOT / "benchmarks" / "runtime.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_skipped_photos_are_counted_and_explained(runtime_benchmark, monkeypatch):
    import skimage.data

    def offline():
        raise OSError("could not download coffee.png: network unreachable")

    _, before = runtime_benchmark.photos(16, n=16)  # what this scikit-image lacks already (e.g. motorcycle_left)
    assert all(" (" in reason for reason in before)
    monkeypatch.setattr(skimage.data, "coffee", offline)
    images, skipped = runtime_benchmark.photos(16, n=16)
    assert images.shape == (16, 16, 16, 3) and images.dtype == np.uint8
    coffee = "coffee (OSError: could not download coffee.png: network unreachable)"
    assert sorted(skipped) == sorted(before + [coffee])
    note = runtime_benchmark.photo_note(skipped, len(images))
    total = len(runtime_benchmark.PHOTOS)
    assert note.startswith(f"16 images from {total - len(skipped)} of {total} scikit-image photos (+ flips); "
                           f"skipped {len(skipped)}: ")
    assert coffee in note
