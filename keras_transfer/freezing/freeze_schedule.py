"""`FreezeSchedule`: gradual unfreezing inside one `model.fit`."""

from __future__ import annotations

import keras

from keras_transfer._checks import check_integer
from keras_transfer.freezing.freeze import (
    ALL,
    check_optimizer_agrees,
    resolve_group_count,
    set_trainable_groups,
)
from keras_transfer.freezing.trainable_set import track_variables
from keras_transfer.groups import LayerGroupPlan, layer_groups
from keras_transfer.groups.layer_groups import groups_config
from keras_transfer.groups.layer_variables import count_params, trainable_capable_weights

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
    """

    def __init__(
        self,
        model: keras.Model | LayerGroupPlan | None = None,
        schedule: dict | None = None,
        unit: str = "epoch",
        groups=None,
        freeze_batchnorm: bool = True,
        verbose: int = 1,
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
        if model is not self._grouped_model:
            self._groups = None  # Groups belong to the model they came from.
            self._grouped_model = model
        super().set_model(model)
        if model.built:  # Otherwise prepared in `on_train_begin`, once built.
            self._prepare()

    def on_train_begin(self, logs=None):
        self._prepare()
        self._stage_count = None

    def _prepare(self):
        self._resolve_groups()
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            # Slots for every variable that will ever train exist before the
            # first freeze, and before BackupAndRestore restores into them.
            track_variables(optimizer, trainable_capable_weights(self.model))
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

    def get_config(self):
        return {
            "schedule": {str(key): value for key, value in self.schedule.items()},
            "unit": self.unit,
            "groups": groups_config(self.groups),
            "freeze_batchnorm": self.freeze_batchnorm,
            "verbose": self.verbose,
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
