"""Distillation from the float teacher."""

import numpy as np

from tfdefakeq.quant.distill import Distiller
from tfdefakeq.core.tfcompat import keras


def _net(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(x))


def test_student_moves_towards_the_teacher():
    teacher, student = _net(0), _net(1)
    x = np.random.default_rng(0).normal(size=(64, 8, 8, 3)).astype(np.float32)
    y = (teacher.predict(x, verbose=0) > 0).astype(np.float32)
    teacher_weights = [w.copy() for w in teacher.get_weights()]

    def gap():
        return float(np.mean((student.predict(x, verbose=0) - teacher.predict(x, verbose=0)) ** 2))

    distiller = Distiller(student, teacher, alpha=1.0, temperature=1.0, feature_weight=1.0, total_steps=40)
    distiller.compile(optimizer=keras.optimizers.Adam(3e-2), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    before = gap()
    history = distiller.fit(x, y, batch_size=16, epochs=10, verbose=0)
    assert gap() < before
    assert {"loss", "kd", "feature"} <= set(history.history)
    # the teacher is frozen, the schedule ran down, and calling the distiller runs the student
    for w, w0 in zip(teacher.get_weights(), teacher_weights):
        np.testing.assert_array_equal(w, w0)
    assert float(distiller.step.numpy()) == 40 and float(distiller.feature_weight_now()) == 0.0
    np.testing.assert_allclose(distiller.predict(x, verbose=0), student.predict(x, verbose=0))


def test_learn_steps_off_trains_the_weights_and_keeps_the_quantizers():
    from tfdefakeq.quant import qat
    from tfdefakeq.quant.quantizers import quantizer_variables

    teacher = _net(0)
    x = np.random.default_rng(1).normal(size=(32, 8, 8, 3)).astype(np.float32)
    y = (teacher.predict(x, verbose=0) > 0).astype(np.float32)
    moved = {}
    for learn in (True, False):
        student = qat.quantize(_net(0), "lsq_w4a8", calib_images=x[:8])
        fixed = quantizer_variables(student.trainable_variables)
        # every step size and activation range, none of the layers' own weights
        assert {v.name.split("/")[-1].split(":")[0] for v in fixed} >= {"kernel_step", "output_min", "output_max"}
        assert not {v.name.split("/")[-1] for v in fixed} & {"kernel:0", "bias:0"}
        before = {v.name: v.numpy().copy() for v in student.trainable_variables}
        distiller = Distiller(student, teacher, total_steps=8, learn_steps=learn)
        distiller.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.BinaryCrossentropy(from_logits=True))
        distiller.fit(x, 1 - y, batch_size=16, epochs=4, verbose=0)
        moved[learn] = {v.name: not np.array_equal(v.numpy(), before[v.name]) for v in student.trainable_variables}
        quantizer_names = {v.name for v in fixed}
        assert any(m for n, m in moved[learn].items() if n not in quantizer_names)  # the weights train
        assert any(moved[learn][n] for n in quantizer_names) == learn
