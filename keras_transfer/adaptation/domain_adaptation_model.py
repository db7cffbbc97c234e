"""`DomainAdaptationModel`: unsupervised domain adaptation in `compile` / `fit`."""

from __future__ import annotations

import copy

import keras
from keras import ops

from keras_transfer._keras_internals.distribute import refuse_multi_worker_strategy
from keras_transfer._keras_internals.losses import (
    scale_loss_for_distribution,
    unscale_loss_for_distribution,
)
from keras_transfer._model_inputs import known_input_shape, plain_inputs
from keras_transfer.adaptation.domain_confusion_loss import DomainConfusionLoss, domain_accuracy
from keras_transfer.adaptation.gradient_reversal import check_strength, reverse_gradient

SOURCE, TARGET = "source", "target"
_DOMAIN_LOGS = ("task_loss", "domain_loss", "domain_accuracy")


@keras.saving.register_keras_serializable(package="keras_transfer")
class DomainAdaptationModel(keras.Model):
    """Trains on labelled source data and unlabelled target data at once.

    For when labels exist in one domain (movie reviews, MNIST) and only
    unlabelled examples in the one you care about (product reviews, other
    handwriting). The model is `task_head(feature_extractor(x))`; during
    `fit`, a domain loss computed on source and target features pulls the two
    feature distributions together, so that the task head, trained on source
    labels only, also works on the target:

    - `kt.DomainConfusionLoss("adversarial")` (default): DANN, a domain head
      behind gradient reversal;
    - `kt.DomainConfusionLoss("confusion")`: Tzeng et al.'s domain confusion;
    - `kt.CoralLoss()`, `kt.MMDLoss()` (or any `keras.losses.Loss` called as
      `adaptation_loss(source_features, target_features)`): a discrepancy,
      no domain head.

    **Input format.** `fit` takes batches `({"source": x_source, "target":
    x_target}, y_source)`: labelled source examples and unlabelled target
    examples, the two batches of any sizes but with examples of one shape.
    `kt.domain_pairs((x_source, y_source), x_target, batch_size=...)` builds
    them from arrays or `tf.data` datasets of different lengths. Anything
    else, `predict`, `evaluate`, `__call__` and export included, takes plain
    inputs and runs the feature extractor and task head only, so
    `model.evaluate(x_target_test, y_target_test)` scores the adapted model.
    (`evaluate` on paired batches also reports the domain logs.)
    `serving_model()` is that part as a plain Keras model: `model.export`
    and `kt.export_saved_model` serve it, without the domain head.

    **Training step.** Source and target inputs go through the feature
    extractor as one batch. The loss is `task_loss + adaptation loss`, where
    `task_loss` is the compiled loss on the source labels (plus weight
    regularisation) and, with `w = adaptation_weight * adaptation_scale`:

    - adversarial: `domain_loss(domain_head(reverse_gradient(features, w)))`:
      the domain head descends its cross-entropy, the extractor ascends
      `w` times it;
    - confusion: `domain_loss(domain_head(stop_gradient(features))) + w *
      confusion(frozen_domain_head(features))`, where the frozen head is the
      same head called with its weights behind `stop_gradient`: one combined
      loss gives the domain head the gradient of its own cross-entropy only
      and the extractor the gradient of the confusion objective only, i.e.
      Tzeng et al.'s two alternating objectives, each taken at the current
      weights of the other, in one step on every backend;
    - discrepancy: `w * adaptation_loss(source_features, target_features)`.

    Logs `loss`, `task_loss`, `domain_loss` (the domain head's cross-entropy,
    or the discrepancy) and, with a domain head, `domain_accuracy` (0.5 means
    the domains are indistinguishable), besides the compiled metrics of the
    task (computed on the source batch).

    **Transfer-learning recipes.** The task head and domain head sit in one
    layer, `heads`, which `kt.layer_groups` sees as the top group, after the
    feature extractor's groups. So `kt.FreezeSchedule` unfreezes both heads
    first and `kt.DiscriminativeLR` trains them at the full rate, a
    pretrained feature extractor below them at lower rates (the usual
    recipe). `kt.DomainAdaptationSchedule` ramps `adaptation_scale`.

    Args:
        feature_extractor: a layer or model giving one feature tensor.
        task_head: a layer or model mapping features to task outputs.
        domain_head: the domain classifier for `DomainConfusionLoss`: maps
            features to one logit (source 0, target 1). `None` (default) builds
            `default_domain_head()`, a ReLU MLP with two hidden layers of 256
            (a linear classifier is too weak an adversary). Must be `None` for
            discrepancy losses.
        adaptation_loss: the domain loss; defaults to
            `kt.DomainConfusionLoss("adversarial")`. The task loss goes to
            `compile(loss=...)`, as usual.
        adaptation_weight: the weight `w` (>= 0) of the adaptation term (the
            reversal strength in DANN). Defaults to 1.0.
        **kwargs: `name` and other `keras.Model` arguments.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> rng = np.random.default_rng(0)
    >>> x_source, y_source = rng.normal(size=(64, 2)), rng.integers(0, 2, 64)
    >>> x_target = rng.normal(size=(40, 2)) + 1.0
    >>> model = kt.DomainAdaptationModel(
    ...     feature_extractor=keras.Sequential([keras.layers.Dense(8, activation="relu")]),
    ...     task_head=keras.layers.Dense(2),
    ... )
    >>> model.compile(
    ...     optimizer="adam",
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ... )
    >>> pairs = kt.domain_pairs((x_source, y_source), x_target, batch_size=16)
    >>> history = model.fit(pairs, epochs=2, verbose=0)
    >>> sorted(history.history)
    ['domain_accuracy', 'domain_loss', 'loss', 'task_loss']
    >>> model.predict(x_target, verbose=0).shape
    (40, 2)
    """

    def __init__(
        self,
        feature_extractor: keras.layers.Layer,
        task_head: keras.layers.Layer,
        domain_head: keras.layers.Layer | None = None,
        adaptation_loss: keras.losses.Loss | None = None,
        adaptation_weight: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Checked here, not in an overridden `compile`: Keras' `load_model` skips
        # compiling a model whose class overrides `compile`.
        refuse_multi_worker_strategy("kt.DomainAdaptationModel", self)
        if adaptation_loss is None:
            adaptation_loss = DomainConfusionLoss()
        _check_arguments(feature_extractor, task_head, domain_head, adaptation_loss)
        if isinstance(adaptation_loss, DomainConfusionLoss) and domain_head is None:
            domain_head = default_domain_head()
        self.feature_extractor = feature_extractor
        self.heads = _Heads(task_head, domain_head, name="heads")
        self.adaptation_loss = adaptation_loss
        self.adaptation_weight = check_strength(adaptation_weight, "adaptation_weight")
        self.adaptation_scale = self.add_weight(
            shape=(),
            initializer="ones",
            trainable=False,
            name="adaptation_scale",
        )
        self.task_loss_tracker = keras.metrics.Mean(name="task_loss")
        self.domain_loss_tracker = keras.metrics.Mean(name="domain_loss")
        self.domain_accuracy_tracker = (
            keras.metrics.Mean(name="domain_accuracy") if domain_head is not None else None
        )
        self._source_shape = None
        known_input = known_input_shape(feature_extractor)
        if known_input is not None:
            # Built now, `kt.layer_groups`, `FreezeSchedule` and
            # `DiscriminativeLR` can see every layer before the first `fit`.
            self.build(known_input)

    @property
    def task_head(self) -> keras.layers.Layer:
        return self.heads.task_head

    @property
    def domain_head(self) -> keras.layers.Layer | None:
        return self.heads.domain_head

    def build(self, input_shape):
        source_shape = input_shape[SOURCE] if _is_pair(input_shape) else input_shape
        inputs = keras.tree.map_shape_structure(keras.KerasTensor, source_shape)
        features = self.feature_extractor(inputs)
        _check_features(features)
        self.heads.build(features.shape)
        self._source_shape = source_shape

    def call(self, inputs):
        if not _is_pair(inputs):
            return self.task_head(self.feature_extractor(inputs))
        source, target = inputs[SOURCE], inputs[TARGET]
        _check_same_examples(source, target)
        n_source = ops.shape(keras.tree.flatten(source)[0])[0]
        joint = keras.tree.map_structure(
            lambda s, t: ops.concatenate([s, ops.cast(t, s.dtype)], axis=0), source, target
        )
        features = self.feature_extractor(joint)
        _check_features(features)
        source_features, target_features = features[:n_source], features[n_source:]
        return {
            "task": self.task_head(source_features),
            "source_features": source_features,
            "target_features": target_features,
        }

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        _check_task_loss(getattr(self, "loss", None))
        if not _is_pair(x):
            if training:
                raise ValueError(
                    "DomainAdaptationModel.fit takes batches of "
                    "`({'source': x_source, 'target': x_target}, y_source)`; got "
                    "plain inputs, which would train on the source alone. Build the "
                    "batches with `kt.domain_pairs((x_source, y_source), x_target, "
                    "batch_size=...)`."
                )
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)
        task_loss = super().compute_loss(x, y, y_pred["task"], sample_weight, training=training)
        adaptation_loss, domain_loss, accuracy = self._adaptation_terms(
            y_pred["source_features"], y_pred["target_features"]
        )
        # Under tf.distribute the losses are divided by the replica count (so
        # that the replicas' gradients sum to the global one); the logs are not.
        self.task_loss_tracker.update_state(unscale_loss_for_distribution(task_loss))
        self.domain_loss_tracker.update_state(unscale_loss_for_distribution(domain_loss))
        if accuracy is not None:
            self.domain_accuracy_tracker.update_state(accuracy)
        return task_loss + ops.cast(adaptation_loss, task_loss.dtype)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if _is_pair(x):
            return super().compute_metrics(x, y, y_pred["task"], sample_weight)
        logs = super().compute_metrics(x, y, y_pred, sample_weight)
        return {key: value for key, value in logs.items() if key not in _DOMAIN_LOGS}

    def _adaptation_terms(self, source_features, target_features):
        loss = self.adaptation_loss
        weight = self.adaptation_weight * ops.cast(self.adaptation_scale, "float32")
        if not isinstance(loss, DomainConfusionLoss):
            # A discrepancy is one number for the batch, which Keras does not
            # divide by the replica count as it does a mean over examples.
            domain_loss = scale_loss_for_distribution(loss(source_features, target_features))
            return weight * domain_loss, domain_loss, None
        features = ops.concatenate([source_features, target_features], axis=0)
        labels = ops.concatenate(
            [
                ops.zeros((ops.shape(source_features)[0],)),
                ops.ones((ops.shape(target_features)[0],)),
            ]
        )
        if loss.mode == "adversarial":
            logits = self.domain_head(reverse_gradient(features, weight))
            domain_loss = loss(labels, logits)
            total = domain_loss
        else:
            logits = self.domain_head(ops.stop_gradient(features))
            domain_loss = loss(labels, logits)
            total = domain_loss + weight * loss.confusion(self._frozen_domain_head(features))
        return total, domain_loss, domain_accuracy(labels, logits)

    def _frozen_domain_head(self, features):
        """The domain head with its weights behind `stop_gradient`."""
        head = self.domain_head
        trainable = [ops.stop_gradient(v) for v in head.trainable_variables]
        non_trainable = [ops.convert_to_tensor(v) for v in head.non_trainable_variables]
        # Updates to the head's state (normalisation statistics) are dropped:
        # the head's own call above already made them.
        logits, _ = head.stateless_call(trainable, non_trainable, features)
        return logits

    def serving_model(self) -> keras.Model:
        """The model that serves predictions: `task_head(feature_extractor(x))`.

        A Functional model on plain inputs that shares the feature extractor
        and task head (so it holds the trained weights) and leaves the domain
        head out. `kt.export_saved_model` and `export` use it (the
        `keras_transfer.groups.hooks.ServingModel` hook). Needs a built model.
        """
        if self._source_shape is None:
            raise ValueError(
                f"Model '{self.name}' is not built, so its input shape is unknown. Train "
                "it, or call it on a batch, before asking for its serving model."
            )
        inputs = plain_inputs(self.feature_extractor, self._source_shape, self.input_dtype)
        outputs = self.task_head(self.feature_extractor(inputs))
        return keras.Model(inputs, outputs, name=f"{self.name}_serving")

    def export(self, filepath, format="tf_saved_model", **kwargs):
        """Exports `serving_model()`, which takes plain inputs (see `keras.Model.export`).

        Without this, Keras would export the training model, whose `call`
        also takes `{"source": ..., "target": ...}` pairs, domain head included.
        """
        return self.serving_model().export(filepath, format=format, **kwargs)

    def get_build_config(self):
        if self._source_shape is None:
            return None
        return {"input_shape": self._source_shape}

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "feature_extractor": keras.saving.serialize_keras_object(self.feature_extractor),
                "task_head": keras.saving.serialize_keras_object(self.task_head),
                "domain_head": (
                    keras.saving.serialize_keras_object(self.domain_head)
                    if self.domain_head is not None
                    else None
                ),
                "adaptation_loss": keras.saving.serialize_keras_object(self.adaptation_loss),
                "adaptation_weight": self.adaptation_weight,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Deserializing a Functional model empties its config: work on a copy.
        config = copy.deepcopy(config)
        for key in ("feature_extractor", "task_head", "domain_head", "adaptation_loss"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects
                )
        return cls(**config)


