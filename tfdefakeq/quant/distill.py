"""Fine-tuning a quantized detector against its float teacher.

loss = (1 - alpha) * BCE(label, s) + alpha * T^2 * BCE(sigmoid(t / T), s / T) + w(step) * feature

s, t: student (QAT) and teacher (float) logits. feature: squared distance between the L2-normalised
penultimate features (the classifier's input), i.e. 2 - 2 cos. w(step) decays from
`feature_weight` to 0 on a cosine over the run: the low-bit layers first re-learn the teacher's
representation, then the logit terms settle the decision (a progressive schedule, after DeFakeQ's
progressive feature fine-tuning).

learn_steps=False trains the layers' weights only: the quantizers' step sizes and activation ranges
stay where calibration put them (fixed quantizers, as MCT's QAT and tfmot's defaults keep them).
"""

from __future__ import annotations

import math

from tfdefakeq.core.tfcompat import keras, tf
from tfdefakeq.quant.quantizers import quantizer_variables


def _classifier_input(model):
    """The tensor the last weighted layer (the classifier) reads, in a float or QAT model."""
    kernels = [layer for layer in model.layers if hasattr(getattr(layer, "layer", layer), "kernel")]
    dense = [layer for layer in kernels if isinstance(getattr(layer, "layer", layer), keras.layers.Dense)]
    return (dense or kernels)[-1].input


class Distiller(keras.Model):
    """Trains `student` with the loss above; calling it (and evaluating it) runs the student."""

    def __init__(self, student, teacher, alpha: float = 0.5, temperature: float = 2.0, feature_weight: float = 1.0,
                 total_steps: int = 1, learn_steps: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.alpha, self.temperature, self.feature_weight = float(alpha), float(temperature), float(feature_weight)
        self.total_steps = max(1, int(total_steps))
        self.learn_steps = bool(learn_steps)
        self.student_taps = keras.Model(student.inputs, [student.output, _classifier_input(student)])
        self.teacher_taps = keras.Model(teacher.inputs, [teacher.output, _classifier_input(teacher)])
        self.step = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="distill_step")  # checkpointed: resumes exactly

    def call(self, x, training=False):
        return self.student(x, training=training)

    def feature_weight_now(self):
        progress = tf.minimum(self.step / self.total_steps, 1.0)
        return self.feature_weight * 0.5 * (1.0 + tf.cos(math.pi * progress))

    def trained_variables(self) -> list:
        """The student's variables the optimizer moves (without the quantizers' under learn_steps=False)."""
        variables = self.student.trainable_variables
        if self.learn_steps:
            return variables
        fixed = {id(v) for v in quantizer_variables(variables)}
        return [v for v in variables if id(v) not in fixed]

    def train_step(self, data):
        x, y = data[0], data[1]
        t_logit, t_feat = self.teacher_taps(x, training=False)
        t = self.temperature
        with tf.GradientTape() as tape:
            s_logit, s_feat = self.student_taps(x, training=True)
            label_loss = self.compiled_loss(y, s_logit, regularization_losses=self.student.losses)
            soft = keras.losses.binary_crossentropy(tf.sigmoid(t_logit / t), s_logit / t, from_logits=True)
            kd_loss = tf.reduce_mean(soft) * t * t
            feat = tf.reduce_sum(tf.square(tf.math.l2_normalize(s_feat, -1) - tf.math.l2_normalize(t_feat, -1)), -1)
            feature_loss = tf.reduce_mean(feat)
            loss = (1 - self.alpha) * label_loss + self.alpha * kd_loss + self.feature_weight_now() * feature_loss
        variables = self.trained_variables()
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self.step.assign_add(1.0)
        self.compiled_metrics.update_state(y, s_logit)
        return {"loss": loss, "kd": kd_loss, "feature": feature_loss, **{m.name: m.result() for m in self.metrics if m.name != "loss"}}
