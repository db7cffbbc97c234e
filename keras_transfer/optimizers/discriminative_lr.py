"""`DiscriminativeLR`: per-group learning rates on one optimizer."""

from __future__ import annotations

import math
import numbers
import re
import weakref

import keras

from keras_transfer.groups.layer_groups import layer_groups

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
class DiscriminativeLR(keras.optimizers.Optimizer):
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
        model: the model whose layer groups set the multipliers. Optional once
            the multipliers are resolved (a model loaded from a `.keras` file
            carries them in `variable_multipliers`).
        decay: the factor between neighbouring groups; defaults to 2.6
            (ULMFiT) when `multipliers` is not given. Must be > 0.
        multipliers: optional dict of learning-rate multipliers keyed by group
            index (negative counts from the top) or by a regex searched in each
            variable's path (e.g. `"dense"`); unmatched variables get 1.0.
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

    # The weight decay of the group being decayed is `weight_decay` times this.
    _decay_multiplier = 1.0

    def __init__(
        self,
        optimizer,
        model: keras.Model | None = None,
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
        for setting, off in _TAKEN_OVER.items():
            setattr(optimizer, setting, off)
        self.inner_optimizer = optimizer
        self.decay = _validate_decay(decay, multipliers)
        self.multipliers = _validate_multipliers(multipliers)
        self.groups = groups
        self.variable_multipliers = dict(variable_multipliers) if variable_multipliers else None
        self._model_ref = weakref.ref(model) if model is not None else None
        self._multiplier_by_key: dict = {}

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

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
        self._multiplier_by_key = {self._var_key(v): m for v, m in zip(var_list, multipliers)}

    def multiplier_for(self, variable) -> float:
        """The learning-rate multiplier of one model variable."""
        if not self.built:
            raise ValueError(
                "The optimizer is not built yet; multipliers are resolved when "
                "it is (at the first `fit` step or by `optimizer.build(...)`)."
            )
        return self._multiplier_by_key[self._var_key(variable)]

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        for multiplier, (group_grads, group_variables) in self._by_multiplier(
            trainable_variables, grads
        ).items():
            rate = learning_rate if multiplier == 1.0 else learning_rate * multiplier
            self.inner_optimizer._backend_update_step(group_grads, group_variables, rate)
        # The wrapped update rule reads its own step count (Adam's bias
        # correction), so it counts the updates it makes. (Assigning ours to
        # it instead would hand JAX one buffer for two donated variables.)
        self.inner_optimizer._iterations.assign_add(1)

    @property
    def weight_decay(self):
        if self._weight_decay is None:
            return None
        return self._weight_decay * self._decay_multiplier

    @weight_decay.setter
    def weight_decay(self, value):
        self._weight_decay = value

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None:
            return
        try:
            for multiplier, (_, group_variables) in self._by_multiplier(variables).items():
                # The backend's own decay path (distribution-aware on TF, fused
                # on torch) reads `weight_decay` when traced. Only the group's
                # multiplier changes, never the configured decay: under
                # `MirroredStrategy` every replica runs this loop in its own
                # thread, in lockstep, and TF reads `weight_decay` in a merge
                # call once all of them have set the same multiplier.
                self._decay_multiplier = multiplier
                super()._apply_weight_decay(group_variables)
        finally:
            self._decay_multiplier = 1.0

    def _use_weight_decay(self, variable):
        # Exclusions may be set on either optimizer (BERT recipes set them on
        # the one they then wrap): both must agree to decay a variable.
        return super()._use_weight_decay(variable) and self.inner_optimizer._use_weight_decay(
            variable
        )

    def _by_multiplier(self, variables, grads=None) -> dict:
        grads = grads if grads is not None else [None] * len(variables)
        buckets: dict = {}
        for grad, variable in zip(grads, variables):
            multiplier = self._multiplier_by_key[self._var_key(variable)]
            bucket = buckets.setdefault(multiplier, ([], []))
            bucket[0].append(grad)
            bucket[1].append(variable)
        return buckets

    def _resolve_multipliers(self, var_list) -> list[float]:
        if self.variable_multipliers is not None and self._model_ref is None:
            return [float(self.variable_multipliers.get(v.path, 1.0)) for v in var_list]
        model = self._model_ref() if self._model_ref is not None else None
        if model is None:
            raise ValueError(
                "DiscriminativeLR needs the model to find its layer groups: pass "
                "`kt.DiscriminativeLR(optimizer, model)`."
            )
        groups = layer_groups(model, self.groups)
        group_of = {id(v): index for index, group in enumerate(groups) for v in group.variables}
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
                "groups": self.groups,
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
    inner_strategy = getattr(optimizer, "_distribution_strategy", None)
    if inner_strategy is not None and inner_strategy is not wrapper._distribution_strategy:
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
    learning_rate = optimizer._learning_rate
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
    if not _is_finite_number(decay) or decay <= 0:
        raise ValueError(
            f"`decay` must be a number > 0 (each group trains at the rate of the "
            f"group above divided by it; ULMFiT uses 2.6), got {decay!r}."
        )
    return float(decay)


def _is_finite_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


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
        if not _is_finite_number(value) or value < 0:
            raise ValueError(f"Multiplier for {key!r} must be a finite number >= 0, got {value!r}.")
        if isinstance(key, str):
            try:
                re.compile(key)
            except re.error as error:
                raise ValueError(f"Invalid multiplier regex {key!r}: {error}.") from None
    return {key: float(value) for key, value in multipliers.items()}


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