def default_domain_head(units=(256, 256), name: str = "domain_head") -> keras.Sequential:
    """The default domain classifier: a ReLU MLP ending in one logit.

    Args:
        units: the widths of the hidden layers. Defaults to `(256, 256)`.
        name: the model's name.
    """
    layers = [keras.layers.Flatten()]
    layers += [keras.layers.Dense(width, activation="relu") for width in units]
    layers.append(keras.layers.Dense(1, dtype="float32"))
    return keras.Sequential(layers, name=name)


class _Heads(keras.layers.Layer):
    """The task and domain heads as one layer: one top layer group."""

    def __init__(self, task_head, domain_head, **kwargs):
        super().__init__(**kwargs)
        self.task_head = task_head
        self.domain_head = domain_head

    def build(self, feature_shape):
        features = keras.KerasTensor(feature_shape)
        self.task_head(features)
        if self.domain_head is not None:
            self.domain_head(features)

    def call(self, features):
        return self.task_head(features)


def _is_pair(inputs) -> bool:
    return isinstance(inputs, dict) and set(inputs) == {SOURCE, TARGET}


def _is_domain_loss(loss) -> bool:
    from keras_transfer.adaptation.discrepancy_losses import CoralLoss, MMDLoss

    return isinstance(loss, (DomainConfusionLoss, CoralLoss, MMDLoss))


