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


@pytest.mark.parametrize("text, message", [
    ("{not json", "TF_CONFIG: not JSON"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "TF_CONFIG: needs"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}', "is not in the cluster"),
])
def test_a_bad_tf_config_is_named(text, message):
    from tfdefakeq.engine.distribute import check_tf_config

    with pytest.raises(UserError, match=message):
        check_tf_config(text)


def test_worker_zero_is_the_chief_unless_the_cluster_names_one():
    from types import SimpleNamespace

    from tfdefakeq.engine.distribute import is_chief

    def strategy(spec, task_type, task_id):
        resolver = SimpleNamespace(cluster_spec=lambda: SimpleNamespace(as_dict=lambda: spec), task_type=task_type,
                                   task_id=task_id)
        return SimpleNamespace(cluster_resolver=resolver)

    workers = {"worker": ["a:1", "b:1"]}
    assert is_chief(strategy(workers, "worker", 0))
    assert not is_chief(strategy(workers, "worker", 1))
    assert not is_chief(strategy(dict(workers, chief=["c:1"]), "worker", 0))
    assert is_chief(strategy(dict(workers, chief=["c:1"]), "chief", 0))
    assert is_chief(strategy({}, None, None))
    assert is_chief(SimpleNamespace())  # one process, no cluster
