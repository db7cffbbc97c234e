"""`keras-transfer rank`: the ranking from the command line, on tiny local presets."""

import json
import os

import numpy as np
import pytest
from testing_utils import tiny_bert

from keras_transfer.cli import main

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "great", "bad", "awful", "film"]


@pytest.fixture
def text_presets(tmp_path):
    """Two tiny BERTs with their tokenizer, saved as local KerasHub preset folders."""
    import keras_hub

    folders = []
    for name in ("one", "two"):
        folder = str(tmp_path / name)
        tiny_bert(num_layers=1, vocabulary_size=len(WORDS)).save_to_preset(folder)
        keras_hub.models.BertTokenizer(vocabulary=WORDS).save_to_preset(folder)
        folders.append(folder)
    return folders


@pytest.fixture
def reviews_csv(tmp_path):
    path = tmp_path / "reviews.csv"
    rows = ["good film,pos", "great,pos", "bad film,neg", "awful,neg"] * 4
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return str(path)


@pytest.mark.filterwarnings("ignore:.*negative transfer")
def test_ranks_text_backbones_prints_the_table_and_writes_json_and_chart(
    capsys, text_presets, reviews_csv, tmp_path
):
    output = tmp_path / "out"
    argv = ["rank", "--data", reviews_csv, "--backbones", ",".join(text_presets)]
    argv += ["--sequence-length", "8", "--control", "random", "--output", str(output)]
    argv += ["--verbose", "0"]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "16 text examples in 2 classes" in out
    assert "Backbones ranked by logme" in out and "random init" in out
    assert sorted(os.listdir(output)) == ["ranking.json", "ranking.png"]
    saved = json.loads((output / "ranking.json").read_text())
    assert saved["method"] == "logme"
    assert sorted(row["name"] for row in saved["rows"]) == sorted(text_presets)
    scores = [row["score"] for row in saved["rows"]]
    assert scores == sorted(scores, reverse=True) and np.all(np.isfinite(scores))


def test_ranks_image_backbones_from_a_folder(capsys, tmp_path):
    import keras_hub
    import tensorflow as tf

    preset = str(tmp_path / "resnet")
    keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64],
        stackwise_num_blocks=[1],
        stackwise_num_strides=[1],
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=(None, None, 3),
    ).save_to_preset(preset)
    rng = np.random.default_rng(0)
    for name in ("circle", "square"):
        (tmp_path / "shapes" / name).mkdir(parents=True)
        for index in range(4):
            pixels = rng.integers(0, 256, (9, 7, 3), "uint8")
            (tmp_path / "shapes" / name / f"{index}.png").write_bytes(
                tf.io.encode_png(pixels).numpy()
            )
    argv = ["rank", "--data", str(tmp_path / "shapes"), "--backbones", preset]
    argv += ["--image-size", "16", "--method", "h_score", "--output", str(tmp_path / "out")]
    assert main(argv + ["--verbose", "0"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "8 image examples in 2 classes" in out and "ranked by h_score" in out


@pytest.mark.parametrize(
    "argv, status, words",
    [
        (["rank", "--data", "x.csv", "--backbones", " , "], 2, "at least one name"),
        (["rank", "--data", "missing.csv", "--backbones", "a"], 1, "does not exist"),
        (["rank", "--data", "x.csv", "--backbones", "a", "--method", "leep"], 2, "invalid choice"),
    ],
)
def test_bad_input_gives_one_line_and_a_non_zero_status(capsys, argv, status, words):
    assert main(argv) == status
    err = capsys.readouterr().err
    assert err.startswith("keras-transfer: error:") and words in err
    assert len(err.strip().splitlines()) == 1