def _check_arguments(feature_extractor, task_head, domain_head, adaptation_loss):
    for value, what in ((feature_extractor, "feature_extractor"), (task_head, "task_head")):
        if not isinstance(value, keras.layers.Layer):
            raise TypeError(f"`{what}` must be a Keras layer or model, got {type(value).__name__}.")
    if domain_head is not None and not isinstance(domain_head, keras.layers.Layer):
        raise TypeError(f"`domain_head` must be a Keras layer or model, got {domain_head!r}.")
    if not isinstance(adaptation_loss, keras.losses.Loss):
        raise TypeError(
            "`adaptation_loss` must be a domain loss object: kt.DomainConfusionLoss("
            "'adversarial' or 'confusion'), kt.CoralLoss() or kt.MMDLoss(); got "
            f"{adaptation_loss!r}."
        )
    if domain_head is not None and not isinstance(adaptation_loss, DomainConfusionLoss):
        raise ValueError(
            f"{type(adaptation_loss).__name__} compares feature distributions directly and "
            "uses no domain head: leave `domain_head=None`, or use kt.DomainConfusionLoss."
        )


def _check_task_loss(loss):
    if loss is None:
        raise ValueError(
            "Compile a DomainAdaptationModel with the task loss, e.g. "
            "`loss='sparse_categorical_crossentropy'`; the domain loss is given to "
            "the constructor (`adaptation_loss=kt.DomainConfusionLoss(...)`)."
        )
    if _is_domain_loss(loss):
        raise ValueError(
            f"{type(loss).__name__} is a domain loss: give it to the constructor, "
            "`kt.DomainAdaptationModel(..., adaptation_loss=...)`, and `compile` the "
            "task loss."
        )


