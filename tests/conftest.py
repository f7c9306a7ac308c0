"""Shared pytest fixtures. Keep each fixture small, documented and session-scoped when it is costly."""

from __future__ import annotations

import pytest

# A tiny synthetic dataset: every source photo, 4 crops each, 20 autoencoder steps (~10 s).
TINY_SYNTHETIC = dict(ae_steps=20, max_crops_per_photo=4, generators=("autoencoder", "upsampler"))


@pytest.fixture(scope="session")
def tiny_synthetic_config():
    from tfdefakeq.data.synthetic import SyntheticConfig

    return SyntheticConfig(**TINY_SYNTHETIC)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory, tiny_synthetic_config):
    """Path of a generated tiny synthetic ForenSynths tree (train/val/test, 2 generators). Read-only."""
    from tfdefakeq.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("synthetic") / "tiny", tiny_synthetic_config, progress=False)
