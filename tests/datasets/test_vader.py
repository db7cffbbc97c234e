import io
import re
import shutil
import subprocess
import tarfile

import numpy as np
import pytest

import keras_transfer as kt
from keras_transfer.datasets import load_vader, vader

# Sentences kept (rating != 0), positive, negative.
COUNTS = {
    "movies": (10568, 5242, 5326),
    "amazon": (3610, 2128, 1482),
    "nyt": (4946, 2204, 2742),
    "tweets": (4196, 2897, 1299),
}


@pytest.fixture(scope="module")
def cached_folder():
    """The default cache folder with the ratings in it (pip downloads them once)."""
    try:
        load_vader("tweets")
    except RuntimeError as error:
        pytest.skip(f"the VADER ratings are not cached and pip could not download them: {error}")
    return kt.cache_dir("datasets", "vader")


@pytest.fixture(scope="module")
def splits(cached_folder):
    return {domain: load_vader(domain) for domain in vader.VADER_DOMAINS}


@pytest.fixture
def no_pip(monkeypatch):
    """Fails the test if the loader tries to run pip."""

    def run(*args, **kwargs):
        raise AssertionError(f"pip should not run: {args}")

    monkeypatch.setattr(subprocess, "run", run)


def test_counts_dtypes_and_labels(splits):
    assert list(splits) == list(COUNTS)
    for domain, ((x_train, y_train), (x_test, y_test)) in splits.items():
        total, positive, negative = COUNTS[domain]
        assert len(x_train) + len(x_test) == total, domain
        labels = np.concatenate([y_train, y_test])
        assert labels.dtype == np.int32
        np.testing.assert_array_equal(np.bincount(labels), [negative, positive], err_msg=domain)
        assert x_train.dtype == x_test.dtype == object
        assert x_train.shape == y_train.shape and x_test.shape == y_test.shape
        for texts in (x_train, x_test):
            assert all(type(text) is str and text and text == text.strip() for text in texts)


def test_split_is_stratified_80_20(splits):
    for domain, ((_, y_train), (_, y_test)) in splits.items():
        _, positive, negative = COUNTS[domain]
        expected = [round(negative * 0.2), round(positive * 0.2)]
        np.testing.assert_array_equal(np.bincount(y_test), expected, err_msg=domain)
        assert len(np.unique(y_train[:50])) == 2  # shuffled, not sorted by label


def test_known_sentences_get_the_sign_of_their_rating(splits):
    def label_of(domain, start):
        (x_train, y_train), (x_test, y_test) = splits[domain]
        texts, labels = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
        (matches,) = np.flatnonzero([text.startswith(start) for text in texts])
        return labels[matches]

    # The first sentence of Pang & Lee's rt-polarity.pos, rated +2.27.
    assert label_of("movies", "The Rock is destined to be the 21st Century's new ''Conan''") == 1
    assert label_of("movies", "Effective but too tepid biopic") == 0  # -0.6
    assert label_of("amazon", "it did lock up on me a couple of times") == 0  # -2.75
    assert label_of("nyt", "It's mainly a holiday celebration") == 1  # +1.5
    assert label_of("tweets", "Yay. Another good phone interview.") == 1  # +1.44


def test_split_is_deterministic(splits):
    (x_train, y_train), (x_test, y_test) = splits["amazon"]
    (x_train_2, y_train_2), (x_test_2, y_test_2) = load_vader("amazon")
    np.testing.assert_array_equal(x_train, x_train_2)
    np.testing.assert_array_equal(y_train, y_train_2)
    np.testing.assert_array_equal(x_test, x_test_2)
    np.testing.assert_array_equal(y_test, y_test_2)


def test_seed_and_test_fraction_change_the_split(splits):
    (x_train, _), _ = splits["tweets"]
    (x_reseeded, _), _ = load_vader("tweets", seed=1)
    assert not np.array_equal(x_train, x_reseeded)
    (x_half, _), (x_test, _) = load_vader("tweets", test_fraction=0.5, seed=1)
    assert abs(len(x_half) - len(x_test)) <= 1


def test_bad_domain_lists_the_four(tmp_path, no_pip):
    # Checked before any file is read or fetched.
    for domain in ["twitter", "Movies", "", None, ["nyt"]]:
        with pytest.raises(ValueError, match="'movies', 'amazon', 'nyt', 'tweets'"):
            load_vader(domain, cache_dir=tmp_path)


def test_rejects_bad_split_arguments(tmp_path, no_pip):
    for test_fraction in [0, 1, -0.1, "0.2", True]:
        with pytest.raises(ValueError, match="test_fraction"):
            load_vader("nyt", test_fraction=test_fraction, cache_dir=tmp_path)
    for seed in [-1, 1.5, None]:
        with pytest.raises(ValueError, match="seed"):
            load_vader("nyt", seed=seed, cache_dir=tmp_path)


