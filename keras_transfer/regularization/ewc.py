"""`EWC`: elastic weight consolidation (Kirkpatrick et al., 2017)."""

from __future__ import annotations

import keras
import numpy as np

from keras_transfer._checks import check_number
from keras_transfer.groups.layer_variables import trainable_capable_weights
from keras_transfer.regularization._anchored_penalty import (
    AnchoredPenalty,
    load_penalty,
    require_trainable,
    to_numpy,
)
from keras_transfer.regularization.fisher_information import empirical_fisher

# `EWC.load`'s data: zero importances, soon overwritten by the saved ones.
_FROM_FILE = object()


@keras.saving.register_keras_serializable(package="keras_transfer")
class EWC(AnchoredPenalty):
    """Protects what a model learnt on one task while it trains on the next.

    Elastic weight consolidation (Kirkpatrick et al., PNAS 2017) measures how
    much each weight matters to the old task, with the diagonal Fisher
    information `F` of the current weights `w*` on that task's labelled
    data (see `kt.fisher_information`), then penalises moving each weight in
    proportion: the loss gains `strength / 2 * sum F * (w - w*)^2`. Weights
    the old task hardly uses stay free to learn the new one; those it relies
    on stay near their values.

    `F` is the mean over examples of the squared gradient of the example's
    log-likelihood (minus its compiled loss), per example, so a `strength`
    of 1 weighs the predicted rise of the old task's mean loss (to second
    order) like the new task's mean loss. The right `strength` follows the
    scale of `F`: 1 to a few hundred suits small models, but on MiniLM-L6
    (22.7 M weights, most token embeddings unused by any one sample) the mean
    `F` measured 5e-6 to 3e-5 and it took 1e4 or more to hold the old task.
    Compare the logged `ewc_loss` with `loss`: a penalty that is a vanishing
    share of the loss holds nothing. `F` is measured on every weight that
    could train, frozen ones included, so unfreezing later keeps the
    protection.

    Creating it measures `F` (with a progress bar) and attaches the penalty,
    as `kt.L2SP` does: each variable's term is its Keras `regularizer`, in
    `model.losses` and in every train and test step's loss on every backend;
    frozen variables carry no term while frozen; the logs gain `ewc_loss`
    (the epoch's mean penalty, already in `loss`; on JAX it reads 0 in the
    progress bar until the epoch ends). The anchors `w*`, the Fisher terms
    and the strength are non-trainable variables of the model, saved with
    its weights; `EWC.load(model, path)` attaches the saved penalty to a
    model from `keras.models.load_model`. `remove()` detaches it.

    Args:
        model: the built Keras model, trained on the old task.
        data: labelled examples of the old task: a tuple `(x, y)` of arrays,
            or a `tf.data.Dataset` of `(x, y)` batches; or a Fisher
            information already measured, `{variable.path: array}` as
            `kt.fisher_information` returns (variables it leaves out get no
            penalty).
        strength: how strongly the old task's weights are held, >= 0.
            Defaults to 1.0.
        samples: at most this many examples measure `F`. Defaults to all.
        loss: the loss whose negative is the log-likelihood (see
            `kt.fisher_information`). Defaults to the compiled loss.
        batch_size: examples per vectorised batch when measuring `F`.
            Defaults to 32.
        verbose: 1 (default) shows a progress bar; 0 is silent.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([
    ...     keras.Input((4,)), keras.layers.Dense(3, activation="softmax", name="head"),
    ... ], name="classifier")
    >>> model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    >>> old_task = (np.ones((16, 4)), np.arange(16) % 3)
    >>> ewc = kt.EWC(model, old_task, strength=10.0, verbose=0)
    >>> sorted(ewc.fisher)
    ['classifier/head/bias', 'classifier/head/kernel']
    >>> new_task = (np.zeros((16, 4)), np.zeros(16))
    >>> history = model.fit(*new_task, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['ewc_loss', 'loss']
    """

    attribute = "keras_transfer_ewc"
    log_name = "ewc_loss"

    def __init__(
        self,
        model: keras.Model,
        data,
        strength: float = 1.0,
        samples: int | None = None,
        *,
        loss=None,
        batch_size: int = 32,
        verbose: int = 1,
        **kwargs,
    ):
        strength = check_number(strength, "strength", "how strongly the old task is held", low=0)
        require_trainable(model, "EWC", "EWC would protect nothing")
        type(self)._check_free(model)
        variables = trainable_capable_weights(model)
        if data is _FROM_FILE:
            importances = [np.zeros(v.shape, v.dtype) for v in variables]
        elif isinstance(data, dict):
            importances = _given_fisher(data, variables)
        else:
            importances = empirical_fisher(
                model, variables, data, samples, loss, batch_size, verbose
            )
        super().__init__(**kwargs)
        self.samples = samples
        strength_variable = self._strength("strength", strength)
        for variable, importance in zip(variables, importances):
            self._add_term(variable, strength_variable, anchor=True, importance=importance)
        self._attach(model)

    @classmethod
    def load(cls, model: keras.Model, filepath: str) -> EWC:
        """Attaches the EWC saved with `model` in `filepath` to the loaded `model`.

        `keras.models.load_model` restores a model without its penalty; this
        attaches a new `EWC` and reads the saved anchors, Fisher terms and
        strength into it (with `model.load_weights(filepath)`, which also
        sets the model's weights to the saved ones). Nothing is measured
        again.

        Args:
            model: the loaded model.
            filepath: the `.keras` or `.weights.h5` file the model was saved
                to while the `EWC` was attached.

        Returns:
            The attached `EWC`.

        Example:

        >>> import os, tempfile
        >>> import numpy as np
        >>> import keras
        >>> import keras_transfer as kt
        >>> model = keras.Sequential([
        ...     keras.Input((4,)), keras.layers.Dense(3, activation="softmax"),
        ... ])
        >>> model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        >>> _ = kt.EWC(model, (np.ones((8, 4)), np.arange(8) % 3), strength=5.0, verbose=0)
        >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
        >>> model.save(path)
        >>> kt.EWC.load(keras.models.load_model(path), path).strength
        5.0
        """
        return load_penalty(lambda: cls(model, _FROM_FILE), filepath)

    @property
    def strength(self) -> float:
        """How strongly the old task is held; settable (takes effect at the
        next step, with no retracing)."""
        return self._strength_value("strength")

    @strength.setter
    def strength(self, value: float) -> None:
        self._set_strength("strength", value, "how strongly the old task is held")

    @property
    def fisher(self) -> dict[str, np.ndarray]:
        """The Fisher information the penalty weighs by, `{variable.path: array}`."""
        return {term.target.path: to_numpy(term.importance) for term in self._terms}

    def get_config(self) -> dict:
        return {"name": self.name, "strength": self.strength, "samples": self.samples}


