"""`L2SP`: fine-tuning that stays near the pretrained weights (Li et al., 2018)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import keras

from keras_transfer._checks import check_number
from keras_transfer.groups import LayerGroupPlan, layer_groups
from keras_transfer.groups.layer_variables import trainable_capable_weights
from keras_transfer.regularization._anchored_penalty import (
    AnchoredPenalty,
    load_penalty,
    require_trainable,
)


@keras.saving.register_keras_serializable(package="keras_transfer")
class L2SP(AnchoredPenalty):
    """Penalises fine-tuning for moving the pretrained weights from where they started.

    L2-SP (Li, Grandvalet & Davoine, ICML 2018) replaces weight decay toward
    zero with decay toward the starting point: the loss gains
    `alpha / 2 * sum ||w - w0||^2` over the pretrained layer groups of
    `kt.layer_groups(model)` (`w0` being their weights when the `L2SP` is
    created) plus `beta / 2 * sum ||w||^2` over the new head (its last group,
    or the groups named in `groups`). On small target sets it keeps what the
    backbone learnt and so generalises better than plain fine-tuning.

    Creating it attaches it: `compile` and `fit` need nothing else. Each
    variable's term is set as its Keras `regularizer`, so the penalty is in
    `model.losses` and in the loss of every train and test step, on every
    backend; frozen variables (`kt.freeze`, `kt.FreezeSchedule`) carry no
    term while they are frozen. The logs gain an `l2sp_loss` entry (and
    `val_l2sp_loss`): the mean of the penalty over the epoch's steps, already
    included in `loss`. (On JAX, Keras computes the per-step values shown by
    the progress bar inside its compiled step, where the penalty's running
    sums are not visible: they read 0 until the epoch ends; the epoch logs,
    `History` and callbacks get the true mean.) `remove()` detaches it.

    The anchors `w0` and the strengths are non-trainable variables of the
    model, so `save_weights`, `SafeBackupAndRestore` backups and `.keras`
    files keep them (the optimizer never sees them). A model loaded with
    `keras.models.load_model` comes back without the penalty, because a
    Functional model's config has no place for it: `L2SP.load(model, path)`
    attaches it again with the saved anchors and strengths.

    Args:
        model: a built Keras model, or its `kt.layer_groups` plan (for
            custom groups; the plan's last group is the head).
        alpha: the strength of the pull toward the starting weights, >= 0.
            Defaults to 0.01.
        beta: the weight decay of the head, >= 0. Defaults to 0.01.
        groups: which groups are the new head, decayed toward zero instead of
            anchored: a list of group indices (negative ones count from the
            top) and group names (a string matches every group whose whole
            name it matches as a regular expression, e.g. `"head"` or
            `"block_1[01]"`). Defaults to the last group; `[]` anchors every
            group (a model fine-tuned before, whose head is not new).

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8, name="body"),
    ...     keras.layers.Dense(1, name="head"),
    ... ], name="regressor")
    >>> l2sp = kt.L2SP(model, alpha=0.1, beta=0.01)
    >>> [variable.path for variable in l2sp.anchored_variables]
    ['regressor/body/kernel', 'regressor/body/bias']
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> history = model.fit(np.ones((8, 4)), np.ones((8, 1)), epochs=2, verbose=0)
    >>> sorted(history.history)
    ['l2sp_loss', 'loss']
    >>> l2sp.remove()
    """

    attribute = "keras_transfer_l2sp"
    log_name = "l2sp_loss"

    def __init__(
        self,
        model: keras.Model | LayerGroupPlan,
        alpha: float = 0.01,
        beta: float = 0.01,
        groups: Sequence[int | str] | None = None,
        **kwargs,
    ):
        alpha = check_number(alpha, "alpha", "the pull toward the pretrained weights", low=0)
        beta = check_number(beta, "beta", "the weight decay of the head", low=0)
        plan = layer_groups(model)
        model = plan.owning_model() if isinstance(model, LayerGroupPlan) else model
        require_trainable(model, "L2SP", "L2SP would penalise nothing")
        type(self)._check_free(model)
        head = _head_indices(plan, groups)
        super().__init__(**kwargs)
        self.groups = None if groups is None else list(groups)
        alpha_variable = self._strength("alpha", alpha)
        beta_variable = self._strength("beta", beta)
        self._head_paths = set()
        for variable in trainable_capable_weights(model):
            index = plan.group_index(variable)
            if index is None:
                continue  # Layers that never train (a distillation teacher).
            if index in head:
                self._head_paths.add(variable.path)
                self._add_term(variable, beta_variable, anchor=False)
            else:
                self._add_term(variable, alpha_variable, anchor=True)
        self._attach(model)

    @classmethod
    def load(cls, model: keras.Model | LayerGroupPlan, filepath: str, groups=None) -> L2SP:
        """Attaches the L2SP saved with `model` in `filepath` to the loaded `model`.

        `keras.models.load_model` restores a model without its penalty; this
        attaches a new `L2SP` and reads the saved anchors, `alpha` and `beta`
        into it (with `model.load_weights(filepath)`, which also sets the
        model's weights to the saved ones).

        Args:
            model: the loaded model, or its `kt.layer_groups` plan.
            filepath: the `.keras` or `.weights.h5` file the model was saved
                to while the `L2SP` was attached.
            groups: the `groups` the saved `L2SP` was created with.

        Returns:
            The attached `L2SP`.

        Example:

        >>> import os, tempfile
        >>> import keras
        >>> import keras_transfer as kt
        >>> model = keras.Sequential([
        ...     keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1),
        ... ])
        >>> _ = kt.L2SP(model, alpha=0.5)
        >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
        >>> model.save(path)
        >>> loaded = keras.models.load_model(path)
        >>> kt.L2SP.load(loaded, path).alpha
        0.5
        """
        return load_penalty(lambda: cls(model, groups=groups), filepath)

    @property
    def alpha(self) -> float:
        """The pull toward the pretrained weights; settable (takes effect
        at the next step, with no retracing)."""
        return self._strength_value("alpha")

    @alpha.setter
    def alpha(self, value: float) -> None:
        self._set_strength("alpha", value, "the pull toward the pretrained weights")

    @property
    def beta(self) -> float:
        """The weight decay of the head; settable like `alpha`."""
        return self._strength_value("beta")

    @beta.setter
    def beta(self, value: float) -> None:
        self._set_strength("beta", value, "the weight decay of the head")

    @property
    def anchored_variables(self) -> list:
        """The pretrained variables pulled toward their starting values."""
        return [v for v in self.penalised_variables if v.path not in self._head_paths]

    @property
    def head_variables(self) -> list:
        """The head's variables, decayed toward zero."""
        return [v for v in self.penalised_variables if v.path in self._head_paths]

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "alpha": self.alpha,
            "beta": self.beta,
            "groups": self.groups,
        }


