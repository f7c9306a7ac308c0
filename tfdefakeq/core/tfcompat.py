"""Imports TensorFlow with legacy Keras (tf-keras), which tfmot requires.

Every module that needs TensorFlow imports it from here so that `TF_USE_LEGACY_KERAS=1` is set
before TensorFlow loads; importing `tensorflow` first elsewhere would bind Keras 3 and tfmot would
reject our models.

TensorFlow's C++ start-up banner (oneDNN notice, "Could not find cuda drivers", CPU feature hints,
a cuInit error on a machine without a GPU driver) came twice per import: `_pywrap_tensorflow_internal.so`
and `_pywrap_profiler_plugin.so` each carry their own copy of those static initialisers, which log
through absl before anything configures it (TF_CPP_MIN_LOG_LEVEL does not reach them). The import
runs with those lines dropped from fd 2 (`core.stderr.dropping`); other output is kept.
"""

import os
import re

from tfdefakeq.core.stderr import dropping

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# absl info lines (I0000 ...), absl's pre-init notice, the CPU feature hint's second line, and the cuInit
# failure a GPU build logs where there is no GPU driver
BANNER = re.compile(r"I\d{4} |WARNING: All log messages before absl::InitializeLog\(\)|To enable the following "
                    r"instructions|E\d{4} .*(cuInit|cuda_executor|cuda_diagnostics)")

with dropping(BANNER):
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

    tf.config.list_physical_devices("GPU")  # the cuInit attempt happens here, inside the filter

__all__ = ["tf", "keras"]
