"""Every notebook in tutorials/ runs top to bottom, in quick mode, in a Jupyter kernel."""

import importlib.util
import os
import pathlib
import sys

import keras
import pytest

TUTORIALS = pathlib.Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
# Notebooks whose point is a matplotlib figure: it must reach the outputs.
FIGURE_NOTEBOOKS = [
    "00_gradual_unfreezing.ipynb",
    "01_image_classification.ipynb",
    "02_text_classification.ipynb",
    "03_distillation.ipynb",
    "04_domain_adaptation.ipynb",
    "05_tfhub_savedmodel.ipynb",
    "06_robust_fine_tuning.ipynb",
    "07_lora.ipynb",
    "08_choose_and_few_shot.ipynb",
]

_REQUIRED = (
    "nbclient",
    "nbformat",
    "ipykernel",
    "matplotlib",
    "sklearn",
    "mlxtend",
    "vaderSentiment",
)
_MISSING = [name for name in _REQUIRED if importlib.util.find_spec(name) is None]
pytestmark = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"the tutorials need {', '.join(_MISSING)}: pip install -e '.[all,notebooks]'",
)
# CI runs the suite once per backend. In quick mode a notebook takes 20-30 s on
# TensorFlow or PyTorch and 35-60 s on JAX (one compilation per unfreezing stage)
# on CI's 2 cores, so the notebooks run once per CI run, on TensorFlow.
tensorflow_only = pytest.mark.skipif(
    keras.config.backend() != "tensorflow",
    reason="the tutorials run once per CI run, on the TensorFlow backend (35-60 s each on "
    "JAX in quick mode: too slow to repeat per backend)",
)

_executed: dict = {}


def _quick_kernel_env(monkeypatch):
    # The kernel inherits this process's environment, KERAS_BACKEND included.
    monkeypatch.setenv("KERAS_TRANSFER_TUTORIAL_QUICK", "1")
    # With a non-interactive MPLBACKEND (Agg), figures would not reach the outputs.
    monkeypatch.delenv("MPLBACKEND", raising=False)


@pytest.fixture
def execute(monkeypatch):
    """Runs a notebook (once per session) and returns it with its outputs."""

    def run(path: pathlib.Path):
        if path not in _executed:
            import nbclient
            import nbformat

            _quick_kernel_env(monkeypatch)
            notebook = nbformat.read(path, as_version=4)
            client = nbclient.NotebookClient(
                notebook,
                kernel_name="python3",
                timeout=600,
                resources={"metadata": {"path": str(TUTORIALS)}},
            )
            client.execute()  # Raises CellExecutionError on the first failing cell.
            _executed[path] = notebook
        return _executed[path]

    return run


def _outputs(notebook):
    return [output for cell in notebook.cells for output in cell.get("outputs", [])]


@tensorflow_only
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(execute, path):
    notebook = execute(path)
    assert not [output for output in _outputs(notebook) if output.output_type == "error"]


@tensorflow_only
@pytest.mark.parametrize("name", FIGURE_NOTEBOOKS)
def test_notebook_shows_its_figure(execute, name):
    notebook = execute(TUTORIALS / name)
    images = [output for output in _outputs(notebook) if "image/png" in output.get("data", {})]
    assert images, f"{name} showed no matplotlib figure"


def test_kernel_runs_this_interpreter_and_environment(monkeypatch):
    # Otherwise the notebooks would run against another installation, or
    # ignore the backend and the quick mode that this run asks for.
    import nbclient
    import nbformat

    _quick_kernel_env(monkeypatch)
    source = (
        "import os, sys\n"
        "print(sys.executable, os.environ.get('KERAS_BACKEND'), "
        "os.environ['KERAS_TRANSFER_TUTORIAL_QUICK'])"
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nbclient.NotebookClient(notebook, kernel_name="python3", timeout=120).execute()
    (output,) = notebook.cells[0].outputs
    assert output.text.split() == [sys.executable, str(os.environ.get("KERAS_BACKEND")), "1"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.name for path in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    # Outputs would go stale with every change and bloat the repository; CI makes its own.
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    stale = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not stale, f"{path.name}: clear the outputs of cells {stale} before committing"


def test_figure_notebooks_exist():
    assert set(FIGURE_NOTEBOOKS) <= {path.name for path in NOTEBOOKS}
