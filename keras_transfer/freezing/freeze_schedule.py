"""`FreezeSchedule`: gradual unfreezing inside one `model.fit`."""

from __future__ import annotations

import os
import warnings

import keras

from keras_transfer._checks import check_integer, check_number
from keras_transfer._keras_internals.distribute import refuse_multi_worker_strategy
from keras_transfer.freezing.freeze import (
    ALL,
    check_optimizer_agrees,
    resolve_group_count,
    set_trainable_groups,
    trainable_capable_under,
)
from keras_transfer.freezing.trainable_set import track_variables
from keras_transfer.groups import LayerGroupPlan, layer_groups
from keras_transfer.groups.layer_groups import groups_config
from keras_transfer.groups.layer_variables import count_params

_UNITS = ("epoch", "step")


@keras.saving.register_keras_serializable(package="keras_transfer")
class FreezeSchedule(keras.callbacks.Callback):
    """Unfreezes layer groups from the top down as training progresses.

    ULMFiT-style gradual unfreezing within one `fit` call, on the TensorFlow,
    JAX and PyTorch backends. The schedule maps an epoch (or a step, with
    `unit="step"`) to the number of top layer groups that are trainable from
    then on. Stages change only at epoch (or step) boundaries and are chosen
    from the epoch index, so `fit(initial_epoch=...)` and
    `keras.callbacks.BackupAndRestore` resume in the right stage.

    The optimizer is built once on every variable that will ever train: the
    state of variables that were already training survives a stage change,
    newly unfrozen variables start with fresh state, and the train function is
    rebuilt once per stage, with no recompile. The number of trainable
    parameters is added to the epoch logs as `trainable_params` (so it reaches
    `History`, the progress bar and TensorBoard).

    With `cache_frozen=True`, train through `schedule.fit(x, y, ...)` (the
    arguments of `Model.fit`): at the start of each stage the model is cut
    where its frozen groups end (inside a nested KerasHub backbone too), the
    frozen part runs once over the training and validation data in inference
    mode (dropout off, BatchNormalization on its moving statistics, which is
    what frozen means here), and the stage's epochs train the rest on the
    cached activations, with the same optimizer, batches, shuffling and
    validation; the next stage cuts again. The cache stays in memory up to
    `cache_memory_limit_mb`, then goes to memory-mapped files. Callbacks see
    the whole model, so `kt.SafeBackupAndRestore` resumes in the right stage
    and rebuilds its cache. Where a cache cannot apply (random augmentation
    before a frozen layer, a generator, a dataset that draws random numbers,
    `unit="step"`, a subclassed model, more activations than the limits
    allow) a one-line warning says why and training goes on uncached. A
    caching schedule given to a plain `model.fit` as a callback cannot change
    the data that `fit` iterates: it warns and trains uncached.

    Args:
        model: the model being trained, or its `kt.layer_groups` plan (the
            same plan given to `kt.DiscriminativeLR`, so both use one set of
            groups). Optional: when omitted, the model that `fit` is called
            on is used.
        schedule: dict mapping a start epoch (or step) to the number of top
            groups trainable from then on, or `"all"`; it must have an entry
            for 0. Example: `{0: 1, 1: 2, 2: 4, 3: "all"}`.
        unit: `"epoch"` (default) or `"step"` (global training steps).
        groups: optional explicit grouping, as for `kt.layer_groups`. If the
            optimizer is a `kt.DiscriminativeLR`, it must use the same groups
            (the same plan, or the same `groups=`), or training stops with an
            error naming both.
        freeze_batchnorm: keep `BatchNormalization` layers in inference mode
            even once their group is unfrozen. Defaults to `True`.
        verbose: 1 (default) announces each stage change; 0 is silent.
        cache_frozen: in `fit`, run each stage's frozen groups once and train
            on their cached outputs. Defaults to `False`.
        cache_dir: folder for cached activations past the memory limit;
            defaults to `kt.cache_dir("prefix_cache")`. Deleted after each
            stage.
        cache_memory_limit_mb: megabytes of activations (training plus
            validation) kept in memory. Defaults to 2048.
        cache_disk_limit_mb: megabytes allowed on disk; `None` (default)
            allows 90 % of the disk's free space.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8, activation="relu", name="body"),
    ...     keras.layers.Dense(1, name="head"),
    ... ])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> history = model.fit(
    ...     np.ones((8, 4)), np.ones((8, 1)), epochs=2, verbose=0,
    ...     callbacks=[kt.FreezeSchedule(model, {0: 1, 1: "all"}, verbose=0)],
    ... )
    >>> history.history["trainable_params"]
    [9.0, 49.0]
    >>> stages = kt.FreezeSchedule(model, {0: 1, 1: "all"}, cache_frozen=True, verbose=0)
    >>> history = stages.fit(np.ones((8, 4)), np.ones((8, 1)), epochs=2, verbose=0)
    >>> history.history["trainable_params"]
    [9.0, 49.0]
    """

    def __init__(
        self,
        model: keras.Model | LayerGroupPlan | None = None,
        schedule: dict | None = None,
        unit: str = "epoch",
        groups=None,
        freeze_batchnorm: bool = True,
        verbose: int = 1,
        cache_frozen: bool = False,
        cache_dir: str | None = None,
        cache_memory_limit_mb: float = 2048,
        cache_disk_limit_mb: float | None = None,
    ):
        super().__init__()
        if schedule is None:
            raise ValueError(
                "FreezeSchedule needs a `schedule`, e.g. {0: 1, 1: 2, 2: 'all'} "
                "(epoch -> number of top groups trainable), or use "
                "`kt.FreezeSchedule.gradual(model)`."
            )
        if unit not in _UNITS:
            raise ValueError(f"`unit` must be one of {_UNITS}, got {unit!r}.")
        self.schedule = _validate_schedule(schedule)
        self.unit = unit
        if isinstance(model, LayerGroupPlan):
            groups, model = layer_groups(model, groups), model.owning_model()
        self.groups = groups
        self.freeze_batchnorm = freeze_batchnorm
        self.verbose = verbose
        self.cache_frozen = _check_flag(cache_frozen, "cache_frozen")
        self.cache_dir = None if cache_dir is None else os.fspath(cache_dir)
        self.cache_memory_limit_mb = check_number(
            cache_memory_limit_mb, "cache_memory_limit_mb", "megabytes", low=0, allow_inf=True
        )
        self.cache_disk_limit_mb = cache_disk_limit_mb
        if cache_disk_limit_mb is not None:
            check_number(
                cache_disk_limit_mb, "cache_disk_limit_mb", "megabytes", low=0, allow_inf=True
            )
        self._fitting = False  # True while `fit` drives the stages.
        self._groups: LayerGroupPlan | None = None
        self._grouped_model = None
        self._stage_count: int | None = None
        self._epoch = 0
        if model is not None:
            self.set_model(model)

    @classmethod
    def gradual(
        cls,
        model: keras.Model | None = None,
        every_epochs: int = 1,
        num_groups: int | None = None,
        **kwargs,
    ) -> FreezeSchedule:
        """ULMFiT's schedule: the top group first, one more every `every_epochs`.

        Args:
            model: the model; needed to count its groups unless `num_groups`
                is given.
            every_epochs: epochs (or steps, with `unit="step"`) per stage.
            num_groups: the number of groups to unfreeze over; defaults to all
                of the model's groups.
            **kwargs: passed to `FreezeSchedule`.
        """
        check_integer(every_epochs, "every_epochs", "epochs or steps per stage", low=1)
        if num_groups is None:
            if model is None:
                raise ValueError("`FreezeSchedule.gradual` needs `model` or `num_groups`.")
            num_groups = len(layer_groups(model, kwargs.get("groups")))
        _require_several_groups(num_groups)
        schedule = {stage * every_epochs: stage + 1 for stage in range(num_groups)}
        return cls(model, schedule, **kwargs)

    def set_model(self, model):
        refuse_multi_worker_strategy("kt.FreezeSchedule", model)
        if model is not self._grouped_model:
            self._groups = None  # Groups belong to the model they came from.
            self._grouped_model = model
        super().set_model(model)
        if model.built:  # Otherwise prepared in `on_train_begin`, once built.
            self._prepare()

    def on_train_begin(self, logs=None):
        if self.cache_frozen and not self._fitting:
            warnings.warn(_PLAIN_FIT_CANNOT_CACHE, stacklevel=2)
        self._prepare()
        self._stage_count = None

    def _prepare(self):
        self._resolve_groups()
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            # Slots for every variable that will ever train exist before the
            # first freeze, and before BackupAndRestore restores into them.
            track_variables(optimizer, trainable_capable_under(self.model, self._groups))
            check_optimizer_agrees(self.model, self._groups, "FreezeSchedule")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self.unit == "epoch":
            self._enter_stage(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.unit == "step":
            self._enter_stage(self._global_step(batch))

    def _global_step(self, batch: int) -> int:
        # Derived from the epoch index, never counted, so that a resumed fit
        # lands in the right stage.
        steps_per_epoch = self.params.get("steps")
        if not steps_per_epoch:
            raise ValueError(
                "FreezeSchedule(unit='step') needs to know the number of steps "
                "per epoch, and this dataset does not say. Pass "
                "`steps_per_epoch=` to `fit`, or use unit='epoch'."
            )
        return self._epoch * steps_per_epoch + batch

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["trainable_params"] = float(count_params(self.model.trainable_weights))

    def stage_for(self, position: int) -> int | str:
        """The schedule's entry in force at an epoch (or step) index."""
        start = max(key for key in self.schedule if key <= position)
        return self.schedule[start]

    def fit(
        self, x=None, y=None, validation_data=None, epochs: int = 1, callbacks=None, **fit_kwargs
    ) -> keras.callbacks.History:
        """Trains the model through the schedule's stages; returns the `History`.

        With `cache_frozen=True`, each stage's frozen layers run once over the
        data and the stage's epochs train the rest on their cached outputs
        (see the class docstring); otherwise this is `model.fit` with the
        schedule among the callbacks. The arguments are `Model.fit`'s; the
        schedule itself need not be in `callbacks`.
        """
        if self._grouped_model is None:
            raise ValueError(
                "FreezeSchedule.fit trains the schedule's model: create the schedule "
                "with it, `kt.FreezeSchedule(model, schedule)`."
            )
        model = self._grouped_model
        others = [callback for callback in (callbacks or []) if callback is not self]
        if not self.cache_frozen:
            return model.fit(
                x,
                y,
                validation_data=validation_data,
                epochs=epochs,
                callbacks=[self, *others],
                **fit_kwargs,
            )
        # `features` is a floor above `freezing` (it builds on freezing's
        # rules): imported here, when asked for, so no import cycle forms.
        from keras_transfer.features.prefix_cache import fit_in_stages

        self._fitting = True
        try:
            return fit_in_stages(
                self,
                x,
                y,
                validation_data=validation_data,
                epochs=epochs,
                callbacks=others,
                **fit_kwargs,
            )
        finally:
            self._fitting = False

    @property
    def plan(self) -> LayerGroupPlan:
        """The layer groups the schedule counts, resolved on its model."""
        if self._grouped_model is None:
            raise ValueError("This FreezeSchedule has no model yet; it gets one in `fit`.")
        self._resolve_groups()
        return self._groups

    def get_config(self):
        return {
            "schedule": {str(key): value for key, value in self.schedule.items()},
            "unit": self.unit,
            "groups": groups_config(self.groups),
            "freeze_batchnorm": self.freeze_batchnorm,
            "verbose": self.verbose,
            "cache_frozen": self.cache_frozen,
            "cache_dir": self.cache_dir,
            "cache_memory_limit_mb": self.cache_memory_limit_mb,
            "cache_disk_limit_mb": self.cache_disk_limit_mb,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = {int(key): value for key, value in config["schedule"].items()}
        return cls(**config)

    def _resolve_groups(self):
        if self._groups is not None:
            return
        groups = layer_groups(self.model, self.groups)
        _require_several_groups(len(groups))
        for value in self.schedule.values():
            resolve_group_count(value, len(groups))
        self._groups = groups

    def _enter_stage(self, position: int):
        count = resolve_group_count(self.stage_for(position), len(self._groups))
        if count == self._stage_count:
            return
        set_trainable_groups(self.model, self._groups, count, self.freeze_batchnorm)
        self._stage_count = count
        if self.verbose:
            names = [group.name for group in self._groups[len(self._groups) - count :]]
            shown = ", ".join(names) if len(names) <= 4 else f"{names[0]} ... {names[-1]}"
            print(
                f"FreezeSchedule: {self.unit} {position}: {count}/{len(self._groups)} "
                f"groups trainable ({shown}); "
                f"{count_params(self.model.trainable_weights):,} trainable parameters."
            )


def _validate_schedule(schedule) -> dict:
    if not isinstance(schedule, dict) or not schedule:
        raise TypeError(
            "`schedule` must be a non-empty dict mapping an epoch (or step) to "
            f"a number of trainable top groups, e.g. {{0: 1, 2: 'all'}}; got {schedule!r}."
        )
    cleaned = {}
    for original_key, value in schedule.items():
        key = original_key
        if isinstance(key, str) and key.isascii() and key.isdigit():
            key = int(key)
        if isinstance(key, bool) or not isinstance(key, int) or key < 0:
            raise ValueError(f"Schedule keys must be epoch (or step) indices >= 0, got {key!r}.")
        if key in cleaned:
            raise ValueError(
                f"The schedule {schedule!r} names epoch (or step) {key} twice "
                f"(the second time as {original_key!r}); give each start once."
            )
        if value != ALL and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(
                f"Schedule value {value!r} at {key} is not a number of groups >= 1 "
                "or 'all'. Every stage must train at least the top group."
            )
        cleaned[key] = value
    if 0 not in cleaned:
        raise ValueError(
            f"The schedule {schedule!r} has no entry for 0, so it does not say "
            "what trains at the start. Add one, e.g. {0: 1, ...}."
        )
    if len(cleaned) == 1 and cleaned[0] != ALL and cleaned[0] == 1:
        raise ValueError(
            f"The schedule {schedule!r} never unfreezes anything beyond the top "
            "group. Add later stages, e.g. {0: 1, 1: 2, 2: 'all'}, or use "
            "`kt.freeze(model, trainable_groups=1)` for a fixed freeze."
        )
    return dict(sorted(cleaned.items()))


def _require_several_groups(num_groups: int):
    if num_groups < 2:
        raise ValueError(
            f"Gradual unfreezing needs at least 2 layer groups, but the model has "
            f"{num_groups}. Give groups explicitly with `groups=[regex, ...]` "
            "(one layer-name regex per group, input to output), or wrap the "
            "backbone and head as separate layers."
        )


def _check_flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return value


_PLAIN_FIT_CANNOT_CACHE = (
    "FreezeSchedule(cache_frozen=True) is a callback of a plain `model.fit` here, which "
    "cannot change the data it iterates, so nothing is cached: call `schedule.fit(x, y, "
    "...)` instead to train each stage on its frozen layers' cached outputs."
)
