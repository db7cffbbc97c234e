import numpy as np
import pytest

import keras_transfer as kt


def labelled(per_class=(20, 20, 20, 20)):
    """x holds each example's own index, so rows can be traced back."""
    y = np.concatenate([np.full(count, c) for c, count in enumerate(per_class)])
    return np.arange(len(y))[:, None], y


def test_each_episode_has_shots_and_queries_per_class_disjoint_and_true_to_the_labels():
    x, y = labelled()
    episodes = kt.few_shot_episodes(x, y, shots=3, queries=5, episodes=6, seed=0)
    assert len(episodes) == 6
    for episode in episodes:
        assert np.bincount(episode.y_support).tolist() == [3, 3, 3, 3]
        assert np.bincount(episode.y_query).tolist() == [5, 5, 5, 5]
        support_rows, query_rows = episode.x_support[:, 0], episode.x_query[:, 0]
        assert not set(support_rows) & set(query_rows)
        assert len(set(support_rows)) == 12
        np.testing.assert_array_equal(y[support_rows], episode.classes[episode.y_support])
        np.testing.assert_array_equal(y[query_rows], episode.classes[episode.y_query])


def test_episodes_are_reproducible_and_differ_from_each_other():
    x, y = labelled()
    first = list(kt.few_shot_episodes(x, y, shots=1, queries=2, episodes=3, seed=5))
    again = kt.few_shot_episodes(x, y, shots=1, queries=2, episodes=3, seed=5)
    for index, episode in enumerate(first):
        np.testing.assert_array_equal(episode.x_support, again[index].x_support)
    assert not np.array_equal(first[0].x_support, first[1].x_support)
    other = kt.few_shot_episodes(x, y, shots=1, queries=2, episodes=3, seed=6)[0]
    assert not np.array_equal(first[0].x_support, other.x_support)


def test_ways_picks_a_subset_of_classes_renumbered_from_zero():
    x, y = labelled()
    seen = set()
    for episode in kt.few_shot_episodes(x, y, shots=2, queries=1, episodes=10, ways=2):
        assert len(episode.classes) == 2
        assert set(episode.y_support.tolist()) == {0, 1}
        seen.update(episode.classes.tolist())
    assert len(seen) > 2


def test_dict_inputs_are_indexed_alike():
    x, y = labelled()
    inputs = {"ids": x, "mask": x * 10}
    episode = kt.few_shot_episodes(inputs, y, shots=2, queries=2, episodes=1)[0]
    np.testing.assert_array_equal(episode.x_support["mask"], episode.x_support["ids"] * 10)


def test_bad_settings_say_what_to_do():
    x, y = labelled(per_class=(20, 4, 20))
    with pytest.raises(ValueError, match=r"Classes \[1\] have fewer than.*at most 1 with 3 shots"):
        kt.few_shot_episodes(x, y, shots=3, queries=5)
    with pytest.raises(ValueError, match=r"Lower `shots` \(at most 3\)"):
        kt.few_shot_episodes(x, y, shots=4, queries=5)
    with pytest.raises(ValueError, match="`ways=4` but `y` holds only 3 classes"):
        kt.few_shot_episodes(x, y, shots=1, queries=1, ways=4)
    with pytest.raises(ValueError, match="shots"):
        kt.few_shot_episodes(x, y, shots=0, queries=1)
    with pytest.raises(TypeError, match="integer class ids"):
        kt.few_shot_episodes(x, y.astype("float32"), shots=1, queries=1)
    with pytest.raises(ValueError, match="44 labels"):
        kt.few_shot_episodes(x[:-1], y, shots=1, queries=1)
    with pytest.raises(IndexError, match="out of range"):
        kt.few_shot_episodes(x, y, shots=1, queries=1, episodes=2)[2]
