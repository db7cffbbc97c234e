"""`DiscriminativeLR`: per-group learning rates on one optimizer."""

from __future__ import annotations

import re
import weakref

import keras

from keras_transfer._checks import is_finite_number
from keras_transfer._keras_internals.distribute import refuse_multi_worker_strategy
from keras_transfer._keras_internals.optimizers import (
    GroupedUpdateOptimizer,
    configured_learning_rate,
    distribution_strategy,
    variable_key,
)
from keras_transfer.groups import LayerGroupPlan, layer_groups
from keras_transfer.groups.layer_groups import groups_config

ULMFIT_DECAY = 2.6

# Settings of the wrapped optimizer that act on the whole update (clipping,
# weight decay, EMA, accumulation, loss scaling). DiscriminativeLR applies them
# itself, group by group, and turns them off on the wrapped optimizer, the way
# `LossScaleOptimizer` takes over `loss_scale_factor`.
_TAKEN_OVER = {
    "weight_decay": None,
    "clipnorm": None,
    "clipvalue": None,
    "global_clipnorm": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}


@keras.saving.register_keras_serializable(package="keras_transfer")
class DiscriminativeLR(GroupedUpdateOptimizer):
    """Gives each layer group its own learning rate, on one optimizer.

    The top (output) group trains at the optimizer's learning rate; each group
    below trains at the rate of the group above divided by `decay` (ULMFiT's
    discriminative fine-tuning; timm's layer decay is the same idea). Or give
    `multipliers` per group index or per variable-path regex.

    Unlike `keras.optimizers.MultiOptimizer`, there is one optimizer, one
    iteration count and one learning-rate schedule: the wrapped optimizer's
    update rule runs once per group of equal multiplier, through the same
    batched update path Keras uses on each backend (PyTorch's fused `foreach`
    kernels included), with the learning rate scaled. So an SGD step moves each
    variable exactly `multiplier` times as far, and Adam behaves as an Adam
    whose rate for that variable is `learning_rate * multiplier`.

    Works with any Keras optimizer and `LearningRateSchedule`, with the
    `LearningRateScheduler` / `ReduceLROnPlateau` callbacks (they set this
    optimizer's `learning_rate`), with mixed precision (Keras wraps it in a
    `LossScaleOptimizer`), gradient accumulation and clipping. Decoupled weight
    decay is scaled with the group's rate (`v -= v * weight_decay * lr * m`),
    as in PyTorch parameter groups, so a group at a tenth of the rate also
    decays ten times slower. It composes with `FreezeSchedule`.

    Args:
        optimizer: the Keras optimizer to wrap (unbuilt), or its name.
        model: the model whose layer groups set the multipliers, or its
            `kt.layer_groups` plan (give the same plan to `kt.FreezeSchedule`
            so both use one set of groups). Optional once
            the multipliers are resolved (a model loaded from a `.keras` file
            carries them in `variable_multipliers`).
        decay: the factor between neighbouring groups; defaults to 2.6
            (ULMFiT) when `multipliers` is not given. Must be > 0.
        multipliers: optional dict of learning-rate multipliers keyed by group
            index (negative counts from the top) or by a regex searched in each
            variable's path (e.g. `"dense"`); unmatched variables get 1.0.
            A variable that a regex matches takes that regex's multiplier
            (the first matching regex in the dict's order), even when an
            index also names its group.
        groups: optional explicit grouping, as for `kt.layer_groups`.
        variable_multipliers: resolved multipliers by variable path; written by
            `get_config`, rarely given by hand.
        name: the optimizer's name.
        **kwargs: overrides of the wrapped optimizer's `learning_rate`,
            `weight_decay`, clipping, EMA, `loss_scale_factor` and
            `gradient_accumulation_steps` settings (by default taken from it).

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8, name="body"),
    ...     keras.layers.Dense(1, name="head"),
    ... ])
    >>> optimizer = kt.DiscriminativeLR(keras.optimizers.Adam(1e-3), model, decay=10)
    >>> model.compile(optimizer=optimizer, loss="mse")
    >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)
    >>> optimizer.multiplier_for(model.get_layer("body").kernel)
    0.1
    """

    def __init__(
        self,
        optimizer,
        model: keras.Model | LayerGroupPlan | None = None,
        decay: float | None = None,
        multipliers: dict | None = None,
        groups=None,
        variable_multipliers: dict | None = None,
        name: str | None = None,
        **kwargs,
    ):
        optimizer = _resolve_optimizer(optimizer)
        settings = _take_over_settings(optimizer, kwargs)
        super().__init__(name=name or f"discriminative_{optimizer.name}", **settings)
        _check_same_strategy(optimizer, self)
        refuse_multi_worker_strategy("kt.DiscriminativeLR", self)
        for setting, off in _TAKEN_OVER.items():
            setattr(optimizer, setting, off)
        self.inner_optimizer = optimizer
        self.decay = _validate_decay(decay, multipliers)
        self.multipliers = _validate_multipliers(multipliers)
        if isinstance(model, LayerGroupPlan):
            groups, model = layer_groups(model, groups), model.model
        self.groups = groups
        self._group_plan = None
        self.variable_multipliers = dict(variable_multipliers) if variable_multipliers else None
        self._model_ref = weakref.ref(model) if model is not None else None
        self._multiplier_by_key: dict = {}

    def build(self, var_list):
        if self.built:
            return
        var_list = list(var_list)
        if not var_list:
            raise ValueError(
                "DiscriminativeLR was given no trainable variables: the model is "
                "entirely frozen. Unfreeze some layer groups first, e.g. "
                "`kt.freeze(model, trainable_groups=1)` or `kt.unfreeze(model)`."
            )
        self.inner_optimizer.build(var_list)
        super().build(var_list)
        multipliers = self._resolve_multipliers(var_list)
        self.variable_multipliers = {v.path: m for v, m in zip(var_list, multipliers)}
        self._multiplier_by_key = {variable_key(self, v): m for v, m in zip(var_list, multipliers)}

    @property
    def group_plan(self) -> LayerGroupPlan | None:
        """The layer groups the multipliers follow, once built (`None` when
        they do not depend on groups: regex multipliers only, or multipliers
        restored from a saved model)."""
        return self._group_plan

    def multiplier_for(self, variable) -> float:
        """The learning-rate multiplier of one model variable."""
        if not self.built:
            raise ValueError(
                "The optimizer is not built yet; multipliers are resolved when "
                "it is (at the first `fit` step or by `optimizer.build(...)`)."
            )
        return self._multiplier_by_key[variable_key(self, variable)]

    def _resolve_multipliers(self, var_list) -> list[float]:
        if self.variable_multipliers is not None and self._model_ref is None:
            return [float(self.variable_multipliers.get(v.path, 1.0)) for v in var_list]
        model = self._model_ref() if self._model_ref is not None else None
        if model is None and not isinstance(self.groups, LayerGroupPlan):
            raise ValueError(
                "DiscriminativeLR needs the model to find its layer groups: pass "
                "`kt.DiscriminativeLR(optimizer, model)`."
            )
        groups = layer_groups(model, self.groups) if model is not None else self.groups
        if self.multipliers is None or any(isinstance(key, int) for key in self.multipliers):
            self._group_plan = groups
        group_of = _group_of_variables(groups)
        if self.multipliers is None:
            top = len(groups) - 1
            by_group = [self.decay ** -(top - index) for index in range(len(groups))]
            return [by_group[group_of[id(v)]] if id(v) in group_of else 1.0 for v in var_list]
        return _explicit_multipliers(self.multipliers, groups, group_of, var_list)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "inner_optimizer": self._serialize_inner(),
                "decay": self.decay,
                "multipliers": (
                    [[key, value] for key, value in self.multipliers.items()]
                    if self.multipliers is not None
                    else None
                ),
                "groups": groups_config(self.groups),
                "variable_multipliers": self.variable_multipliers,
            }
        )
        return config

    def _serialize_inner(self) -> dict:
        # The wrapped optimizer is saved with the settings it came with (AdamW,
        # for one, refuses `weight_decay=None`); they are taken over again on
        # loading.
        serialized = keras.saving.serialize_keras_object(self.inner_optimizer)
        serialized["config"].update({setting: getattr(self, setting) for setting in _TAKEN_OVER})
        return serialized

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = keras.saving.deserialize_keras_object(
                config["learning_rate"], custom_objects=custom_objects
            )
        if config.get("multipliers") is not None:
            config["multipliers"] = {key: value for key, value in config["multipliers"]}
        return cls(inner, **config)


