"""Shared pytest fixtures. Keep each fixture small, documented and session-scoped when it is costly."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import pytest


def build_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """The folder `name`, filled by `build(folder)` once per test session.

    Under pytest-xdist every worker has its own session fixtures, so each would train the same
    tiny models again. The workers of one session share the parent of their temporary folders (the
    pattern pytest-xdist documents): the first worker to ask builds the folder under a file lock,
    the others wait and then read it. A build that fails leaves no ".done" mark, and the next
    worker to ask builds again (and fails in its own test, with its own traceback)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder = base / "shared" / name
    folder.parent.mkdir(exist_ok=True)
    done = folder.parent / f"{name}.done"
    with FileLock(str(folder.parent / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def pytest_collection_modifyitems(session, config, items):
    """Runs the modules that hold a `slow` test first, each module's tests kept together and in order.

    pytest-xdist's worksteal scheduler gives each worker a contiguous half of the collection and
    lets an idle worker steal from the end of another's queue. In file order the notebooks and the
    demo (minutes each) came last on one worker, where nothing could be stolen from behind them,
    and the other worker sat idle at the end. First, they are done while the short tests that
    follow can still be shared."""
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow") and item.module is not None}
    items.sort(key=lambda item: item.module is None or item.module.__name__ not in slow_modules)


# A tiny synthetic dataset: every source photo, 4 crops each, 20 autoencoder steps (~10 s).
TINY_SYNTHETIC = dict(ae_steps=20, max_crops_per_photo=4, generators=("autoencoder", "upsampler"))
# Models trained in tests use an easier variant (stronger upsampler traces), so that a few epochs give
# a confident detector whose logits span a range wide enough for LSB-level parity checks.
EASY_SYNTHETIC = dict(TINY_SYNTHETIC, upsampler_sigma=0.1)


@pytest.fixture(scope="session")
def tiny_synthetic_config():
    from tfdefakeq.data.synthetic import SyntheticConfig

    return SyntheticConfig(**TINY_SYNTHETIC)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory, tiny_synthetic_config):
    """Path of a generated tiny synthetic ForenSynths tree (train/val/test, 2 generators). Read-only."""
    from tfdefakeq.data.synthetic import generate

    return build_once(tmp_path_factory, "synthetic_tiny",
                      lambda d: generate(d / "tiny", tiny_synthetic_config, progress=False)) / "tiny"


# Tiny detector runs: ResNet-18 at width 1/4 on 32 px crops; batch 8 so the BatchNorm statistics
# settle in the few epochs (an unsettled model has meaningless logits and output LSBs).
TINY_RUN = ["--input-size", "32", "--batch-size", "8", "--aug-prob", "0.1"]
TINY_TRAIN = ["--backbone", "resnet18", "--width", "0.25", "--highpass"] + TINY_RUN


def run_train(data, out, extra):
    from tfdefakeq import train

    base = TINY_RUN if "--init" in extra else TINY_TRAIN  # --init's model fixes the backbone (train refuses those flags)
    assert train.main(train.parse_args(["--data", str(data), "--out", str(out)] + base + extra)) == 0
    return out / "model.weights.h5"


@pytest.fixture(scope="session")
def easy_synthetic_root(tmp_path_factory):
    """Like `synthetic_root`, with stronger upsampler traces (for the trained-model fixtures)."""
    from tfdefakeq.data.synthetic import SyntheticConfig, generate

    return build_once(tmp_path_factory, "synthetic_easy",
                      lambda d: generate(d / "easy", SyntheticConfig(**EASY_SYNTHETIC), progress=False)) / "easy"


@pytest.fixture(scope="session")
def tiny_float_model(tmp_path_factory, easy_synthetic_root):
    """A float detector trained briefly on the easy tiny synthetic data: path of its model.weights.h5."""
    return build_once(tmp_path_factory, "float", lambda d: run_train(easy_synthetic_root, d, ["--epochs", "20", "--lr", "3e-3"])
                      ) / "model.weights.h5"


@pytest.fixture(scope="session")
def tiny_w4a8_model(tmp_path_factory, easy_synthetic_root, tiny_float_model):
    """The float detector fine-tuned one epoch with the W4A8 scheme."""
    return build_once(tmp_path_factory, "w4a8", lambda d: run_train(
        easy_synthetic_root, d, ["--init", str(tiny_float_model), "--scheme", "w4a8", "--epochs", "1", "--lr", "1e-4"])
    ) / "model.weights.h5"
