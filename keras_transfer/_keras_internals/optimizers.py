"""Optimizers: the view of trainable variables, the rate, and the update rule.

Keras optimizers keep their mapping from model variables to slots, their
configured rate and their per-step hooks in private attributes and methods.
`keras_transfer` needs them for two things: following a trainable set that
changes mid-fit (`freezing/trainable_set.py`, `lr_finder`), and running a
wrapped optimizer's update rule group by group (`GroupedUpdateOptimizer`, the
base of `kt.DiscriminativeLR`). Each use is one function (or one hook of the
base class) here; `tests/_keras_internals/test_optimizers.py` pins them.
"""

from __future__ import annotations

import keras


def variable_key(optimizer: keras.optimizers.Optimizer, variable) -> object:
    """The key under which `optimizer` knows `variable` (slots, decay exclusions).

    Relies on `Optimizer._var_key`: `id(variable)` on JAX and PyTorch; on
    TensorFlow the unique id of the variable's distributed container, so that
    every replica of a `tf.distribute` variable has the same key.
    """
    return optimizer._var_key(variable)


def mapped_variables(optimizer: keras.optimizers.Optimizer) -> list:
    """The model variables `optimizer` currently maps to slots, in slot order.

    Right after `build(variables)` they are `variables`. Relies on
    `Optimizer._trainable_variables`, which `build` sets and `stateless_apply`
    (JAX) reads to pair gradients with variables.
    """
    return list(optimizer._trainable_variables)


def set_variable_mapping(
    optimizer: keras.optimizers.Optimizer, variables, slot_index_by_key: dict
) -> None:
    """Points `optimizer`'s variable-to-slot mapping at `variables`.

    `slot_index_by_key` gives, for the `variable_key` of each of `variables`,
    the position of its slots (the index of the variable in the list the
    optimizer was built on). Relies on `Optimizer._trainable_variables` (the
    variables `stateless_apply` expects one gradient each for) and
    `Optimizer._trainable_variables_indices` (what `_get_variable_index`
    reads to find a variable's slots). Both are set untracked, as Keras'
    own `build` does: `Optimizer.__setattr__` would otherwise track the model
    variables in them as optimizer state.
    """
    object.__setattr__(optimizer, "_trainable_variables", list(variables))
    object.__setattr__(optimizer, "_trainable_variables_indices", dict(slot_index_by_key))


def unbuild(optimizer: keras.optimizers.Optimizer) -> None:
    """Drops `optimizer`'s slots so that `build` can run again.

    Its step count and its rate variable (if any) are kept, as they are;
    every other variable of its own (slots, accumulators, EMA averages) stops
    being its state, and its mapping is emptied. A wrapped optimizer is not
    touched. Relies on `Optimizer._variables` (its own state, in order),
    `_iterations`, `_learning_rate`, `_untrack_variable` and on `build`
    doing nothing but create slots and the mapping when `built` is False.
    """
    keep = {id(optimizer._iterations), id(optimizer._learning_rate)}
    for variable in list(optimizer._variables):
        if id(variable) not in keep:
            optimizer._untrack_variable(variable)
    set_variable_mapping(optimizer, [], {})
    optimizer.built = False


def configured_learning_rate(optimizer: keras.optimizers.Optimizer):
    """What `optimizer` reads its rate from: its rate variable, a schedule or a callable.

    Unlike `optimizer.learning_rate`, which evaluates a schedule at the
    current step, this is the schedule itself. Relies on
    `Optimizer._learning_rate`.
    """
    return optimizer._learning_rate


def set_configured_learning_rate(optimizer: keras.optimizers.Optimizer, rate) -> None:
    """Makes `optimizer` read its rate from `rate` (a variable or a schedule).

    A `keras.Variable` becomes part of the optimizer's state (its
    `variables`), so a compiled train step reads it from there; a rate
    variable it replaces stops being state. Unlike the public
    `learning_rate` setter this also swaps a schedule for a variable.
    Relies on `Optimizer._learning_rate`, on `Optimizer.__setattr__` tracking
    a variable set on it, and on `_untrack_variable`.
    """
    previous = optimizer._learning_rate
    if isinstance(previous, keras.Variable) and previous is not rate:
        optimizer._untrack_variable(previous)
    optimizer._learning_rate = rate


def distribution_strategy(optimizer: keras.optimizers.Optimizer):
    """The `tf.distribute` strategy `optimizer` was created under, or None.

    TensorFlow optimizers create their slots under that strategy; other
    backends have none. Relies on TensorFlow's `Optimizer._distribution_strategy`.
    """
    return getattr(optimizer, "_distribution_strategy", None)


class GroupedUpdateOptimizer(keras.optimizers.Optimizer):
    """Runs a wrapped optimizer's update rule group by group, each at its own rate.

    A subclass sets `self.inner_optimizer` (an unbuilt optimizer whose
    clipping, weight decay, EMA, loss scaling and accumulation it has turned
    off: this optimizer applies them) and implements `multiplier_for(variable)`.
    Keras' `apply` then runs on this optimizer as usual (clipping,
    accumulation, EMA, its own step count); at the update, the variables are
    split by multiplier (in order of first appearance) and the wrapped
    optimizer's batched backend update runs once per group with the rate
    `learning_rate * multiplier` (the rate unchanged for a multiplier of 1).
    Decoupled weight decay runs per group too, scaled the same way, through
    the backend's own decay path; a variable is decayed only if both this
    optimizer and the wrapped one would decay it.

    Relies on `BaseOptimizer.apply` calling `_apply_weight_decay(variables)`
    and then `_backend_update_step(grads, variables, learning_rate)`; on the
    wrapped optimizer's `_backend_update_step` (PyTorch's fused `foreach`
    kernels, TensorFlow's distribution-aware update) and on its update rule
    reading its own step count `_iterations` (Adam's bias correction); on the
    backend `_apply_weight_decay` reading `self.weight_decay` when it runs
    and asking `_use_weight_decay(variable)`; and on `_variables` holding this
    optimizer's own state.
    """

    # The weight decay of the group being decayed is the configured one times this.
    _decay_multiplier = 1.0

    def multiplier_for(self, variable) -> float:
        """The learning-rate multiplier of one model variable."""
        raise NotImplementedError(f"{type(self).__name__} must implement `multiplier_for`.")

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    @property
    def weight_decay(self):
        if self._configured_weight_decay is None:
            return None
        return self._configured_weight_decay * self._decay_multiplier

    @weight_decay.setter
    def weight_decay(self, value):
        self._configured_weight_decay = value

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
            bucket = buckets.setdefault(self.multiplier_for(variable), ([], []))
            bucket[0].append(grad)
            bucket[1].append(variable)
        return buckets