def test_failed_download_gives_the_command_to_run_by_hand(tmp_path, monkeypatch):
    def run(command, **kwargs):
        pip_args = ["download", "--no-deps", "--no-binary", ":all:", "vaderSentiment==3.3.2"]
        assert command[1:-1] == ["-m", "pip", *pip_args, "-d"]
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(subprocess, "run", run)
    by_hand = f"pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d {tmp_path}/vader"
    with pytest.raises(RuntimeError, match=re.escape(by_hand)) as raised:
        load_vader("movies", cache_dir=tmp_path)
    assert "No matching distribution" in str(raised.value)
    assert not list((tmp_path / "vader").iterdir())  # nothing half-done left behind


def test_pip_timeout_is_reported_the_same_way(tmp_path, monkeypatch):
    def run(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(RuntimeError, match="timed out.*\n.*Run this by hand"):
        load_vader("movies", cache_dir=tmp_path)


def _fake_sdist(folder, archive_bytes, name="vaderSentiment-3.3.2.tar.gz"):
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / name, "w:gz") as sdist:
        member = tarfile.TarInfo(
            "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
        )
        member.size = len(archive_bytes)
        sdist.addfile(member, io.BytesIO(archive_bytes))


def test_extracts_from_a_cached_archive(cached_folder, tmp_path, no_pip):
    (tmp_path / "vader").mkdir()
    shutil.copy(cached_folder / "hutto_ICWSM_2014.tar.gz", tmp_path / "vader")
    (_, y_train), (_, y_test) = load_vader("tweets", cache_dir=tmp_path)
    assert len(y_train) + len(y_test) == COUNTS["tweets"][0]
    assert sorted(path.name for path in (tmp_path / "vader").iterdir()) == [
        "amazonReviewSnippets_GroundTruth.txt",
        "hutto_ICWSM_2014.tar.gz",
        "movieReviewSnippets_GroundTruth.txt",
        "nytEditorialSnippets_GroundTruth.txt",
        "tweets_GroundTruth.txt",
    ]


def test_uses_a_source_distribution_put_there_by_hand(cached_folder, tmp_path, no_pip):
    archive = (cached_folder / "hutto_ICWSM_2014.tar.gz").read_bytes()
    _fake_sdist(tmp_path / "vader", archive, name="vadersentiment-3.3.2.tar.gz")
    # A damaged cached archive is replaced from the source distribution.
    (tmp_path / "vader" / "hutto_ICWSM_2014.tar.gz").write_bytes(archive[:1000])
    (_, y_train), (_, y_test) = load_vader("nyt", cache_dir=tmp_path)
    assert len(y_train) + len(y_test) == COUNTS["nyt"][0]
    assert (tmp_path / "vader" / "hutto_ICWSM_2014.tar.gz").read_bytes() == archive


def test_rejects_an_archive_with_other_contents(tmp_path, no_pip):
    _fake_sdist(tmp_path / "vader", b"not the VADER archive")
    with pytest.raises(ValueError, match="sha256"):
        load_vader("nyt", cache_dir=tmp_path)


def test_rejects_a_file_that_is_not_an_sdist(tmp_path, no_pip):
    (tmp_path / "vader").mkdir()
    (tmp_path / "vader" / "vaderSentiment-3.3.2.tar.gz").write_bytes(b"<html>")
    with pytest.raises(ValueError, match="Delete it"):
        load_vader("nyt", cache_dir=tmp_path)


def test_rejects_a_truncated_ground_truth_file(cached_folder, tmp_path, no_pip):
    lines = (cached_folder / "tweets_GroundTruth.txt").read_bytes().split(b"\r\n")
    (tmp_path / "vader").mkdir()
    (tmp_path / "vader" / "tweets_GroundTruth.txt").write_bytes(b"\r\n".join(lines[:100]))
    with pytest.raises(ValueError, match="100 lines, 4200 expected"):
        load_vader("tweets", cache_dir=tmp_path)


def test_default_cache_folder_follows_the_environment(cached_folder, tmp_path, monkeypatch, no_pip):
    monkeypatch.setenv("KERAS_TRANSFER_CACHE", str(tmp_path))
    folder = tmp_path / "datasets" / "vader"
    folder.mkdir(parents=True)
    shutil.copy(cached_folder / "amazonReviewSnippets_GroundTruth.txt", folder)
    (_, y_train), (_, y_test) = load_vader("amazon")
    assert len(y_train) + len(y_test) == COUNTS["amazon"][0]
