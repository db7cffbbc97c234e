"""`kt.few_shot_episodes`: repeated random few-shot tasks drawn from a labelled
set, for a mean and spread instead of one lucky draw."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import keras
import numpy as np

from keras_transfer._checks import check_integer
from keras_transfer.transferability._validation import check_labels


class FewShotEpisode(NamedTuple):
    """One few-shot task: `shots` support and `queries` query examples per class.

    Labels are renumbered `0..ways-1` in the order of `classes`, the original
    class ids; support and query examples are disjoint and each set is
    shuffled.
    """

    x_support: object
    y_support: np.ndarray
    x_query: object
    y_query: np.ndarray
    classes: np.ndarray


class FewShotEpisodes(Sequence):
    """The episodes `kt.few_shot_episodes` returns: a reproducible sequence.

    Each episode is drawn from its own seed (`seed`, index), so
    `episodes[3]` is the same task whether it is drawn alone or in a loop,
    and iterating twice gives the same tasks.
    """

    def __init__(self, x, labels, shots, queries, count, seed, ways):
        self._x = x
        self._labels = labels
        self._classes = np.unique(labels)
        self._members = {c: np.flatnonzero(labels == c) for c in self._classes}
        self.shots, self.queries, self.ways, self.seed = shots, queries, ways, seed
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._count))]
        if not -self._count <= index < self._count:
            raise IndexError(f"Episode {index} out of range: there are {self._count}.")
        rng = np.random.default_rng([self.seed, index % self._count])
        classes = np.sort(rng.choice(self._classes, size=self.ways, replace=False))
        support, query = [], []
        for position, label in enumerate(classes):
            chosen = rng.choice(self._members[label], size=self.shots + self.queries, replace=False)
            support.append((chosen[: self.shots], position))
            query.append((chosen[self.shots :], position))
        x_support, y_support = self._take(support, rng)
        x_query, y_query = self._take(query, rng)
        return FewShotEpisode(x_support, y_support, x_query, y_query, classes)

    def _take(self, parts, rng):
        indices = np.concatenate([members for members, _ in parts])
        labels = np.concatenate([np.full(len(members), label) for members, label in parts])
        order = rng.permutation(len(indices))
        rows = indices[order]
        x = keras.tree.map_structure(lambda array: np.asarray(array)[rows], self._x)
        return x, labels[order].astype("int32")

    def __repr__(self) -> str:
        return (
            f"FewShotEpisodes({self._count} episodes, {self.ways}-way {self.shots}-shot, "
            f"{self.queries} queries per class, seed={self.seed})"
        )


def few_shot_episodes(
    x,
    y,
    shots: int,
    queries: int = 15,
    episodes: int = 10,
    seed: int = 0,
    *,
    ways: int | None = None,
) -> FewShotEpisodes:
    """Draws few-shot tasks from a labelled set, for honest mean ± std accuracy.

    A few-shot result from one draw of the support examples says more about
    that draw than about the method: with 1 to 5 examples per class the
    accuracy varies by several points from draw to draw. Evaluate on many
    episodes and report the mean and the standard deviation (or a 95%
    interval, `1.96 * std / sqrt(episodes)`).

    Each episode picks `ways` classes (all by default), then for each class
    `shots + queries` different examples at random: the first `shots` are
    the support set (to build or train the classifier), the other `queries`
    the query set (to measure it). Support and query never share an
    example; different episodes may. Labels in an episode are renumbered
    `0..ways-1` (`episode.classes` holds the original ids).

    Args:
        x: the examples: an array, or a dict of arrays (e.g. tokenised text).
        y: `(examples,)` integer class labels.
        shots: support examples per class (1 for one-shot learning).
        queries: query examples per class. Defaults to `15`.
        episodes: how many tasks to draw. Defaults to `10`.
        seed: the random seed; the same seed gives the same episodes.
            Defaults to `0`.
        ways: classes per episode (`None`, default: every class).

    Returns:
        A sequence (`len`, indexing, iteration) of `FewShotEpisode` named
        tuples `(x_support, y_support, x_query, y_query, classes)`, drawn on
        access.

    Example:

    >>> import numpy as np
    >>> import keras_transfer as kt
    >>> x = np.arange(60, dtype="float32")[:, None]
    >>> y = np.arange(60) % 3
    >>> episodes = kt.few_shot_episodes(x, y, shots=2, queries=5, episodes=4, seed=1)
    >>> episode = episodes[0]
    >>> episode.x_support.shape, episode.x_query.shape, np.bincount(episode.y_support).tolist()
    ((6, 1), (15, 1), [2, 2, 2])
    >>> accuracies = [0.8, 0.7, 0.9, 0.8]  # One per episode, from your classifier.
    >>> f"{np.mean(accuracies):.2f} ± {np.std(accuracies):.2f}"
    '0.80 ± 0.07'
    """
    labels = check_labels(y, "y")
    leaves = keras.tree.flatten(x)
    if not leaves or any(len(leaf) != len(labels) for leaf in leaves):
        raise ValueError(
            f"`x` must hold one example per label: `y` has {len(labels)} labels but `x` has "
            f"{[len(leaf) for leaf in leaves]} rows."
        )
    shots = check_integer(shots, "shots", "support examples per class", low=1)
    queries = check_integer(queries, "queries", "query examples per class", low=1)
    episodes = check_integer(episodes, "episodes", low=1)
    seed = check_integer(seed, "seed", low=0)
    classes, counts = np.unique(labels, return_counts=True)
    if ways is None:
        ways = len(classes)
    ways = check_integer(ways, "ways", "classes per episode", low=2)
    if ways > len(classes):
        raise ValueError(f"`ways={ways}` but `y` holds only {len(classes)} classes.")
    short = classes[counts < shots + queries].tolist()
    if short:
        smallest = int(counts.min())
        fix = (
            f"Lower `queries` (at most {smallest - shots} with {shots} shots)"
            if smallest > shots
            else f"Lower `shots` (at most {smallest - 1})"
        )
        raise ValueError(
            f"Classes {short} have fewer than shots + queries = {shots + queries} examples "
            f"(smallest: {smallest}). {fix}, or leave those classes out."
        )
    return FewShotEpisodes(x, labels, shots, queries, episodes, seed, ways)
