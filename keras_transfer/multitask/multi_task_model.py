"""`MultiTaskModel`: one backbone, one head per task, batches from every task in one `fit`."""

from __future__ import annotations

import copy
import types

import keras
from keras import ops

from keras_transfer._keras_internals.losses import (
    aggregate_additional_loss,
    unscale_loss_for_distribution,
)
from keras_transfer._model_inputs import known_input_shape, plain_inputs
from keras_transfer.features import FeatureCache
from keras_transfer.features.pipeline import is_dataset
from keras_transfer.multitask import _routing
from keras_transfer.multitask._batch_format import INPUTS, is_tagged
from keras_transfer.multitask._task_compile import (
    TaskCompile,
    check_head_fits_loss,
    resolve_losses,
    resolve_metrics,
)
from keras_transfer.multitask._task_heads import (
    TaskHeads,
    check_backbone,
    check_features,
    check_heads,
    check_known_tasks,
)
from keras_transfer.multitask.task_batches import stream_epoch_callback


@keras.saving.register_keras_serializable(package="keras_transfer")
class MultiTaskModel(keras.Model):
    """One shared backbone and one head per task, trained on all tasks at once.

    Multi-task transfer: several tasks of one domain (sentiment of movie
    reviews and of tweets, topics of news) learn together, the backbone from
    all of them and each head from its own task; it also guards a pretrained
    backbone against forgetting what one narrow task would wear away. Unlike a
    Keras multi-output model, no example needs labels for every task: train
    on `kt.task_batches({task: data})`, a stream in which every batch comes
    from one task, tagged so that the model routes it.

    **Routing.** Every head runs on the batch's features; each task's loss is
    gated by the batch's tag, so a head gets exactly zero gradient from other
    tasks' batches and the backbone the gradient of the batch's own task (an
    SGD step on a batch of task A is exactly a step of the plain model
    `backbone + head A`). The loss is `sum_k loss_weights[k] * loss_k`, in
    which only the batch's task is non-zero, plus the backbone's regularization
    and the routed head's. After each step the heads of the other tasks are
    put back as they were (variables, batch-norm statistics included), so
    that neither momentum, Adam's moments nor weight decay moves a head on
    batches that are not its task's. (The optimizer has seen a zero gradient
    for them: their moment estimates decay as they would under one.)

    **Compile and logs.** `compile(optimizer, loss={task: loss},
    metrics={task: [...]}, loss_weights={task: w})`; one loss (or one list of
    metrics) not in a dict applies to every task. Logs show `loss`, and per
    task `<task>_loss` (the mean over that task's batches) and its metrics,
    `<task>_<metric>` (`movies_loss`, `tweets_accuracy`, ...).

    **Calling it.** `model(x, task="movies")` is that head's output;
    `model(x)` (plain or tagged inputs) a dict of every head's output, one
    backbone pass; so is `predict`. `task_model(task)` is one task as a plain
    Keras model (backbone + head, sharing their weights) for evaluation and
    `kt.export_saved_model`; `serving_model()` is what `model.export` serves:
    the single task's model with one head, else one model with a dict of every
    head's output.

    **Transfer-learning recipes.** The heads sit in one layer, `heads`, which
    `kt.layer_groups` sees as the top group after the backbone's groups: a
    `kt.FreezeSchedule` trains every head first, and `kt.DiscriminativeLR`
    gives all heads the full rate (for a rate per head, give it `multipliers`
    by layer-name regex). With a frozen backbone, `cache_features` runs it once
    per task through `kt.FeatureCache` and `heads_model()` trains the heads on
    the cached features.

    Args:
        backbone: the shared Keras model (or layer) from inputs to one feature
            tensor (wrap a backbone with several outputs to pick one).
        heads: a dict mapping each task name to its head: a Keras layer or
            model taking the backbone's features.
        name: the model name.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> backbone = keras.Sequential(
    ...     [keras.Input((4,)), keras.layers.Dense(8, activation="relu")])
    >>> model = kt.MultiTaskModel(backbone, {
    ...     "movies": keras.layers.Dense(2), "tweets": keras.layers.Dense(3)})
    >>> model.compile(
    ...     optimizer="adam",
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...     metrics=["accuracy"],
    ... )
    >>> stream = kt.task_batches({
    ...     "movies": (np.ones((20, 4)), np.zeros(20)),
    ...     "tweets": (np.ones((12, 4)), np.ones(12)),
    ... }, batch_size=8, seed=0)
    >>> history = model.fit(stream, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['loss', 'movies_accuracy', 'movies_loss', 'tweets_accuracy', 'tweets_loss']
    >>> tuple(model(np.ones((2, 4)), task="tweets").shape)
    (2, 3)
    """

    def __init__(self, backbone, heads: dict, name: str = "multi_task_model", **kwargs):
        super().__init__(name=name, **kwargs)
        check_backbone(backbone)
        check_heads(heads)
        self.backbone = backbone
        self.task_heads = TaskHeads(dict(heads), name="heads")
        self.task_loss_trackers = {task: keras.metrics.Mean(name=f"{task}_loss") for task in heads}
        # Compile-time state, kept out of Keras' tracking (the model is built).
        self._compiled_tasks = types.SimpleNamespace(setup=None, arguments=None)
        self._input_shape = None
        input_shape = known_input_shape(backbone)
        if input_shape is not None:
            # Built now, `kt.layer_groups`, `FreezeSchedule` and
            # `DiscriminativeLR` see every layer before the first `fit`.
            self.build(input_shape)

    @property
    def tasks(self) -> list[str]:
        """The task names, in the order the heads were given."""
        return list(self.task_heads.heads)

    @property
    def heads(self) -> dict:
        """The heads, by task name."""
        return dict(self.task_heads.heads)

    def build(self, input_shape):
        if is_tagged(input_shape):
            input_shape = input_shape[INPUTS]
        inputs = keras.tree.map_shape_structure(keras.KerasTensor, input_shape)
        features = self.backbone(inputs)
        check_features(features)
        self.task_heads.build(features.shape)
        self._input_shape = input_shape
        self._resolve_metrics()

    def call(self, inputs, task: str | None = None, training=None):
        if is_tagged(inputs):
            inputs = inputs[INPUTS]
        features = self.backbone(inputs, training=training)
        if task is None:
            return self.task_heads(features, training=training)
        return self.task_heads.heads[self._check_task(task)](features, training=training)

    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, **kwargs):
        """Configures training: a loss, a weight and metrics per task.

        Args:
            optimizer: the optimizer, as for `keras.Model.compile`.
            loss: a dict of task name -> loss (every task needs one), or one
                loss for every task.
            loss_weights: optional dict of task name -> weight of its loss
                (default 1.0 each).
            metrics: optional dict of task name -> list of metrics, or one
                list for every task; logged as `<task>_<metric>`.
            **kwargs: the other arguments of `keras.Model.compile`
                (`run_eagerly`, `jit_compile`, `steps_per_execution`, ...).
        """
        if kwargs.get("weighted_metrics"):
            raise ValueError(
                "MultiTaskModel weighs its metrics by task already: pass them as "
                "`metrics={task: [...]}` (sample weights of a batch are applied)."
            )
        kwargs.pop("weighted_metrics", None)
        losses, weights = resolve_losses(self.tasks, loss, loss_weights)
        super().compile(optimizer=optimizer, **kwargs)
        self._compiled_tasks.setup = TaskCompile(losses, weights, metrics={})
        self._compiled_tasks.arguments = {
            "loss": loss,
            "loss_weights": loss_weights,
            "metrics": metrics,
        }
        self._resolve_metrics()

    def _resolve_metrics(self):
        state = self._compiled_tasks
        if state.setup is None or not self.built:
            return
        state.setup.metrics = resolve_metrics(
            self.tasks, state.arguments["metrics"], state.setup.losses, self.task_heads.output_specs
        )

    def _task_of_metric(self) -> dict:
        """The task of each per-task metric and loss tracker, by `id`."""
        found = {id(tracker): task for task, tracker in self.task_loss_trackers.items()}
        setup = self._compiled_tasks.setup
        if setup is not None:
            found.update({id(m): task for task, ms in setup.metrics.items() for m in ms})
        return found

    @property
    def metrics(self):
        metrics = list(super().metrics)
        setup = self._compiled_tasks.setup
        if setup is not None:
            metrics += [metric for task in self.tasks for metric in setup.metrics.get(task, [])]
        return metrics

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        setup = self._setup()
        names = _routing.check_batch(x, y, self.tasks)
        _routing.check_tag_when_concrete(x, names)
        if y_pred is None:
            y_pred = self(x, training=training)
        gates = _routing.batch_gates(x, names, self.tasks)
        total = ops.zeros((), dtype="float32")
        for task in names:
            gate, loss = gates[task], setup.losses[task]
            check_head_fits_loss(task, loss, y[task], y_pred[task])
            predictions = keras.tree.map_structure(
                lambda p, g=gate: _routing.gate_predictions(g, p), y_pred[task]
            )
            value = ops.cast(loss(y[task], predictions, sample_weight), "float32")
            value = _routing.gate_value(gate, value)
            # Weighted by the batch's size, as Keras weighs `loss`: the mean
            # over the task's examples.
            examples = ops.shape(keras.tree.flatten(y_pred[task])[0])[0]
            self.task_loss_trackers[task].update_state(
                unscale_loss_for_distribution(value),
                sample_weight=ops.cast(gate, "float32") * ops.cast(examples, "float32"),
            )
            total = total + setup.loss_weights[task] * value
        for task in self.tasks:
            for extra in self.task_heads.heads[task].losses:
                extra = ops.cast(aggregate_additional_loss(self, extra), "float32")
                total = total + _routing.gate_value(gates[task], extra)
        for extra in self.backbone.losses:
            total = total + ops.cast(aggregate_additional_loss(self, extra), "float32")
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        setup = self._setup()
        names = _routing.check_batch(x, y, self.tasks)
        gates = _routing.batch_gates(x, names, self.tasks)
        for task in names:
            first = keras.tree.flatten(y_pred[task])[0]
            weight = ops.where(gates[task], 1.0, 0.0) * ops.ones((ops.shape(first)[0],))
            if sample_weight is not None:
                weight = weight * ops.cast(sample_weight, weight.dtype)
            for metric in setup.metrics[task]:
                metric.update_state(y[task], y_pred[task], sample_weight=weight)
        return self._logs(names)

    def get_metrics_result(self):
        return self._logs(None)

    def _logs(self, names):
        # A stream of some tasks only (say, validation data of one task) logs
        # those tasks; Keras then keeps the step's logs over
        # `get_metrics_result`, which names every task.
        task_of_metric = self._task_of_metric()
        logs = {}
        for metric in self.metrics:
            task = task_of_metric.get(id(metric))
            if names is not None and task is not None and task not in names:
                continue
            result = metric.result()
            logs.update(result if isinstance(result, dict) else {metric.name: result})
        return logs

    def train_step(self, *args):
        # JAX: `train_step(state, data)` returns `(logs, state)`; TensorFlow
        # and PyTorch: `train_step(data)` updates the variables in place.
        heads = self.task_heads.heads
        if keras.backend.backend() == "jax":
            state, data = args
            gates = self._step_gates(data)
            logs, new_state = super().train_step(state, data)
            return logs, _routing.keep_other_heads_in_state(self, heads, gates, state, new_state)
        (data,) = args
        gates = self._step_gates(data)
        saved = _routing.head_values(heads)
        logs = super().train_step(data)
        _routing.restore_other_heads(heads, gates, saved)
        return logs

    def _step_gates(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        names = _routing.check_batch(x, y, self.tasks)
        return _routing.batch_gates(x, names, self.tasks)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, **kw):
        """`keras.Model.fit`; a `kt.task_batches` stream follows the epochs.

        The stream is told each epoch's index as it begins, so that a run
        resumed at epoch `e` (`initial_epoch`, `kt.SafeBackupAndRestore`) draws
        the batches the uninterrupted run drew at epoch `e`.
        """
        _routing.check_tagged_arrays(x, y)
        sync = stream_epoch_callback(x)
        if sync is not None:
            callbacks = [sync, *(callbacks or [])]
            kw.setdefault("shuffle", False)  # The stream shuffles itself.
        return super().fit(
            x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, callbacks=callbacks, **kw
        )

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.evaluate`, on `kt.task_batches` streams (see `fit`)."""
        _routing.check_tagged_arrays(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def task_model(self, task: str) -> keras.Model:
        """One task as a plain Keras model: `head(backbone(x))` on plain inputs.

        A Functional model sharing the backbone and the head (so it holds
        the trained weights, and training it trains them); ready for
        `evaluate` once compiled, `kt.export_saved_model` and `kt.FeatureCache`.
        """
        head = self.task_heads.heads[self._check_task(task)]
        inputs = plain_inputs(self.backbone, self._built_shape(), self.input_dtype)
        return keras.Model(inputs, head(self.backbone(inputs)), name=f"{self.name}_{task}")

    def serving_model(self, task: str | None = None) -> keras.Model:
        """The model that serves: `task_model(task)`, or every head at once.

        With `task`, or when the model has one task, that task's model. With
        several tasks and no `task`: one Functional model on plain inputs
        that runs the backbone once and returns a dict of every head's output
        by task name (what `export` writes). `kt.export_saved_model` exports
        classifiers of one output: give it `model.task_model(task)`.
        """
        if task is not None or len(self.tasks) == 1:
            return self.task_model(task or self.tasks[0])
        inputs = plain_inputs(self.backbone, self._built_shape(), self.input_dtype)
        outputs = self.task_heads(self.backbone(inputs))
        return keras.Model(inputs, outputs, name=f"{self.name}_serving")

    def export(self, filepath, format="tf_saved_model", **kwargs):
        """Exports `serving_model()`, on plain inputs (see `keras.Model.export`)."""
        return self.serving_model().export(filepath, format=format, **kwargs)

    def heads_model(self, optimizer=None) -> MultiTaskModel:
        """The heads alone, on the backbone's features: training it trains them.

        A `MultiTaskModel` whose backbone is the identity on features of the
        backbone's output shape and whose heads are this model's own (the same
        layers), compiled with this model's losses, loss weights and metrics.
        Train it on `kt.task_batches(model.cache_features(data))`.

        Args:
            optimizer: its optimizer; defaults to a fresh copy of this model's
                (same class and settings, new state).
        """
        self._setup()
        features = keras.Input(self.task_heads.feature_shape[1:], name="features")
        identity = keras.Model(features, keras.layers.Identity()(features), name="features")
        model = MultiTaskModel(identity, self.heads, name=f"{self.name}_heads")
        if optimizer is None:
            optimizer = type(self.optimizer).from_config(self.optimizer.get_config())
        arguments = self._compiled_tasks.arguments
        model.compile(optimizer=optimizer, **copy.copy(arguments))
        return model

    def cache_features(self, data: dict, batch_size: int = 32, directory=None) -> dict:
        """Runs the frozen backbone once over each task's data, via `kt.FeatureCache`.

        Args:
            data: a dict of task name -> `(x, y)` arrays or a `tf.data.Dataset`
                of `(x, y)` batches, as `kt.FeatureCache.extract` takes them.
            batch_size: examples per backbone pass. Defaults to 32.
            directory: `None` keeps the features in memory; a folder stores
                them there, memory-mapped (see `kt.FeatureCache`).

        Returns:
            A dict of task name -> `(features, labels)`, ready for
            `kt.task_batches` and `heads_model()`.
        """
        setup = self._setup()
        check_known_tasks(data, self.tasks)
        extractor = self.task_model(self.tasks[0])
        # FeatureCache wants a compiled model; only its extraction is used here.
        extractor.compile(loss=setup.losses[self.tasks[0]])
        cache = FeatureCache(extractor, self.backbone, directory=directory, batch_size=batch_size)
        return {
            task: cache.extract(value) if is_dataset(value) else cache.extract(*value)
            for task, value in data.items()
        }

    def _setup(self) -> TaskCompile:
        if self._compiled_tasks.setup is None:
            raise ValueError(
                f"Compile model '{self.name}' first: `model.compile(optimizer, "
                "loss={task: loss, ...}, metrics={task: [...]})`."
            )
        return self._compiled_tasks.setup

    def _check_task(self, task) -> str:
        if task not in self.task_heads.heads:
            raise ValueError(f"Unknown task {task!r}: the model's tasks are {self.tasks}.")
        return task

    def _built_shape(self):
        if self._input_shape is None:
            raise ValueError(
                f"Model '{self.name}' is not built, so its input shape is unknown. Train "
                "it, or call it on a batch, first."
            )
        return self._input_shape

    def get_build_config(self):
        if self._input_shape is None:
            return None
        return {"input_shape": self._input_shape}

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and self._compiled_tasks.arguments is not None:
            config.update(keras.saving.serialize_keras_object(self._compiled_tasks.arguments))
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "heads": {
                    task: keras.saving.serialize_keras_object(head)
                    for task, head in self.task_heads.heads.items()
                },
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Deserializing a Functional model empties its config: work on a copy.
        config = copy.deepcopy(config)
        config["backbone"] = keras.saving.deserialize_keras_object(
            config["backbone"], custom_objects=custom_objects
        )
        config["heads"] = {
            task: keras.saving.deserialize_keras_object(head, custom_objects=custom_objects)
            for task, head in config["heads"].items()
        }
        return cls(**config)