def _head_indices(plan: LayerGroupPlan, groups) -> set[int]:
    """The indices of the head groups named by `groups` (the last by default)."""
    if groups is None:
        if len(plan) == 1:
            raise ValueError(
                f"The model has one layer group, {plan.names[0]!r}, which L2SP takes as the "
                "new head by default: that leaves no pretrained weights to anchor. Pass "
                "`groups=[]` to anchor it (a model fine-tuned before), or give the model "
                "groups (`kt.layer_groups(model, groups=[...])`)."
            )
        return {len(plan) - 1}
    if isinstance(groups, (str, int)):
        groups = [groups]
    names = [f"{index}: {group.name}" for index, group in enumerate(plan)]
    head = set()
    for key in groups:
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise TypeError(
                "`groups` names the head groups by index or by name, e.g. [-1] or "
                f"['head']; got {key!r}. The model's groups: {names}."
            )
        if isinstance(key, int):
            if not -len(plan) <= key < len(plan):
                raise ValueError(
                    f"Head group index {key} is out of range: the model has {len(plan)} "
                    f"groups, {names}."
                )
            head.add(key % len(plan))
            continue
        matched = {index for index, group in enumerate(plan) if _full_match(key, group.name)}
        if not matched:
            raise ValueError(
                f"The head group name {key!r} matches none of the model's groups, {names}. "
                "Give a group's name or index (`kt.describe_groups(model)` lists them)."
            )
        head |= matched
    if len(head) == len(plan):
        raise ValueError(
            f"`groups={list(groups)!r}` names every group as the head, which leaves no "
            "pretrained weights to anchor: L2SP would be plain weight decay. Name only the "
            "new head, or use `keras.regularizers.L2` for weight decay."
        )
    return head


def _full_match(pattern: str, name: str) -> bool:
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error as error:
        raise ValueError(f"Invalid head group pattern {pattern!r}: {error}.") from None
