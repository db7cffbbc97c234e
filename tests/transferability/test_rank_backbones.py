import keras
import numpy as np
import pytest
from testing_utils import tiny_bert

import keras_transfer as kt


def data(samples=120, seed=0):
    """Labels depend on the first three inputs only; the last three are noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 6)).astype("float32")
    return x, x[:, :3].argmax(axis=1).astype("int32")


def selecting(columns, name):
    """A backbone that outputs the given input columns (a fixed 0/1 projection)."""
    backbone = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(len(columns), use_bias=False)], name=name
    )
    kernel = np.zeros((6, len(columns)), "float32")
    kernel[columns, np.arange(len(columns))] = 1.0
    backbone.layers[0].set_weights([kernel])
    return backbone


def test_ranks_informative_features_first_with_the_scores_of_their_features():
    x, y = data()
    candidates = {"noise": selecting([3, 4, 5], "noise"), "signal": selecting([0, 1, 2], "signal")}
    ranking = kt.rank_backbones(candidates, x, y, verbose=0)
    assert ranking.names == ["signal", "noise"]
    assert ranking.best == "signal"
    for name in ("signal", "noise"):
        assert ranking[name].score == pytest.approx(
            kt.transferability.logme(x[:, [0, 1, 2] if name == "signal" else [3, 4, 5]], y)
        )
        assert ranking[name].seconds > 0
        assert ranking[name].random_score is None
        assert ranking[name].negative_transfer is None


@pytest.mark.parametrize("method", ["h_score", "leep", "nce"])
def test_other_methods_score_the_same_features(method):
    x, y = data()
    softmax = keras.Sequential(
        [selecting([0, 1, 2], "signal"), keras.layers.Lambda(lambda t: keras.ops.softmax(3 * t))]
    )
    ranking = kt.rank_backbones({"signal": softmax}, x, y, method=method, verbose=0)
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(3 * x[:, :3]))
    expected = {
        "h_score": kt.transferability.h_score(probabilities, y),
        "leep": kt.transferability.leep(probabilities, y),
        "nce": kt.transferability.nce(probabilities.argmax(axis=1), y),
    }[method]
    assert ranking["signal"].score == pytest.approx(expected, rel=1e-5)


def test_random_control_warns_about_negative_transfer_only_where_pretraining_hurts():
    x, y = data()
    candidates = {"good": selecting([0, 1, 2], "good"), "bad": selecting([3, 4, 5], "bad")}
    with pytest.warns(UserWarning, match="'bad'.*negative transfer") as caught:
        ranking = kt.rank_backbones(candidates, x, y, control="random", verbose=0)
    assert not any("'good'" in str(warning.message) for warning in caught)
    assert ranking["good"].negative_transfer is False
    assert ranking["bad"].negative_transfer is True
    assert ranking["bad"].random_score > ranking["bad"].score
    # The twins are new models; the candidates keep their weights.
    assert np.array_equal(candidates["bad"].layers[0].get_weights()[0][3:], np.eye(3))
    text = str(ranking)
    assert "random init" in text and "(!)" in text and "negative transfer" in text


def test_feature_maps_are_averaged_and_preprocessors_apply_per_candidate():
    x, y = data()
    images = np.repeat(x[:, None, None, :], 4, axis=1).repeat(3, axis=2)  # (N, 4, 3, 6)
    conv = keras.Sequential(
        [keras.Input((4, 3, 6)), keras.layers.Conv2D(3, 1, use_bias=False)], name="conv"
    )
    conv.layers[0].set_weights([np.eye(6, 3, dtype="float32")[None, None]])
    ranking = kt.rank_backbones(
        {"conv": conv, "flat": selecting([0, 1, 2], "flat")},
        images,
        y,
        preprocessors={"flat": lambda batch: batch[:, 0, 0, :]},
        verbose=0,
    )
    assert ranking["conv"].score == pytest.approx(ranking["flat"].score, abs=1e-6)


@pytest.mark.filterwarnings("ignore:.*negative transfer")
def test_a_preset_folder_of_a_keras_hub_text_backbone(tmp_path):
    bert = tiny_bert()
    bert.save_to_preset(str(tmp_path / "bert"))
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 13, size=40)
    x = {
        "token_ids": rng.integers(1, 50, size=(40, 12)).astype("int32"),
        "padding_mask": (np.arange(12) < lengths[:, None]).astype("int32"),
        "segment_ids": np.zeros((40, 12), "int32"),
    }
    y = np.arange(40) % 2
    ranking = kt.rank_backbones({"bert": str(tmp_path / "bert")}, x, y, control="random", verbose=0)
    sequence = keras.ops.convert_to_numpy(bert.predict(x, verbose=0)["sequence_output"])
    mask = x["padding_mask"][:, :, None]
    token_means = (sequence * mask).sum(axis=1) / mask.sum(axis=1)
    assert ranking["bert"].score == pytest.approx(
        kt.transferability.logme(token_means, y), abs=1e-5
    )
    assert ranking["bert"].random_score is not None


def test_a_dict_without_pooled_output_is_refused_with_the_fix():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, {"sequence_output": keras.layers.Dense(2)(inputs)})
    x, y = data()
    with pytest.raises(ValueError, match="Candidate 'dict': .* without a pooled output"):
        kt.rank_backbones({"dict": model}, x, y, verbose=0)


def test_a_dataset_is_read_once_per_candidate_in_the_same_order():
    import tensorflow as tf

    x, y = data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    ranking = kt.rank_backbones({"signal": selecting([0, 1, 2], "s")}, dataset, verbose=0)
    assert ranking["signal"].score == pytest.approx(kt.transferability.logme(x[:, :3], y))
    reshuffled = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(120, seed=1).batch(32)
    with pytest.raises(ValueError, match="different order"):
        kt.rank_backbones(
            {"a": selecting([0, 1, 2], "a"), "b": selecting([0, 1], "b")}, reshuffled, verbose=0
        )


def test_progress_bar_names_each_candidate(capsys):
    x, y = data()
    kt.rank_backbones({"signal": selecting([0, 1, 2], "s")}, x, y, batch_size=50, verbose=1)
    output = capsys.readouterr().out
    assert "signal:" in output and "3/3" in output


def test_bad_arguments_say_what_to_do():
    x, y = data()
    good = {"a": selecting([0, 1, 2], "a")}
    with pytest.raises(TypeError, match="non-empty dict"):
        kt.rank_backbones({}, x, y)
    with pytest.raises(ValueError, match="`method` must be one of"):
        kt.rank_backbones(good, x, y, method="accuracy")
    with pytest.raises(ValueError, match="`control`"):
        kt.rank_backbones(good, x, y, control="scratch")
    with pytest.raises(ValueError, match="`y`.*missing"):
        kt.rank_backbones(good, x)
    with pytest.raises(ValueError, match="120 examples but `y` has 100"):
        kt.rank_backbones(good, x, y[:100])
    with pytest.raises(ValueError, match="not candidates"):
        kt.rank_backbones(good, x, y, preprocessors={"b": lambda t: t})
    with pytest.raises(TypeError, match="Keras model or a name"):
        kt.rank_backbones({"a": 3}, x, y)
    with pytest.raises(ValueError, match="Scoring candidate 'a'.*one class only"):
        kt.rank_backbones(good, x, np.zeros_like(y), verbose=0)


def test_the_table_prints_rows_best_first():
    x, y = data()
    ranking = kt.rank_backbones(
        {"noise": selecting([3, 4, 5], "n"), "signal": selecting([0, 1, 2], "s")}, x, y, verbose=0
    )
    lines = str(ranking).splitlines()
    assert lines[0].startswith("Backbones ranked by logme")
    assert lines[2].startswith("1") and "signal" in lines[2]
    assert lines[3].startswith("2") and "noise" in lines[3]
    assert repr(ranking).startswith("BackboneRanking(method='logme', best first: signal=")
    assert [row["rank"] for row in ranking.to_rows()] == [1, 2]
