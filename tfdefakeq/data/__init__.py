"""Datasets: folder layouts (no TensorFlow), the embedded synthetic default data, tf.data readers.

Only `folders` is imported here, so the runtime can use it without TensorFlow.
"""
