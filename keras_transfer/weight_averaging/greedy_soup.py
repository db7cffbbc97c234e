"""`kt.greedy_soup`: the greedy model soup of Wortsman et al. (ICML 2022)."""

from __future__ import annotations

import dataclasses

import keras

from keras_transfer._checks import check_integer
from keras_transfer.weight_averaging._batch_norm_recalibration import recalibrate_batch_norm
from keras_transfer.weight_averaging._model_copy import fresh_copy
from keras_transfer.weight_averaging._soup_scoring import Scorer
from keras_transfer.weight_averaging._weight_arithmetic import average
from keras_transfer.weight_averaging._weight_matching import (
    check_matching,
    check_models,
    float_flags,
    model_list,
)


@dataclasses.dataclass(frozen=True)
class GreedySoupInfo:
    """What `kt.greedy_soup` tried and kept; the soup carries it as `soup.greedy_soup_info`.

    Indices refer to the `models` list as given. The attribute lives on the
    Python object only: saving and loading the soup does not keep it.

    Attributes:
        metric: the name of the validation metric.
        mode: `"max"` or `"min"`: which way the metric improves.
        scores: each model's own validation score, in the order given.
        order: the model indices in the order tried, best score first.
        tried_scores: the score of the soup as each model of `order` was
            tried (the first entry is the best model's own score).
        kept: the indices of the models in the soup, in the order added.
        score: the soup's validation score.
    """

    metric: str
    mode: str
    scores: tuple[float, ...]
    order: tuple[int, ...]
    tried_scores: tuple[float, ...]
    kept: tuple[int, ...]
    score: float


def greedy_soup(
    models,
    validation_data,
    metric="accuracy",
    recalibrate_data=None,
    *,
    mode: str = "auto",
    batch_size: int = 32,
) -> keras.Model:
    """A new model averaging the models that help on validation data (a greedy soup).

    The greedy soup of Wortsman et al. ("Model soups", ICML 2022, Algorithm
    1): score each model on held-out validation data, sort them best first,
    start the soup with the best, then try each next model in turn and keep
    it only if the uniform average of the kept models and it scores at least
    as well as the soup without it (the paper's `>=`; the authors' released
    code keeps a model only on a strict gain). The soup therefore never
    scores below the best single model on `validation_data`, and a model that
    would hurt the average is left out. Use validation data that the models
    were not trained on, and judge the soup on other data still.

    Scoring runs here, batch by batch, not through `model.evaluate`, so the
    models need not be compiled: `metric` is a metric name or object as
    `compile(metrics=...)` takes it (`"accuracy"` picks binary, sparse
    categorical or categorical accuracy from the shapes of the labels and
    the predictions, as `compile` does; binary accuracy thresholds outputs
    at 0.5, so it needs probabilities), a function `(y_true, y_pred) ->
    per-example values`, or `"loss"` for the first model's compiled loss
    (the batch means averaged over the examples). Whether higher is better is
    read from the metric (`mode="auto"`; a loss or an error is minimised);
    for a metric of your own pass `mode="max"` or `"min"`. A
    `keras.metrics.Metric` object given is reset before each score.

    The models must match weight for weight (see `kt.average_weights`). The
    soup is rebuilt from the best model's config, takes its frozen layers
    and non-float weights, and is not compiled. With `recalibrate_data`, each
    candidate soup of two or more models has its BatchNormalization
    statistics re-estimated before it is scored (see `kt.average_weights`
    for how); a soup of the best model alone keeps that model's own.

    What was tried and kept is on the soup: `soup.greedy_soup_info`, a
    `GreedySoupInfo` (`kept`, `scores`, `score`, ...; the class lives in
    `keras_transfer.weight_averaging.greedy_soup`).

    Args:
        models: a list of two or more built models, fine-tuned from one
            starting point.
        validation_data: `(inputs, labels)` arrays, or a `tf.data.Dataset`
            of `(inputs, labels)` batches.
        metric: what to score with. Defaults to `"accuracy"`.
        recalibrate_data: optional inputs for re-estimating BatchNormalization
            statistics of each candidate soup (arrays, an `(inputs, labels)`
            tuple, or a dataset). Defaults to `None`.
        mode: `"auto"` (default), `"max"` or `"min"`: which way `metric`
            improves.
        batch_size: rows per batch for arrays. Defaults to 32.

    Returns:
        A new, uncompiled `keras.Model` carrying `greedy_soup_info`.

    Example:

    >>> import keras, numpy as np
    >>> import keras_transfer as kt
    >>> x = np.eye(2, dtype="float32")
    >>> y = np.array([0, 1])
    >>> def classifier(kernel):
    ...     model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    ...     model.set_weights([np.array(kernel, "float32"), np.zeros(2, "float32")])
    ...     return model
    >>> good, also_good = classifier([[2, 0], [0, 2]]), classifier([[1, 0], [0, 1]])
    >>> bad = classifier([[-9, 0], [0, -9]])
    >>> soup = kt.greedy_soup([bad, good, also_good], (x, y))
    >>> soup.greedy_soup_info.kept
    (1, 2)
    """
    models = model_list(models, "kt.greedy_soup")
    check_integer(batch_size, "batch_size", "rows per batch", low=1)
    names = [f"models[{index}]" for index in range(len(models))]
    check_models(models, names)
    check_matching(models, names)
    scorer = Scorer(metric, mode, validation_data, batch_size, loss_model=models[0])
    scores = [scorer(model) for model in models]
    order = sorted(range(len(models)), key=lambda index: scorer.sort_key(scores[index]))
    all_values = [model.get_weights() for model in models]
    soup = fresh_copy(models[order[0]], names[order[0]], all_values[order[0]])
    floats = float_flags(soup)
    kept, best_score, best_values = [order[0]], scores[order[0]], all_values[order[0]]
    tried_scores = [best_score]
    for index in order[1:]:
        soup.set_weights(average([all_values[i] for i in [*kept, index]], floats))
        if recalibrate_data is not None:
            recalibrate_batch_norm(soup, recalibrate_data, batch_size)
        score = scorer(soup)
        tried_scores.append(score)
        if scorer.better_or_equal(score, best_score):
            kept, best_score, best_values = [*kept, index], score, soup.get_weights()
    soup.set_weights(best_values)
    soup.greedy_soup_info = GreedySoupInfo(
        metric=scorer.name,
        mode=scorer.mode,
        scores=tuple(scores),
        order=tuple(order),
        tried_scores=tuple(tried_scores),
        kept=tuple(kept),
        score=best_score,
    )
    return soup
