"""The TensorFlow-side engines behind the verbs (`tfdefakeq/<verb>.py` hold only the command line):

- `training`: the float / QAT fit loop behind `train` (checkpoints, resume, pretrained weights);
- `export`: Keras -> .tflite with the parity checks, behind `convert`;
- `parity`: Keras-vs-TFLite tensor by tensor, behind `diagnose` (and `convert`'s op-by-op verdict);
- `modelio`: detectors saved as weights + manifest and rebuilt from them;
- `distribute`: tf.distribute strategies.

The TensorFlow-free engines (evaluate, bench, predict, robustness, edgetpu) live in `tfdefakeq.runtime`.
"""
