"""The hooks a layer or model can implement to guide the library.

Each is a `typing.Protocol`: implement the method on your own layer or model
and `kt.layer_groups`, `kt.freeze` / `kt.FreezeSchedule` and
`kt.export_saved_model` use it. None is required.

- `VariableGroups`: one layer holding several blocks (`kt.HubLayer` does this
  for a SavedModel's encoder blocks) names groups of its own variables, so
  the blocks are frozen and scaled one by one.
- `FixedLayers`: a model names layers that never train, whatever the stage
  (`kt.DistillationModel` names its teacher). Layer groups leave them out.
- `HeadLayers`: a model names layers that belong with its head (the last
  group) wherever they sit in it (`kt.DistillationModel` names its feature
  projection, which trains from the first stage on).
- `ServingModel`: a training model (distillation, domain adaptation) names the
  plain Keras model that serves after training; `kt.export_saved_model`
  exports that one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import keras


@runtime_checkable
class VariableGroups(Protocol):
    """A layer that splits its own variables into ordered groups.

    Example:

    >>> import keras
    >>> import keras_transfer as kt
    >>> class TwoBlocks(keras.layers.Layer):
    ...     def build(self, shape):
    ...         self.low = self.add_weight(shape=(2,), name="low")
    ...         self.high = self.add_weight(shape=(2,), name="high")
    ...     def call(self, x):
    ...         return x * self.low * self.high
    ...     def variable_groups(self):
    ...         return [("low", [self.low]), ("high", [self.high])]
    >>> model = keras.Sequential([keras.Input((2,)), TwoBlocks()])
    >>> [group.name for group in kt.layer_groups(model)]
    ['low', 'high']
    """

    def variable_groups(self) -> Sequence[tuple[str, Sequence[keras.Variable]]]:
        """`(name, variables)` pairs, ordered from input to output."""


@runtime_checkable
class FixedLayers(Protocol):
    """A model whose named layers never train (a distillation teacher)."""

    def fixed_layers(self) -> Sequence[keras.layers.Layer]:
        """The layers to keep frozen and out of every layer group."""


@runtime_checkable
class HeadLayers(Protocol):
    """A model whose named layers join its head group (a feature projection)."""

    def head_layers(self) -> Sequence[keras.layers.Layer]:
        """The layers to put in the last (output) group."""


@runtime_checkable
class ServingModel(Protocol):
    """A training model that hands over a plain model for serving."""

    def serving_model(self) -> keras.Model:
        """The Keras model `kt.export_saved_model` exports."""
