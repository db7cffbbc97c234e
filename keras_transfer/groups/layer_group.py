"""`LayerGroup` and `LayerGroupPlan`: what a layer group is, and one model's
groups as the single labelling every rule consumes."""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence

import keras

from keras_transfer.groups.layer_variables import count_params, trainable_capable, unique_variables


@dataclasses.dataclass(eq=False)
class LayerGroup:
    """A named set of layers that is frozen and scaled as one unit.

    Args:
        name: the group's name, used in tables, logs and error messages.
        layers: the layers of the group, in topological order.
        variables: optional explicit variables, for a group that owns only
            part of a layer's variables (a SavedModel's encoder block inside
            one `HubLayer`). Defaults to every variable of `layers`.
    """

    name: str
    layers: list
    variables: list | None = None

    def __post_init__(self):
        self.owns_whole_layers = self.variables is None
        if self.variables is None:
            self.variables = unique_variables(v for layer in self.layers for v in layer.weights)

    @property
    def trainable_capable_variables(self) -> list:
        """Variables an optimizer may update when the group is unfrozen."""
        capable = {id(v) for layer in self.layers for v in trainable_capable(layer)}
        return [v for v in self.variables if id(v) in capable]

    @property
    def num_params(self) -> int:
        return count_params(self.variables)

    @property
    def num_trainable_params(self) -> int:
        trainable = {id(v) for layer in self.layers for v in layer.trainable_weights}
        return count_params(v for v in self.variables if id(v) in trainable)

    def __repr__(self):
        names = ", ".join(layer.name for layer in self.layers[:3])
        more = ", ..." if len(self.layers) > 3 else ""
        return f"LayerGroup({self.name!r}, layers=[{names}{more}])"


class LayerGroupPlan(Sequence):
    """A model's layer groups, input to output: the one labelling of its
    variables that every per-group rule consumes.

    `kt.layer_groups(model)` returns it; `kt.FreezeSchedule`,
    `kt.DiscriminativeLR` and `kt.freeze` accept it in place of the model (or
    as `groups=`), so a custom grouping is given once and shared, like the
    labels of optax's `multi_transform`. It is a sequence of `LayerGroup`s
    (indexing, `len`, iteration); the last group is the model's head.

    Args:
        groups: the `LayerGroup`s, ordered from input to output.
        model: the model the groups belong to (optional for groups given by
            hand; needed to pass the plan in place of the model).
        patterns: the layer-name regexes the groups came from, if any (these
            are what a saved `FreezeSchedule` or `DiscriminativeLR` stores).
        automatic: whether the groups are `kt.layer_groups`' automatic ones
            (a saved rule then stores no grouping and resolves it again).

    Example:

    >>> import keras
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8, name="body"),
    ...     keras.layers.Dense(2, name="head"),
    ... ])
    >>> plan = kt.layer_groups(model)
    >>> plan.names, plan.group_index(model.get_layer("head").kernel)
    (['body', 'head'], 1)
    >>> kt.layer_groups(model) is plan  # resolved once per model
    True
    """

    def __init__(self, groups, model=None, patterns=None, automatic: bool = False):
        self._groups = tuple(groups)
        if not self._groups or not all(isinstance(g, LayerGroup) for g in self._groups):
            raise ValueError(
                f"A LayerGroupPlan needs one or more `kt.LayerGroup`s, got {groups!r}."
            )
        self.automatic = automatic
        self._model_ref = weakref.ref(model) if model is not None else None
        self.patterns = tuple(patterns) if patterns is not None else None
        self._index_by_variable = {
            id(v): index for index, group in enumerate(self._groups) for v in group.variables
        }

    @property
    def model(self) -> keras.Model | None:
        """The model the groups were resolved on (`None` for groups by hand)."""
        return self._model_ref() if self._model_ref is not None else None

    def owning_model(self) -> keras.Model:
        """The model the groups belong to; raises for groups given by hand
        without one (then pass the model, with the groups as `groups=`)."""
        model = self.model
        if model is None:
            raise ValueError(
                "These groups were given by hand, so they name no model: pass the "
                "model, with the groups as `groups=`."
            )
        return model

    @property
    def names(self) -> list[str]:
        return [group.name for group in self._groups]

    def group_index(self, variable) -> int | None:
        """The index of the group holding `variable`, or `None` if none does."""
        return self._index_by_variable.get(id(variable))

    def partition(self) -> list[tuple[int, ...]]:
        """The groups as tuples of variable ids, for comparing two plans."""
        return [tuple(id(v) for v in group.variables) for group in self._groups]

    def describe_origin(self) -> str:
        """How the groups were chosen, for error messages."""
        if self.patterns is not None:
            return f"groups={list(self.patterns)}"
        return "automatic groups" if self.automatic else "groups given by hand"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self._groups[index])
        return self._groups[index]

    def __len__(self):
        return len(self._groups)

    def __repr__(self):
        return f"LayerGroupPlan({self.names})"


def check_same_groups(plan, user: str, other_plan, other_user: str) -> None:
    """Raises if two rules on one model label its variables differently.

    Args:
        plan, other_plan: the `LayerGroupPlan`s the two rules use.
        user, other_user: the rules' names, for the message.
    """
    if plan is other_plan or plan.partition() == other_plan.partition():
        return
    raise ValueError(
        f"{user} and {other_user} use different layer groups, so a stage and a "
        f"learning-rate multiplier would not mean the same group. {user}: "
        f"{len(plan)} groups {plan.names} ({plan.describe_origin()}); {other_user}: "
        f"{len(other_plan)} groups {other_plan.names} ({other_plan.describe_origin()}). "
        "Resolve the groups once and give the same plan to both: "
        "`plan = kt.layer_groups(model, groups=...)`, then "
        "`kt.DiscriminativeLR(optimizer, plan)` and `kt.FreezeSchedule(plan, schedule)`."
    )
