"""KerasCV: an optional extra that imports with some Keras releases only.

KerasCV is no longer developed (its models moved to KerasHub); keras-cv 0.9.0
imports with Keras 3.15 and fails to import from Keras 3.16 on. The
`keras-cv` extra installs a Keras it works with.
"""

from __future__ import annotations

import importlib.metadata

import keras

_INSTALL = "`pip install 'keras-transfer[keras-cv]'`"


def import_keras_cv():
    """Imports `keras_cv`, or says what failed, with which Keras, and what to do.

    Returns:
        The `keras_cv` module.

    Raises:
        ImportError: keras-cv is not installed, or it cannot be imported with
            the installed Keras (the message names both versions).

    Example:

    >>> from keras_transfer.backbones.keras_cv_support import import_keras_cv
    >>> try:
    ...     keras_cv = import_keras_cv()
    ... except ImportError as error:
    ...     assert "keras-transfer[keras-cv]" in str(error)
    """
    try:
        import keras_cv
    except ModuleNotFoundError as error:
        if error.name != "keras_cv":
            raise _incompatible(error) from error
        raise ImportError(
            f"KerasCV backbones need the optional `keras-cv` package: {_INSTALL}."
        ) from None
    except Exception as error:  # Whatever a Keras release broke inside keras-cv.
        raise _incompatible(error) from error
    return keras_cv


def _incompatible(error: Exception) -> ImportError:
    try:
        keras_cv_version = importlib.metadata.version("keras-cv")
    except importlib.metadata.PackageNotFoundError:
        keras_cv_version = "(unknown version)"
    return ImportError(
        f"keras-cv {keras_cv_version} cannot be imported with Keras {keras.version()} "
        f"({type(error).__name__}: {error}). KerasCV is no longer developed and "
        "keras-cv 0.9 works with Keras 3.15 only: install a Keras it works with "
        f"({_INSTALL} does), or load the backbone from KerasHub, where KerasCV's "
        "models moved (e.g. `kt.load_backbone('resnet_50_imagenet')`)."
    )
