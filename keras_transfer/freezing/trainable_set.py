"""Keeps a Keras optimizer in step with a trainable set that changes mid-fit.

This is the one place that solves gradual unfreezing for all three backends:

- The optimizer is built (or extended) once on every variable that may ever
  train, so its slots exist before the first freeze; `BackupAndRestore` then
  restores into them, and slots of already-trained variables are never lost.
- Its mapping from trainable variables to slots then follows the current
  trainable set. On JAX, `stateless_apply` expects exactly one gradient per
  variable of that mapping; TensorFlow and PyTorch only look variables up in
  it. Slot positions never move, so no buffer is donated twice.

Keras keeps that mapping in private attributes; the functions of
`keras_transfer._keras_internals.optimizers` reach them, and
`tests/_keras_internals/test_optimizers.py` pins them so that a Keras release
that moves them fails loudly. `tests/freezing/test_trainable_set.py` tests
this module.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np

from keras_transfer._keras_internals.optimizers import (
    mapped_variables,
    set_variable_mapping,
    unbuild,
    variable_key,
)

# Every variable each optimizer was built on, in build order. The optimizer's
# own mapping shrinks to the trainable subset; this keeps the whole.
_BUILT_ON: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def optimizer_chain(optimizer) -> list:
    """The optimizer and the optimizers it wraps (`inner_optimizer`)."""
    chain = [optimizer]
    while getattr(chain[-1], "inner_optimizer", None) is not None:
        chain.append(chain[-1].inner_optimizer)
    return chain


def check_supported(optimizer) -> None:
    """Raises for optimizer settings that cannot follow a changing set."""
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            "Expected a Keras optimizer (an instance of "
            f"`keras.optimizers.Optimizer`), got {type(optimizer).__name__}. "
            "Pass e.g. `keras.optimizers.Adam(1e-4)`."
        )
    for member in optimizer_chain(optimizer):
        if getattr(member, "use_ema", False):
            raise ValueError(
                f"Optimizer '{member.name}' has `use_ema=True`. Keras pairs EMA "
                "averages with trainable variables by position, which breaks "
                "when layers are unfrozen during training. Use "
                "`use_ema=False` with FreezeSchedule / kt.freeze, or apply "
                "EMA after the unfreezing stages."
            )


def track_variables(optimizer, variables) -> None:
    """Builds `optimizer` on `variables`, or extends it to cover them.

    Slots of variables it already knew keep their values; new variables get
    fresh slots. Its iteration count is kept.
    """
    check_supported(optimizer)
    if not optimizer.built:
        optimizer.build(list(variables))
        _record_build(optimizer)
        return
    _record_build(optimizer)
    known = _BUILT_ON[optimizer]
    known_keys = {variable_key(optimizer, v) for v in known}
    missing = [v for v in variables if variable_key(optimizer, v) not in known_keys]
    if missing:
        _rebuild_keeping_state(optimizer, known + missing)


def follow_trainable(optimizer, trainable_variables) -> None:
    """Points the optimizer's variable-to-slot mapping at the trainable set."""
    trainable_variables = list(trainable_variables)
    for member in optimizer_chain(optimizer):
        _record_build(member)
        full_index = {variable_key(member, v): i for i, v in enumerate(_BUILT_ON[member])}
        keys = [variable_key(member, v) for v in trainable_variables]
        unknown = [v.path for v, key in zip(trainable_variables, keys) if key not in full_index]
        if unknown:
            raise ValueError(
                f"Optimizer '{member.name}' has no slots for {unknown}. Call "
                "`track_variables` first."
            )
        set_variable_mapping(member, trainable_variables, {key: full_index[key] for key in keys})


def _record_build(optimizer) -> None:
    for member in optimizer_chain(optimizer):
        if member not in _BUILT_ON and member.built:
            _BUILT_ON[member] = mapped_variables(member)


def _rebuild_keeping_state(optimizer, variables) -> None:
    saved = {v.path: np.array(keras.ops.convert_to_numpy(v.value)) for v in optimizer.variables}
    for member in optimizer_chain(optimizer):
        unbuild(member)
        _BUILT_ON.pop(member, None)
    optimizer.build(list(variables))
    for variable in optimizer.variables:
        value = saved.get(variable.path)
        if value is not None and tuple(value.shape) == tuple(variable.shape):
            variable.assign(value)
    _record_build(optimizer)
