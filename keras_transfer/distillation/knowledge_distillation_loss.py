"""`KnowledgeDistillationLoss`: Hinton et al.'s soft-target loss, scaled by T^2."""

from __future__ import annotations

import keras
from keras import ops

from keras_transfer._checks import check_number


@keras.saving.register_keras_serializable(package="keras_transfer")
class KnowledgeDistillationLoss(keras.losses.Loss):
    """KL divergence between temperature-softened teacher and student outputs.

    The soft-target loss of Hinton et al. (2015), "Distilling the Knowledge in
    a Neural Network": for each sample,

        T^2 * KL(softmax(teacher / T) || softmax(student / T))

    averaged over the batch (the default `"sum_over_batch_size"` reduction).
    The `T^2` factor keeps the size of its gradient independent of the
    temperature, so changing `T` does not change how strongly it pulls
    against a hard-label loss. Log-softmax keeps it exact for large logits.

    `y_true` is the teacher's output and `y_pred` the student's. Use it where
    `keras.distillation.LogitsDistillation(loss="kl_divergence")` would be
    used: in Keras 3.15 that path looks the string up as a function, skips the
    softmax and computes a clipped KL on raw `logits / T` (for teacher logits
    `[[2, -1], [0.5, 0.3]]`, zero student logits and `T=3` it gives 7.122;
    this loss gives 0.5017, the value above).

    Args:
        temperature: the softening temperature `T`, > 0. Defaults to 3.0.
        from_logits: `True` (default) when both outputs are logits. With
            `False` they are probabilities (a softmax output layer); their
            logarithms are used as logits, which softmax maps back to the same
            distributions.
        reduction: a Keras loss reduction. Defaults to `"sum_over_batch_size"`.
        name: the loss name.
        dtype: the dtype of the loss computation; defaults to float32 under
            mixed precision too.

    Example:

    >>> import numpy as np
    >>> import keras_transfer as kt
    >>> loss = kt.KnowledgeDistillationLoss(temperature=3.0)
    >>> teacher_logits = np.array([[2.0, -1.0], [0.5, 0.3]])
    >>> round(float(loss(teacher_logits, np.zeros((2, 2)))), 4)
    0.5017
    """

    def __init__(
        self,
        temperature: float = 3.0,
        from_logits: bool = True,
        reduction: str = "sum_over_batch_size",
        name: str = "knowledge_distillation",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype or "float32")
        self.temperature = validate_temperature(temperature)
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        teacher = _as_logits(ops.convert_to_tensor(y_true, self.dtype), self.from_logits)
        student = _as_logits(ops.convert_to_tensor(y_pred, self.dtype), self.from_logits)
        if teacher.shape[-1] is not None and student.shape[-1] is not None:
            if teacher.shape[-1] != student.shape[-1]:
                raise ValueError(
                    f"The teacher gives {teacher.shape[-1]} classes and the student "
                    f"{student.shape[-1]}: knowledge distillation compares their "
                    "distributions class by class, so both need the same classes."
                )
        teacher_log_probs = ops.log_softmax(teacher / self.temperature, axis=-1)
        student_log_probs = ops.log_softmax(student / self.temperature, axis=-1)
        kl = ops.sum(ops.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)
        return kl * (self.temperature**2)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature, "from_logits": self.from_logits})
        return config


def _as_logits(outputs, from_logits: bool):
    if from_logits:
        return outputs
    return ops.log(ops.clip(outputs, keras.config.epsilon(), 1.0))


def validate_temperature(temperature) -> float:
    """The softening temperature as a float, or a `TypeError` / `ValueError`."""
    return check_number(
        temperature,
        "temperature",
        "typical values are 1 to 10; higher values give softer teacher distributions",
        low=0,
        low_open=True,
        type_error=TypeError,
    )
