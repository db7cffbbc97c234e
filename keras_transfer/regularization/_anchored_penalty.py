"""What `L2SP` and `EWC` share: a weighted distance to an anchor, attached to a
model through Keras' own weight regularisers.

The penalty is `sum over variables of s / 2 * sum(F * (w - a)^2)`: a strength
`s`, an optional anchor `a` (the weights to stay near; zero when absent) and
an optional elementwise importance `F` (EWC's Fisher information). Each term is
set as the `regularizer` of its variable, so Keras adds it to `model.losses`
and to the loss of every train and test step, on every backend, and skips it
while the variable is frozen. The anchors, importances and strengths are
non-trainable variables of the penalty, a layer held by the model: they are
saved with the model's weights (and in `SafeBackupAndRestore` backups) and
never reach the optimizer.
"""

from __future__ import annotations

import re
import weakref

import keras
import numpy as np
from keras import ops

from keras_transfer._checks import check_number
from keras_transfer._keras_internals.layers import attach_state, detach_state
from keras_transfer._keras_internals.training import readable_here


class AnchoredPenalty(keras.layers.Layer):
    """Base of `kt.L2SP` and `kt.EWC`: terms on a model's variables, attached
    while the penalty lives and detached by `remove()`.

    A subclass sets `attribute` (where the model holds the penalty, and where
    saved weights keep it) and `log_name` (its entry in the training logs),
    calls `_check_free(model)` before any costly work, `_add_term` for each
    variable, then `_attach(model)`.
    """

    attribute: str = ""
    log_name: str = ""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._terms: list[_Term] = []
        self._strengths: dict[str, keras.Variable] = {}
        self._model_ref = None
        self._previous_index: int | None = None
        self.logged_total = self._scalar("logged_total")
        self.logged_steps = self._scalar("logged_steps")
        # Not an attribute Keras tracks: the model holds the metric itself
        # (`_attach`), so that `model.metrics` lists it once.
        object.__setattr__(self, "_log", _PenaltyLog(self, name=self.log_name))
        self.built = True

    @property
    def penalised_variables(self) -> list:
        """The model variables that carry a term, in the order of `model.weights`."""
        return [term.target for term in self._terms]

    def penalty(self):
        """The penalty at the model's current weights, frozen variables included."""
        return ops.sum(ops.stack([term.value(term.target) for term in self._terms]))

    @classmethod
    def from_config(cls, config):
        raise TypeError(
            f"A {cls.__name__} belongs to a model and cannot be rebuilt from its config "
            f"alone. Create one with `kt.{cls.__name__}(model, ...)`, or attach one saved "
            f"with the model's weights with `kt.{cls.__name__}.load(model, path)`."
        )

    def remove(self) -> None:
        """Detaches the penalty: the model trains and saves as it did before.

        Raises:
            ValueError: if it was removed already.
        """
        model = self._require_model("remove")
        for term in self._terms:
            term.detach()
        detach_state(model, self.attribute, self)
        detach_state(model, f"{self.attribute}_log", self._log)
        self._model_ref = None
        _rebuild_step_functions(model)

    # For subclasses.

    def _strength(self, name: str, value: float) -> keras.Variable:
        """A scalar strength variable (saved with the weights, so a resumed run
        and a reloaded model keep the value in force)."""
        variable = self._scalar(name, value)
        self._strengths[name] = variable
        return variable

    def _set_strength(self, name: str, value, hint: str) -> None:
        value = check_number(value, name, hint, low=0)
        self._strengths[name].assign(value)

    def _strength_value(self, name: str) -> float:
        # The shortest decimal that reads back as the stored float32: the
        # 0.01 given, not 0.009999999776.
        return float(str(np.float32(ops.convert_to_numpy(self._strengths[name]))))

    def _add_term(self, target, strength, anchor: bool, importance=None) -> None:
        """A term on `target`: anchored at its current value if `anchor`,
        weighted elementwise by `importance` (an array of its shape) if given."""
        stem = re.sub(r"[^0-9A-Za-z_]", "_", target.path)
        anchor_variable = importance_variable = None
        if anchor:
            anchor_variable = self._copy(f"{stem}_anchor", target.shape, target.dtype)
            # A copy: on JAX, sharing the weights' buffer would hand a train step
            # the same buffer twice.
            anchor_variable.assign(ops.copy(target.value))
        if importance is not None:
            importance_variable = self._copy(f"{stem}_importance", target.shape, target.dtype)
            importance_variable.assign(importance)
        self._terms.append(
            _Term(self, len(self._terms), target, strength, anchor_variable, importance_variable)
        )

    @classmethod
    def _check_free(cls, model) -> None:
        existing = getattr(model, cls.attribute, None)
        if existing is not None:
            raise ValueError(
                f"Model '{model.name}' already has an {type(existing).__name__} penalty "
                "attached. Call `.remove()` on it first, or change its strength in place."
            )

    def _attach(self, model) -> None:
        self._check_free(model)
        attach_state(model, self.attribute, self)
        attach_state(model, f"{self.attribute}_log", self._log)
        for term in self._terms:
            term.attach()
        # Weakly: the model holds the penalty, not the other way round.
        self._model_ref = weakref.ref(model)
        _rebuild_step_functions(model)

    def _require_model(self, action: str):
        model = self._model_ref() if self._model_ref is not None else None
        if model is None:
            raise ValueError(
                f"This {type(self).__name__} is not attached to a model (it was removed), "
                f"so there is nothing to {action}. Create a new one to penalise again."
            )
        return model

    def _scalar(self, name: str, value: float = 0.0) -> keras.Variable:
        variable = self.add_weight(shape=(), initializer="zeros", trainable=False, name=name)
        variable.assign(value)
        return variable

    def _copy(self, name: str, shape, dtype) -> keras.Variable:
        return self.add_weight(
            shape=shape, initializer="zeros", dtype=dtype, trainable=False, name=name
        )

    # Logging: the mean over a run's steps of the penalty each step added.

    def _record(self, index: int, value) -> None:
        # Keras computes the terms of one step in the order of
        # `model.trainable_weights`, ours too: a term that comes no later than
        # the one before starts the next step.
        if self._previous_index is None or index <= self._previous_index:
            self.logged_steps.assign_add(ops.ones((), self.logged_steps.dtype))
        self._previous_index = index
        self.logged_total.assign_add(ops.cast(ops.stop_gradient(value), self.logged_total.dtype))

    def _logged_mean(self):
        if not readable_here(self.logged_total):
            # JAX computing a step's logs: the sums are in the step's state,
            # out of reach until the epoch ends (see the class docstrings).
            return ops.zeros((), self.logged_total.dtype)
        return ops.divide_no_nan(self.logged_total, self.logged_steps)

    def _reset_log(self) -> None:
        self.logged_total.assign(0.0)
        self.logged_steps.assign(0.0)


