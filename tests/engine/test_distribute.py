import subprocess
import sys

import pytest

from tests.conftest import TINY_TRAIN
from tfdefakeq.engine.distribute import make_strategy
from tfdefakeq.core.errors import UserError


def test_mirrored_training_over_two_logical_cpus(tmp_path, synthetic_root):
    out = tmp_path / "mirrored"
    result = subprocess.run(
        [sys.executable, "-m", "tfdefakeq.train", "--data", str(synthetic_root), "--out", str(out), "--epochs", "1",
         "--strategy", "mirrored", "--logical-cpus", "2"] + TINY_TRAIN,
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "training on 2 replica(s) (mirrored strategy)" in result.stdout
    assert (out / "model.weights.h5").exists()


def test_unknown_strategy_is_named():
    with pytest.raises(UserError, match="unknown --strategy 'horovod'"):
        make_strategy("horovod")
