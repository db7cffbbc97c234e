"""The one user cache folder for what keras_transfer converts or extracts."""

from __future__ import annotations

import os
import pathlib

CACHE_ENV_VAR = "KERAS_TRANSFER_CACHE"


def cache_dir(*parts: str, create: bool = True) -> pathlib.Path:
    """The cache folder, or a sub-folder of it.

    It is `$KERAS_TRANSFER_CACHE` when set, else `$XDG_CACHE_HOME/keras_transfer`,
    else `~/.cache/keras_transfer`; never a folder inside the installed package.

    Args:
        *parts: sub-folder names, e.g. `cache_dir("zoo", "minilm_l6")`.
        create: create the folder if it does not exist. Defaults to `True`.

    Example:

    >>> import keras_transfer as kt
    >>> kt.cache_dir("zoo", create=False).name
    'zoo'
    """
    root = os.environ.get(CACHE_ENV_VAR)
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "keras_transfer")
    path = pathlib.Path(root, *parts)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