def _given_fisher(fisher: dict, variables: list) -> list:
    """The importances of `variables` from a `{path: array}` dict (zeros for
    variables it leaves out), checked against them."""
    if not fisher:
        raise ValueError(
            "`data` is an empty Fisher information dict: there is nothing to weigh the "
            "penalty by. Pass labelled examples of the old task, or the dict "
            "`kt.fisher_information(model, data)` returns."
        )
    by_path = {variable.path: variable for variable in variables}
    unknown = [path for path in fisher if path not in by_path]
    if unknown:
        raise ValueError(
            f"The Fisher information names variables the model cannot train: {unknown[:3]}. "
            f"Its keys must be variable paths of this model, e.g. {list(by_path)[:3]}."
        )
    importances = []
    for variable in variables:
        if variable.path not in fisher:
            importances.append(np.zeros(variable.shape, variable.dtype))
            continue
        array = np.asarray(fisher[variable.path], dtype=variable.dtype)
        if array.shape != tuple(variable.shape):
            raise ValueError(
                f"The Fisher information of '{variable.path}' has shape {array.shape}, but "
                f"the variable has shape {tuple(variable.shape)}."
            )
        if not np.all(np.isfinite(array)) or np.any(array < 0):
            raise ValueError(
                f"The Fisher information of '{variable.path}' must be finite and >= 0 (a "
                "mean of squared gradients); it holds negative or non-finite values."
            )
        importances.append(array)
    return importances