class _Term:
    """One variable's share of a penalty: `strength / 2 * sum(F * (w - a)^2)`."""

    def __init__(self, penalty, index, target, strength, anchor, importance):
        self.penalty = penalty
        self.index = index
        self.target = target
        self.strength = strength
        self.anchor = anchor
        self.importance = importance
        self.regularizer = None

    def value(self, weights):
        distance = weights if self.anchor is None else ops.subtract(weights, self.anchor)
        squared = ops.square(distance)
        if self.importance is not None:
            squared = ops.multiply(self.importance, squared)
        return ops.multiply(ops.multiply(self.strength, 0.5), ops.sum(squared))

    def attach(self) -> None:
        self.regularizer = _TermRegularizer(self, self.target.regularizer)
        self.target.regularizer = self.regularizer

    def detach(self) -> None:
        """Takes this term out of the variable's chain of regularisers (which
        other penalties may have wrapped since)."""
        mine, current = self.regularizer, self.target.regularizer
        if current is mine:
            self.target.regularizer = mine.previous
        while isinstance(current, _TermRegularizer):
            if current.previous is mine:
                current.previous = mine.previous
            current = current.previous
        self.regularizer = None


class _TermRegularizer(keras.regularizers.Regularizer):
    """A variable's regulariser for one penalty term, wrapping the regulariser
    it had before (a layer's `kernel_regularizer`, another penalty's term).

    It lives on the variable only while the penalty is attached and is not
    serialized: the penalty's state is saved with the weights instead, and a
    layer's config keeps its own `kernel_regularizer`.
    """

    def __init__(self, term: _Term, previous=None):
        self.term = term
        self.previous = previous

    def __call__(self, weights):
        value = self.term.value(weights)
        self.term.penalty._record(self.term.index, value)
        if self.previous is not None:
            value = ops.add(value, ops.cast(self.previous(weights), value.dtype))
        return value

    def get_config(self):
        raise NotImplementedError(
            f"The {type(self.term.penalty).__name__} term on '{self.term.target.path}' is "
            "not serialized on its own: its anchors and strengths are saved with the "
            "model's weights. See the penalty's `load` to attach it to a loaded model."
        )


class _PenaltyLog(keras.metrics.Metric):
    """The penalty's entry in the training logs (e.g. `l2sp_loss`): the mean
    over the steps since the last reset of the penalty each step added.

    It has no state of its own: Keras resets and reads it with the model's
    other metrics, and the penalty's terms update its running sums, which are
    non-trainable variables of the penalty, where a JAX train step carries
    them (a metric's own variables would not be carried out of the forward
    pass where Keras computes the regularisers).
    """

    def __init__(self, penalty: AnchoredPenalty, name: str):
        super().__init__(name=name)
        # Weakly, and untracked: saving walks a metric's attributes, and must
        # not walk back into the penalty.
        object.__setattr__(self, "_penalty_ref", weakref.ref(penalty))

    def update_state(self, *args, **kwargs):
        """Nothing to do: the penalty's terms record themselves."""

    def result(self):
        return self._penalty_ref()._logged_mean()

    def reset_state(self):
        self._penalty_ref()._reset_log()


def _rebuild_step_functions(model) -> None:
    """Retraces a compiled model's train and test steps, which hold the
    regularisers they were traced with."""
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)
    if getattr(model, "test_function", None) is not None:
        model.make_test_function(force=True)


def require_trainable(model, user: str, consequence: str) -> None:
    """Raises unless `model` is a Keras model with trainable weights.

    Args:
        model: the model given.
        user: who asks, for the message (e.g. "L2SP").
        consequence: what a model with nothing trainable would mean for it.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"{user} needs a Keras model, got {type(model).__name__}.")
    if not model.trainable_weights:
        raise ValueError(
            f"Model '{model.name}' has no trainable weights, so {consequence}. Unfreeze the "
            "layers to fine-tune first (e.g. `kt.unfreeze(model)` or "
            f"`kt.freeze(model, trainable_groups=1)`), then call {user} again."
        )


def load_penalty(create, filepath: str):
    """`create()`s a penalty on a loaded model, then reads its saved state
    from `filepath` (with the model's weights, which are the same)."""
    penalty = create()
    model = penalty._require_model("load")
    try:
        model.load_weights(filepath)
    except Exception as error:
        penalty.remove()
        if not isinstance(error, ValueError):
            raise
        name = type(penalty).__name__
        raise ValueError(
            f"Could not read a saved {name} for model '{model.name}' from {filepath!r}. "
            f"The file must be this model saved while an {name} was attached (created "
            f"with the same arguments as here). Keras said: {error}"
        ) from error
    return penalty


def to_numpy(value) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(value))
