"""Training on several devices with TensorFlow's own engine (tf.distribute).

    python -m tfdefakeq.train ... --strategy mirrored      # all GPUs of this machine (or all CPU devices)
    python -m tfdefakeq.train ... --strategy multiworker   # several machines; each reads TF_CONFIG
    python -m tfdefakeq.train ... --strategy tpu           # Colab / Cloud TPU

The global batch (`--batch-size`) is split across replicas; Keras' fit distributes the tf.data input.
"""

from __future__ import annotations

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
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.NotFoundError) as e:
        raise UserError(f"--strategy tpu: no TPU found ({str(e).splitlines()[0][:160]})") from e
    return tf.distribute.TPUStrategy(resolver)
