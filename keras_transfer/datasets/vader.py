"""`load_vader`: human-rated sentences in four domains, from the VADER paper."""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import shlex
import subprocess
import sys
import tarfile
import tempfile
import uuid

import numpy as np

from keras_transfer.cache import cache_dir as _default_cache_dir
from keras_transfer.datasets._common import (
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    check_split_args,
    split_train_test,
)

VADER_DOMAINS = ("movies", "amazon", "nyt", "tweets")
# Domain -> (file in the archive, sentences in it before zero ratings are dropped).
_GROUND_TRUTH = {
    "movies": ("movieReviewSnippets_GroundTruth.txt", 10605),
    "amazon": ("amazonReviewSnippets_GroundTruth.txt", 3708),
    "nyt": ("nytEditorialSnippets_GroundTruth.txt", 5190),
    "tweets": ("tweets_GroundTruth.txt", 4200),
}
_REQUIREMENT = "vaderSentiment==3.3.2"
# The wheel leaves the ratings out; only the source distribution has them.
_SDIST = "vaderSentiment-3.3.2.tar.gz"
_ARCHIVE = "hutto_ICWSM_2014.tar.gz"
_SDIST_MEMBER = f"additional_resources/{_ARCHIVE}"
_ARCHIVE_SHA256 = "d5bb07d87474b3eb8d30b4deccbc23f19d742a6c5718fbacc65485b70b95c5fa"
_PIP_TIMEOUT_S = 600


