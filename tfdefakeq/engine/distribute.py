"""Training on several devices with TensorFlow's own engine (tf.distribute).

    python -m tfdefakeq.train ... --strategy mirrored      # all GPUs of this machine (or all CPU devices)
    python -m tfdefakeq.train ... --strategy multiworker   # several machines; each reads TF_CONFIG
    python -m tfdefakeq.train ... --strategy tpu           # Colab / Cloud TPU

The global batch (`--batch-size`) is split across replicas; Keras' fit distributes the tf.data input.
With more than one replica every global batch has exactly `--batch-size` images (the last, smaller
batch of an epoch is dropped), so each step averages the same number of gradients on every replica.

Several workers (TensorFlow's multi-worker guide): every worker runs the same command with its own
TF_CONFIG; they train one model in lock step. Only the chief writes into --out; the other workers
write the same files into a temporary folder of their own, removed at the end. A resumed run
(`--resume`) reads the chief's checkpoint, so --out must be a folder every worker can read (a shared
file system) for a restarted cluster to continue.
"""

from __future__ import annotations

import json
import os

from tfdefakeq.core.errors import UserError

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")


def make_strategy(name: str, logical_cpus: int | None = None):
    """The tf.distribute strategy called `name`.

    logical_cpus: split the host CPU into this many logical devices first (must run before TensorFlow
    touches any device); with no GPU, `mirrored` then mirrors over them, which is how it is tested here.
    """
    from tfdefakeq.core.tfcompat import tf

    if name not in STRATEGIES:
        raise UserError(f"unknown --strategy {name!r} (choose from {', '.join(STRATEGIES)})")
    if logical_cpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
        except RuntimeError as e:
            raise UserError(f"--logical-cpus must be set before TensorFlow initialises its devices ({e})") from e
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            print("tfdefakeq train: TF_CONFIG is not set; multiworker runs as a single worker", flush=True)
        else:
            check_tf_config(os.environ["TF_CONFIG"])
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.NotFoundError) as e:
        raise UserError(f"--strategy tpu: no TPU found ({str(e).splitlines()[0][:160]})") from e
    return tf.distribute.TPUStrategy(resolver)


def check_tf_config(text: str) -> dict:
    """TF_CONFIG parsed; UserError naming what is wrong (TensorFlow's own message is a KeyError deep inside)."""
    try:
        config = json.loads(text)
    except ValueError as e:
        raise UserError(f"TF_CONFIG: not JSON ({e})") from e
    cluster, task = (config.get(k) if isinstance(config, dict) else None for k in ("cluster", "task"))
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise UserError('TF_CONFIG: needs {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}')
    hosts = cluster.get(task.get("type"))
    if not isinstance(hosts, list) or not isinstance(task.get("index"), int) or not 0 <= task["index"] < len(hosts):
        raise UserError(f"TF_CONFIG: task {task} is not in the cluster {cluster}")
    return config

def is_chief(strategy) -> bool:
    """Whether this process writes the run's outputs: always, but for a non-chief worker of a
    multi-worker cluster (the chief is the "chief" task, or worker 0 when the cluster has none)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if resolver is None or task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and int(resolver.task_id or 0) == 0 and not has_chief


def shard_by_data(dataset, strategy):
    """A multi-worker input: every worker reads the same files and keeps its share of each global
    batch (our datasets are built from a list of paths, so sharding by file cannot apply)."""
    from tfdefakeq.core.tfcompat import tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
