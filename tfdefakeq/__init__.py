"""tfdefakeq: deepfake detectors from Keras training to quantized TFLite for edge devices.

Importing the package imports no TensorFlow: `tfdefakeq.runtime` runs with only numpy and a
TFLite interpreter. Modules that train or convert import TensorFlow through `tfdefakeq.core.tfcompat`.
"""

__version__ = "0.1.0"
