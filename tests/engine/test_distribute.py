"""Strategy selection. Training under MirroredStrategy over two logical CPUs runs in
tests/engine/test_multiworker.py (the 1-process reference of every multi-worker run)."""

import pytest

from tfdefakeq.engine.distribute import make_strategy
from tfdefakeq.core.errors import UserError


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
