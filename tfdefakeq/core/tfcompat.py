"""Imports TensorFlow with legacy Keras (tf-keras), which tfmot requires.

Every module that needs TensorFlow imports it from here so that `TF_USE_LEGACY_KERAS=1` is set
before TensorFlow loads; importing `tensorflow` first elsewhere would bind Keras 3 and tfmot would
reject our models.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras"]
