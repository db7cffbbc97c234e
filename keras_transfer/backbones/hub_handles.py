"""Handles of TF SavedModels: local folders and TF-Hub / Kaggle Models URLs.

A URL is resolved by `tensorflow_hub.resolve` (the `hub` extra), which
downloads TF-Hub's compressed format (the URL with `?tf-hub-format=compressed`
appended answers with a `tar.gz` of the SavedModel folder), unpacks it into
its cache (`$TFHUB_CACHE_DIR`, else a folder under the system's temporary
one) and returns that folder; a URL already in the cache is not downloaded
again.
"""

from __future__ import annotations

import warnings

URL_PREFIXES = ("http://", "https://")


def is_url(handle: str) -> bool:
    """Whether `handle` is a URL to download (`http://`, `https://`).

    Example:

    >>> from keras_transfer.backbones.hub_handles import is_url
    >>> is_url("https://tfhub.dev/google/some-model/1"), is_url("/models/encoder")
    (True, False)
    """
    return handle.startswith(URL_PREFIXES)


def resolve_handle(handle: str) -> str:
    """A local SavedModel folder for `handle`: itself, or the download of a URL.

    Args:
        handle: a folder written by `tf.saved_model.save`, or a tfhub.dev,
            Kaggle Models or other URL serving TF-Hub's compressed format.

    Returns:
        The folder to pass to `tf.saved_model.load`.

    Raises:
        FileNotFoundError: `handle` is neither a URL nor a folder.
        ImportError: `handle` is a URL and `tensorflow_hub` is missing or
            fails to import.
        OSError: the URL could not be fetched or unpacked.
    """
    if not is_url(handle):
        import tensorflow as tf

        if not tf.io.gfile.isdir(handle):
            raise FileNotFoundError(
                f"No SavedModel folder at {handle!r}. `handle` must be a folder written "
                "by `tf.saved_model.save` (holding `saved_model.pb`), or a tfhub.dev / "
                "Kaggle Models URL."
            )
        return handle
    tensorflow_hub = _import_tensorflow_hub(handle)
    try:
        return tensorflow_hub.resolve(handle)
    except Exception as error:  # Network, HTTP and archive errors alike.
        raise OSError(
            f"Could not fetch {handle!r} ({type(error).__name__}: {error}). Download it "
            "and pass the local folder as `handle`."
        ) from error


def _import_tensorflow_hub(handle: str):
    install = "`pip install 'keras-transfer[hub]'`"
    try:
        with warnings.catch_warnings():
            # tensorflow-hub 0.16 imports `pkg_resources`, which warns that it is
            # deprecated: noise about tensorflow-hub's code, not the user's.
            warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
            import tensorflow_hub
    except ImportError as error:
        if isinstance(error, ModuleNotFoundError) and error.name == "tensorflow_hub":
            raise ImportError(
                f"{handle!r} is a URL: fetching it needs TensorFlow Hub ({install}). "
                "Or download the SavedModel yourself and pass its local folder."
            ) from None
        raise ImportError(
            f"{handle!r} is a URL, but tensorflow_hub fails to import ({error}). Under "
            "Keras 3, tensorflow-hub 0.16 also needs `tf-keras` (of the installed "
            "TensorFlow's minor version) and setuptools' `pkg_resources` "
            f"(`setuptools<81`): {install} installs them. Or download the SavedModel "
            "yourself and pass its local folder."
        ) from error
    return tensorflow_hub