def _resolve_optimizer(optimizer):
    if isinstance(optimizer, str):
        optimizer = keras.optimizers.get(optimizer)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            "DiscriminativeLR wraps a Keras optimizer, e.g. "
            "`kt.DiscriminativeLR(keras.optimizers.Adam(1e-4), model)`; got "
            f"{type(optimizer).__name__}."
        )
    if isinstance(optimizer, (keras.optimizers.LossScaleOptimizer, DiscriminativeLR)):
        raise ValueError(
            f"Cannot wrap a {type(optimizer).__name__}. Wrap the plain optimizer: "
            "Keras adds loss scaling around DiscriminativeLR itself under "
            "mixed_float16."
        )
    if optimizer.built:
        raise ValueError(
            f"Optimizer '{optimizer.name}' is already built on some variables. "
            "Wrap a fresh optimizer (e.g. `keras.optimizers.Adam(1e-4)`), before "
            "`compile`."
        )
    return optimizer


def _check_same_strategy(optimizer, wrapper) -> None:
    # On TensorFlow an optimizer keeps the tf.distribute strategy it was made
    # under and creates its slots there: both must be made under the same one.
    inner_strategy = distribution_strategy(optimizer)
    if inner_strategy is not None and inner_strategy is not distribution_strategy(wrapper):
        raise ValueError(
            f"Optimizer '{optimizer.name}' was created under another tf.distribute "
            "strategy scope than DiscriminativeLR. Create both inside the same "
            "`with strategy.scope():`, e.g. `kt.DiscriminativeLR("
            "keras.optimizers.Adam(1e-4), model)` there, with the model and `compile`."
        )


