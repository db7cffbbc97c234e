"""`DistillationModel`: teacher to student in one `compile` / `fit`."""

from __future__ import annotations

import copy
import threading
import types
import warnings

import keras
from keras import ops

from keras_transfer._checks import check_number
from keras_transfer._keras_internals import losses as keras_losses
from keras_transfer._keras_internals.distribute import refuse_multi_worker_strategy
from keras_transfer.distillation.feature_matching import (
    feature_extractor,
    feature_loss,
    feature_projection,
)
from keras_transfer.distillation.knowledge_distillation_loss import (
    KnowledgeDistillationLoss,
    validate_temperature,
)

# Keys of the targets that `kt.cache_teacher_outputs` packs: the teacher's
# outputs travel with the labels, so `call()` (the student) never sees them.
LABELS = "labels"
TEACHER_OUTPUTS = "teacher_outputs"
TEACHER_FEATURES = "teacher_features"


@keras.saving.register_keras_serializable(package="keras_transfer")
class DistillationModel(keras.Model):
    """Trains a small student to imitate a frozen teacher, in one `fit`.

    Knowledge distillation (Hinton et al., 2015): the student learns from the
    teacher's temperature-softened class distribution as well as from the
    labels. The loss is

        distillation_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))
        + (1 - distillation_weight) * <the compiled hard-label loss>
        [+ feature_weight * feature_loss]

    (`kt.KnowledgeDistillationLoss`) plus the student's regularization
    losses; the logs show `distillation_loss` and `student_loss` (and
    `feature_loss`) beside the total. `fit(x)` without labels is pure
    distillation (`distillation_weight` is taken as 1), for unlabeled
    transfer data. `call()` is the student, and so is `serving_model()`:
    `predict`, `model.export` and `kt.export_saved_model` serve the student
    alone (save it with `model.serving_model().save("student.keras")`).

    Beyond `keras.distillation.Distiller`: the teacher and the student may
    take different inputs (`teacher_inputs`: another tokenizer, image size or
    preprocessing), an intermediate student layer can be matched to a
    teacher layer through a learned projection (FitNets, `teacher_layer` /
    `student_layer`), and `kt.cache_teacher_outputs` runs a frozen teacher
    once over a deterministic dataset instead of on every batch of every
    epoch. The teacher is frozen (with a warning if it had trainable weights)
    and always runs in inference mode.

    Args:
        teacher: the trained `keras.Model` to learn from; single output.
        student: the `keras.Model` to train; single output with the same
            number of classes as the teacher.
        temperature: softening temperature `T` > 0. Defaults to 3.0.
        distillation_weight: the weight in [0, 1] of the distillation term;
            the hard-label loss weighs `1 - distillation_weight`. Defaults to
            0.5; taken as 1 for batches without labels.
        teacher_inputs: what the teacher sees of a batch `x`. `None` (default):
            `x` itself. A string: `x` is a dict, the teacher gets `x[key]` and
            the student the rest (its single value when one is left). A
            callable (a Keras layer or preprocessor, a function): the teacher
            gets `teacher_inputs(x)`; a layer is frozen with the teacher.
        teacher_layer: name of a teacher layer whose output the student should
            match (feature distillation); needs `student_layer`.
        student_layer: name of the student layer that matches it; a learned
            `Dense` projection maps it to the teacher's width when they differ
            (spatial sizes must agree).
        feature_weight: the weight (>= 0) of the feature term (mean squared
            error). Defaults to 1.0.
        from_logits: `True` (default) when teacher and student output logits;
            `False` for probabilities (softmax output layers).
        name: the model name.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> teacher.trainable = False  # Trained already (else: frozen, with a warning).
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model = kt.DistillationModel(
    ...     teacher, student, temperature=2.0, distillation_weight=0.7
    ... )
    >>> model.compile(
    ...     optimizer="adam",
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ... )
    >>> history = model.fit(np.ones((8, 4)), np.zeros(8), epochs=1, verbose=0)
    >>> sorted(history.history)
    ['distillation_loss', 'loss', 'student_loss']
    >>> model.serving_model() is student
    True
    """

    def __init__(
        self,
        teacher: keras.Model,
        student: keras.Model,
        temperature: float = 3.0,
        distillation_weight: float = 0.5,
        teacher_inputs=None,
        teacher_layer: str | None = None,
        student_layer: str | None = None,
        feature_weight: float = 1.0,
        from_logits: bool = True,
        name: str = "distillation_model",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        # Checked here, not in an overridden `compile`: Keras' `load_model` skips
        # compiling a model whose class overrides `compile`.
        refuse_multi_worker_strategy("kt.DistillationModel", self)
        _check_is_model(teacher, "teacher")
        _check_is_model(student, "student")
        self.temperature = validate_temperature(temperature)
        self.distillation_weight = check_number(
            distillation_weight,
            "distillation_weight",
            "the weight of the distillation term; 1 - distillation_weight weighs the labels",
            low=0,
            high=1,
            type_error=TypeError,
        )
        self.feature_weight = check_number(
            feature_weight,
            "feature_weight",
            "the weight of the feature term",
            low=0,
            type_error=TypeError,
        )
        self.from_logits = from_logits
        self.teacher_inputs = _validate_teacher_inputs(teacher_inputs)
        if isinstance(teacher_inputs, keras.layers.Layer):
            teacher_inputs.trainable = False  # Part of the teacher.
        _check_class_counts(teacher, student)
        _freeze(teacher)
        self.teacher = teacher
        self.student = student
        self.teacher_layer, self.student_layer = _validate_layer_pair(teacher_layer, student_layer)
        self.knowledge_distillation_loss = KnowledgeDistillationLoss(
            temperature=self.temperature, from_logits=from_logits
        )
        # Extractors share the teacher's and student's layers; kept out of
        # Keras tracking so that their weights are saved once, by those models.
        self._extractors = types.SimpleNamespace(teacher=None, student=None)
        # Per thread: TF's MirroredStrategy runs replicas' steps in threads.
        self._step = threading.local()
        self.feature_projection = None
        if self.teacher_layer is not None:
            self._extractors.teacher = feature_extractor(teacher, self.teacher_layer, "teacher")
            self._extractors.student = feature_extractor(student, self.student_layer, "student")
            self.feature_projection = feature_projection(
                self._extractors.teacher.outputs[1], self._extractors.student.outputs[1]
            )
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        self.feature_loss_tracker = (
            keras.metrics.Mean(name="feature_loss") if self.teacher_layer else None
        )
        if teacher.built and student.built:
            self.built = True

    def head_layers(self) -> list:
        """The feature projection, if any: it joins the student's head group
        in `kt.layer_groups`, so it trains from a `FreezeSchedule`'s first
        stage on, with the head (not as a group of its own)."""
        return [self.feature_projection] if self.feature_projection is not None else []

    def fixed_layers(self) -> list:
        """The teacher (and a `teacher_inputs` layer): never trained, and left
        out of `kt.layer_groups`, so `kt.FreezeSchedule` unfreezes only the
        student (and the feature projection)."""
        fixed = [self.teacher]
        if isinstance(self.teacher_inputs, keras.layers.Layer):
            fixed.append(self.teacher_inputs)
        return fixed

    def call(self, inputs, training=None):
        inputs = self.student_view(inputs)
        if self._extractors.student is None:
            return self.student(inputs, training=training)
        outputs, features = self._extractors.student(inputs, training=training)
        # Read by `compute_loss` in the same step: one student pass gives both.
        self._step.student_features = features
        return outputs

    def student_view(self, x):
        """The part of a batch `x` that the student takes."""
        if not isinstance(self.teacher_inputs, str) or not isinstance(x, dict):
            return x
        rest = {key: value for key, value in x.items() if key != self.teacher_inputs}
        return next(iter(rest.values())) if len(rest) == 1 else rest

    def teacher_view(self, x):
        """The teacher's inputs for a batch `x` (see `teacher_inputs`)."""
        if self.teacher_inputs is None:
            return x
        if isinstance(self.teacher_inputs, str):
            if not isinstance(x, dict) or self.teacher_inputs not in x:
                found = list(x) if isinstance(x, dict) else type(x).__name__
                raise ValueError(
                    f"`teacher_inputs={self.teacher_inputs!r}` takes the teacher's inputs "
                    f"from that key of a dict batch, but the batch is {found}. Pass x as "
                    f"{{{self.teacher_inputs!r}: <teacher inputs>, ...: <student inputs>}}."
                )
            return x[self.teacher_inputs]
        return self.teacher_inputs(x)

    def run_teacher(self, x):
        """(outputs, features or None) of the teacher on a batch, in inference mode."""
        teacher_x = self.teacher_view(x)
        if self._extractors.teacher is None:
            outputs, features = self.teacher(teacher_x, training=False), None
        else:
            outputs, features = self._extractors.teacher(teacher_x, training=False)
            features = ops.stop_gradient(features)
        return ops.stop_gradient(outputs), features

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        labels, cached = _unpack_targets(y)
        if y_pred is None:
            y_pred = self(x, training=training)
        student_features = getattr(self._step, "student_features", None)
        self._step.student_features = None
        distillation_weight = self.distillation_weight if labels is not None else 1.0
        needs_teacher = distillation_weight > 0 or self.teacher_layer is not None
        teacher_outputs = teacher_features = None
        if needs_teacher:
            teacher_outputs, teacher_features = self._teacher_outputs(x, cached)
        total = ops.zeros((), dtype="float32")
        if labels is not None:
            student_loss = self._hard_label_loss(labels, y_pred, sample_weight)
            self.student_loss_tracker.update_state(
                keras_losses.unscale_loss_for_distribution(student_loss)
            )
            total = total + (1.0 - distillation_weight) * ops.cast(student_loss, "float32")
        if distillation_weight > 0:
            distillation_loss = self.knowledge_distillation_loss(
                teacher_outputs, y_pred, sample_weight=sample_weight
            )
            self.distillation_loss_tracker.update_state(
                keras_losses.unscale_loss_for_distribution(distillation_loss)
            )
            total = total + distillation_weight * distillation_loss
        if self.teacher_layer is not None:
            if student_features is None:
                student_features = self._extractors.student(
                    self.student_view(x), training=training
                )[1]
            if self.feature_projection is not None:
                student_features = self.feature_projection(student_features)
            matching_loss = feature_loss(teacher_features, student_features, sample_weight)
            self.feature_loss_tracker.update_state(
                keras_losses.unscale_loss_for_distribution(matching_loss)
            )
            total = total + self.feature_weight * matching_loss
        for loss in self.losses:
            total = total + ops.cast(keras_losses.aggregate_additional_loss(self, loss), "float32")
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        labels, _ = _unpack_targets(y)
        if labels is not None:
            super().compute_metrics(x, labels, y_pred, sample_weight)
        return self.get_metrics_result()

    def get_metrics_result(self):
        # Without labels (pure distillation) the label metrics and the student
        # loss are left out rather than shown as zeros; so is the distillation
        # loss when `distillation_weight` is 0 and the teacher's outputs are
        # not used.
        skipped = set()
        if not keras_losses.compiled_loss_has_run(self):
            skipped.add(id(self.student_loss_tracker))
        if self.distillation_weight == 0:
            skipped.add(id(self.distillation_loss_tracker))
        logs = {}
        for metric in self.metrics:
            if id(metric) in skipped or getattr(metric, "built", True) is False:
                continue
            result = metric.result()
            logs.update(result if isinstance(result, dict) else {metric.name: result})
        return logs

    def serving_model(self) -> keras.Model:
        """The model that serves predictions: the student itself.

        `kt.export_saved_model` and `export` use it (the
        `keras_transfer.groups.hooks.ServingModel` hook); it is the same
        object as `student`, trained in place.
        """
        return self.student

    def export(self, filepath, format="tf_saved_model", **kwargs):
        """Exports `serving_model()`, the student alone (see `keras.Model.export`).

        Without this, Keras would export the whole training model, the
        teacher's weights included.
        """
        return self.serving_model().export(filepath, format=format, **kwargs)

    def teacher_with_features(self) -> keras.Model:
        """Internal (for `kt.cache_teacher_outputs`): the teacher as one model.

        A model of the teacher's inputs (see `teacher_view`) giving the
        teacher's outputs, or `[outputs, features]` for feature distillation
        (`teacher_layer`); it shares the teacher's layers.
        """
        return self._extractors.teacher or self.teacher

    def _teacher_outputs(self, x, cached):
        if cached is None:
            return self.run_teacher(x)
        outputs, features = cached.get(TEACHER_OUTPUTS), cached.get(TEACHER_FEATURES)
        if self.teacher_layer is not None and features is None:
            raise ValueError(
                f"The cached teacher outputs hold no features of layer '{self.teacher_layer}'. "
                "Cache them with this model: `kt.cache_teacher_outputs(model, x, y)`."
            )
        return outputs, features

    def _hard_label_loss(self, labels, y_pred, sample_weight):
        compiled_loss = keras_losses.compiled_loss(self)
        if compiled_loss is None:
            raise ValueError(
                "The batch has labels but the model was compiled without a loss. Pass the "
                "student's hard-label loss to `compile(loss=...)`, or call `fit(x)` without "
                "labels for pure distillation."
            )
        return compiled_loss(labels, y_pred, sample_weight)

    def get_config(self):
        config = super().get_config()
        teacher_inputs = self.teacher_inputs
        if teacher_inputs is not None and not isinstance(teacher_inputs, str):
            teacher_inputs = keras.saving.serialize_keras_object(teacher_inputs)
        config.update(
            {
                "teacher": keras.saving.serialize_keras_object(self.teacher),
                "student": keras.saving.serialize_keras_object(self.student),
                "temperature": self.temperature,
                "distillation_weight": self.distillation_weight,
                "teacher_inputs": teacher_inputs,
                "teacher_layer": self.teacher_layer,
                "student_layer": self.student_layer,
                "feature_weight": self.feature_weight,
                "from_logits": self.from_logits,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Deserializing a Functional model empties its config: work on a copy.
        config = copy.deepcopy(config)
        for key in ("teacher", "student", "teacher_inputs"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects
                )
        return cls(**config)


def _unpack_targets(y):
    """(labels, cached teacher outputs or None) of a batch's targets."""
    if isinstance(y, dict) and TEACHER_OUTPUTS in y:
        return y.get(LABELS), y
    return y, None


def _check_is_model(model, role: str):
    if not isinstance(model, keras.Model):
        raise TypeError(f"The {role} must be a `keras.Model`, got {type(model).__name__}.")


def _validate_teacher_inputs(teacher_inputs):
    if teacher_inputs is None or isinstance(teacher_inputs, str) or callable(teacher_inputs):
        return teacher_inputs
    raise TypeError(
        "`teacher_inputs` must be None (the teacher sees the student's inputs), a key of "
        "dict batches, or a callable mapping a batch to the teacher's inputs; got "
        f"{type(teacher_inputs).__name__}."
    )


def _validate_layer_pair(teacher_layer, student_layer):
    if (teacher_layer is None) != (student_layer is None):
        raise ValueError(
            "Feature distillation matches a student layer to a teacher layer: pass both "
            f"`teacher_layer` and `student_layer` (got {teacher_layer!r} and {student_layer!r})."
        )
    return teacher_layer, student_layer


def _output_width(model, role: str):
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None  # A subclassed model: checked on the first batch instead.
    if not outputs:
        return None
    if len(outputs) != 1:
        raise ValueError(
            f"The {role} '{model.name}' has {len(outputs)} outputs; DistillationModel "
            "distills one output (class logits). Wrap it in a model that returns the "
            "output to distill."
        )
    return outputs[0].shape[-1]


def _check_class_counts(teacher, student):
    teacher_classes = _output_width(teacher, "teacher")
    student_classes = _output_width(student, "student")
    if None not in (teacher_classes, student_classes) and teacher_classes != student_classes:
        raise ValueError(
            f"The teacher '{teacher.name}' outputs {teacher_classes} classes and the student "
            f"'{student.name}' {student_classes}. Distillation matches their distributions "
            "class by class: give the student an output layer of the teacher's size."
        )


def _freeze(teacher):
    if teacher.trainable_weights:
        warnings.warn(
            f"The teacher '{teacher.name}' had trainable weights; DistillationModel freezes it "
            "(`teacher.trainable = False`) and trains only the student.",
            stacklevel=3,
        )
    teacher.trainable = False