def _check_features(features):
    if not hasattr(features, "shape") or isinstance(features, (dict, list, tuple)):
        raise ValueError(
            "The feature extractor must return one tensor, got "
            f"{type(features).__name__}. Wrap it to pick one output, e.g. a "
            "backbone's 'pooled_output'."
        )


def _check_same_examples(source, target):
    try:
        keras.tree.assert_same_structure(source, target)
    except (ValueError, TypeError):
        raise ValueError(
            "Source and target inputs must have the same structure; got "
            f"{_describe(source)} and {_describe(target)}. Target batches carry "
            "inputs only, no labels."
        ) from None
    for s, t in zip(keras.tree.flatten(source), keras.tree.flatten(target)):
        s_shape, t_shape = tuple(s.shape[1:]), tuple(t.shape[1:])
        if len(s_shape) != len(t_shape) or any(
            a is not None and b is not None and a != b for a, b in zip(s_shape, t_shape)
        ):
            raise ValueError(
                f"Source examples have shape {s_shape} but target examples {t_shape}: "
                "both domains go through one feature extractor. Bring them to one "
                "size first (e.g. `keras.layers.Resizing`, padding or cropping)."
            )


def _describe(structure) -> str:
    return str(keras.tree.map_structure(lambda x: tuple(getattr(x, "shape", ())), structure))