def load_vader(
    domain: str,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SEED,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Loads one domain of the VADER sentiment ratings: sentences, binary labels.

    The ground truth of "VADER: A Parsimonious Rule-based Model for Sentiment
    Analysis of Social Media Text" (C.J. Hutto and E. Gilbert, ICWSM 2014):
    sentences from four domains, each rated from -4 to +4 by at least 20
    people. A sentence is positive (1) when its mean rating is above zero and
    negative (0) when below; sentences rated exactly 0 are dropped.

    | domain | sentences | kept | positive | negative |
    | --- | --- | --- | --- | --- |
    | `"movies"` | 10,605 | 10,568 | 5,242 | 5,326 |
    | `"amazon"` | 3,708 | 3,610 | 2,128 | 1,482 |
    | `"nyt"` | 5,190 | 4,946 | 2,204 | 2,742 |
    | `"tweets"` | 4,200 | 4,196 | 2,897 | 1,299 |

    `"movies"` are Rotten Tomatoes snippets: the sentence-polarity corpus of
    B. Pang and L. Lee (ACL 2005), re-rated (VADER's own README credits
    their 2004 corpus of 2,000 full reviews, but the sentences are those of
    the 2005 one). `"amazon"` are sentences of 309 product reviews from
    M. Hu and B. Liu (KDD 2004), `"nyt"` sentences of 500 New York Times
    editorials, `"tweets"` tweet-like texts modelled on Twitter's public
    timeline (usernames and URLs replaced). Texts are kept as written (the
    movie snippets write quotes as `''`), with surrounding spaces removed.
    A few texts repeat within a domain (62 repeats among the kept `"nyt"`
    sentences, 10 in `"amazon"`, 2 in `"movies"`), so the same text can land
    in both sets (18 `"nyt"` test sentences with the default split).

    Use a pair of domains for domain shift, e.g. fine-tune a sentence
    classifier on `"movies"` and evaluate or adapt it on `"amazon"` or
    `"tweets"`.

    Origin and license: the ratings ship only in the source distribution
    of the `vaderSentiment` package (3.3.2, MIT License, (c) 2016 C.J. Hutto),
    as `additional_resources/hutto_ICWSM_2014.tar.gz`; its README asks
    users of the data to cite Hutto & Gilbert (2014) and states no separate
    license. The sentences themselves are excerpts of third-party text
    (Rotten Tomatoes, Amazon reviews, The New York Times, tweets) whose
    authors granted no license that we know of: treat them as research data
    and cite Hutto & Gilbert (2014) and, for `"movies"`, Pang & Lee (2005).

    Where the data comes from: the folder `cache_dir/vader` keeps the
    archive and the four extracted `*_GroundTruth.txt` files. When they are
    missing, the first call runs
    `python -m pip download --no-deps --no-binary :all: vaderSentiment==3.3.2`
    (a few seconds; pip's own index and proxy settings apply) and keeps
    only the archive and those files. Offline, run that command by hand with
    `-d <that folder>` (the error message gives the exact command) and call
    again: a `vaderSentiment-3.3.2.tar.gz` found there is used instead.

    Args:
        domain: one of `"movies"`, `"amazon"`, `"nyt"` or `"tweets"`.
        test_fraction: fraction of each class held out for the test set.
            Defaults to 0.2.
        seed: seed of the stratified split; the same seed always gives the
            same split. Defaults to 1337.
        cache_dir: folder that holds the `vader` folder. Defaults to
            `kt.cache_dir("datasets")` (`$KERAS_TRANSFER_CACHE/datasets` when
            that variable is set).

    Returns:
        `(x_train, y_train), (x_test, y_test)`: texts as numpy arrays of
        Python `str` (dtype object), labels as int32 arrays (1 positive,
        0 negative), both of shape `(N,)`.

    Raises:
        ValueError: an unknown `domain` or a bad split.
        RuntimeError: the data is not cached and pip could not download it.

    Example:

    >>> import numpy as np
    >>> from keras_transfer.datasets import load_vader
    >>> (x_train, y_train), (x_test, y_test) = load_vader("movies")  # doctest: +SKIP
    >>> x_train.shape, x_test.shape  # doctest: +SKIP
    ((8455,), (2113,))
    >>> np.bincount(y_train), np.bincount(y_test)  # doctest: +SKIP
    (array([4261, 4194]), array([1065, 1048]))
    """
    if not isinstance(domain, str) or domain not in _GROUND_TRUTH:
        raise ValueError(
            f"Unknown VADER domain {domain!r}; choose one of "
            + ", ".join(repr(name) for name in VADER_DOMAINS)
            + "."
        )
    check_split_args(test_fraction, seed)
    parent = pathlib.Path(cache_dir) if cache_dir is not None else _default_cache_dir("datasets")
    file_name, expected_rows = _GROUND_TRUTH[domain]
    path = _ground_truth_file(parent / "vader", file_name)
    texts, labels = _read_ground_truth(path, expected_rows)
    return split_train_test(texts, labels, test_fraction, seed)


def _read_ground_truth(path: pathlib.Path, expected_rows: int) -> tuple[np.ndarray, np.ndarray]:
    # Lines end in CRLF; split on "\n" only, since str.splitlines would also
    # break on Unicode separators that may sit inside a sentence.
    lines = [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    rows = [line.rstrip("\r").split("\t", 2) for line in lines]
    if len(rows) != expected_rows or any(len(row) != 3 for row in rows):
        raise ValueError(
            f"{path} is not the VADER ground truth expected ({len(rows)} lines, "
            f"{expected_rows} expected, each 'id<TAB>rating<TAB>text'). Delete it to "
            f"extract it again."
        )
    ratings = np.array([float(row[1]) for row in rows])
    kept = ratings != 0
    texts = np.empty(int(kept.sum()), dtype=object)
    texts[:] = [row[2].strip() for row, keep in zip(rows, kept) if keep]
    return texts, (ratings[kept] > 0).astype("int32")


def _ground_truth_file(folder: pathlib.Path, file_name: str) -> pathlib.Path:
    path = folder / file_name
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(_archive_bytes(folder))) as archive:
            # Read only the members we want, by base name, so nothing in the
            # archive decides where a file is written.
            for member in archive.getmembers():
                base_name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base_name.endswith("_GroundTruth.txt"):
                    _write_atomically(folder / base_name, archive.extractfile(member).read())
    if not path.is_file():
        raise FileNotFoundError(f"{folder / _ARCHIVE} has no {file_name}.")
    return path


def _archive_bytes(folder: pathlib.Path) -> bytes:
    cached = folder / _ARCHIVE
    if cached.is_file():
        data = cached.read_bytes()
        if _sha256(data) == _ARCHIVE_SHA256:
            return data
    sdist = _find_sdist(folder)
    if sdist is not None:
        data = _archive_from_sdist(sdist)
    else:
        with tempfile.TemporaryDirectory(prefix="vader-sdist.") as download_dir:
            data = _archive_from_sdist(_pip_download(download_dir, folder))
    if _sha256(data) != _ARCHIVE_SHA256:
        raise ValueError(
            f"The {_ARCHIVE} inside {_REQUIREMENT} is not the one keras_transfer was "
            f"built against (sha256 {_sha256(data)}, expected {_ARCHIVE_SHA256})."
        )
    _write_atomically(cached, data)
    return data


def _find_sdist(folder: pathlib.Path) -> pathlib.Path | None:
    # Newer indexes may serve the normalised name, vadersentiment-3.3.2.tar.gz.
    for path in sorted(folder.glob("*.tar.gz")):
        if path.name.lower() == _SDIST.lower() and path.is_file():
            return path
    return None


def _archive_from_sdist(sdist: pathlib.Path) -> bytes:
    try:
        with tarfile.open(sdist, "r:gz") as package:
            for member in package.getmembers():
                if member.isfile() and member.name.endswith("/" + _SDIST_MEMBER):
                    return package.extractfile(member).read()
    except (OSError, tarfile.TarError) as error:
        raise ValueError(
            f"{sdist} is not a readable {_REQUIREMENT} source distribution ({error}). "
            f"Delete it and call load_vader again."
        ) from error
    raise ValueError(
        f"{sdist} has no {_SDIST_MEMBER}: it is not the {_REQUIREMENT} source "
        f"distribution. Delete it and call load_vader again."
    )


def _pip_download(download_dir: str, cache_folder: pathlib.Path) -> pathlib.Path:
    command = _pip_download_command(download_dir)
    by_hand = shlex.join(_pip_download_command(str(cache_folder)))
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
        failure = None if result.returncode == 0 else (result.stderr or result.stdout)
    except (OSError, subprocess.TimeoutExpired) as error:
        failure = str(error)
    sdist = _find_sdist(pathlib.Path(download_dir))
    if failure is None and sdist is None:
        failure = f"pip succeeded but saved no {_SDIST}."
    if failure is not None:
        tail = "\n".join(failure.strip().splitlines()[-5:])
        raise RuntimeError(
            f"load_vader needs the VADER ratings from the source distribution of "
            f"{_REQUIREMENT}, which is not cached in {cache_folder}, and pip could not "
            f"download it:\n{tail}\nRun this by hand (where a package index can be "
            f"reached; copy the file into that folder otherwise), then call load_vader "
            f"again:\n  {by_hand}"
        )
    return sdist


def _pip_download_command(destination: str) -> list[str]:
    pip = [sys.executable, "-m", "pip", "download"]
    return pip + ["--no-deps", "--no-binary", ":all:", _REQUIREMENT, "-d", destination]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
    # A half-written file would look cached; write beside it, then rename.
    # (Not mkstemp: its files are private to the user, these are plain data.)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