def _take_over_settings(optimizer, overrides: dict) -> dict:
    unknown = set(overrides) - set(_TAKEN_OVER) - {"learning_rate"}
    if unknown:
        raise TypeError(f"Unknown arguments to DiscriminativeLR: {sorted(unknown)}.")
    settings = {setting: getattr(optimizer, setting) for setting in _TAKEN_OVER}
    learning_rate = configured_learning_rate(optimizer)
    if isinstance(learning_rate, keras.Variable):
        learning_rate = float(keras.ops.convert_to_numpy(learning_rate))
    settings["learning_rate"] = learning_rate
    settings.update(overrides)
    return settings


def _validate_decay(decay, multipliers) -> float | None:
    if decay is not None and multipliers is not None:
        raise ValueError("Give either `decay` or `multipliers`, not both.")
    if multipliers is not None:
        return None
    decay = ULMFIT_DECAY if decay is None else decay
    if not is_finite_number(decay) or decay <= 0:
        raise ValueError(
            f"`decay` must be a number > 0 (each group trains at the rate of the "
            f"group above divided by it; ULMFiT uses 2.6), got {decay!r}."
        )
    return float(decay)


def _validate_multipliers(multipliers) -> dict | None:
    if multipliers is None:
        return None
    if not isinstance(multipliers, dict) or not multipliers:
        raise TypeError(
            "`multipliers` must be a non-empty dict keyed by group index or "
            f"variable-path regex, e.g. {{0: 0.1, 'head': 1.0}}; got {multipliers!r}."
        )
    for key, value in multipliers.items():
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise TypeError(f"Multiplier key {key!r} is neither a group index nor a regex.")
        if not is_finite_number(value) or value < 0:
            raise ValueError(f"Multiplier for {key!r} must be a finite number >= 0, got {value!r}.")
        if isinstance(key, str):
            try:
                re.compile(key)
            except re.error as error:
                raise ValueError(f"Invalid multiplier regex {key!r}: {error}.") from None
    return {key: float(value) for key, value in multipliers.items()}


def _group_of_variables(groups) -> dict:
    """The group index of every variable, by `id`.

    A variable a layer made after the plan was resolved (LoRA factors from
    `kt.enable_lora`) belongs to its layer's group.
    """
    group_of = {id(v): index for index, group in enumerate(groups) for v in group.variables}
    for index, group in enumerate(groups):
        if group.owns_whole_layers:
            for layer in group.layers:
                for variable in layer.weights:
                    group_of.setdefault(id(variable), index)
    return group_of


def _explicit_multipliers(multipliers, groups, group_of, var_list) -> list[float]:
    names = [f"{index}: {group.name}" for index, group in enumerate(groups)]
    by_group, key_of_group = {}, {}
    for key, value in multipliers.items():
        if isinstance(key, int):
            if not -len(groups) <= key < len(groups):
                raise ValueError(
                    f"Multiplier group index {key} is out of range; the model "
                    f"has {len(groups)} groups: {names}."
                )
            group = key % len(groups)
            if group in by_group:
                raise ValueError(
                    f"Multiplier group indices {key_of_group[group]} and {key} name the "
                    f"same group, {names[group]!r}: give one of them."
                )
            by_group[group], key_of_group[group] = value, key
    patterns = [
        (re.compile(key), value) for key, value in multipliers.items() if isinstance(key, str)
    ]
    for pattern, _ in patterns:
        if not any(pattern.search(v.path) for v in var_list):
            raise ValueError(
                f"Multiplier regex {pattern.pattern!r} matches no variable path. "
                f"Groups: {names}; e.g. paths {[v.path for v in var_list[:4]]}."
            )
    resolved = []
    for variable in var_list:
        value = next((m for p, m in patterns if p.search(variable.path)), None)
        if value is None:
            value = by_group.get(group_of.get(id(variable)), 1.0)
        resolved.append(value)
    return resolved
