"""What `kt.finetune` writes: the SavedModel, a metrics JSON and a plot of the training curves."""

from __future__ import annotations

import json
import os

from keras_transfer.export import export_saved_model
from keras_transfer.export.saved_model import require_exporting_backend

SAVED_MODEL = "saved_model"
METRICS_FILE = "metrics.json"
PLOT_FILE = "training_curves.png"


def check_can_export() -> None:
    """Fails before training, not after, where the backend cannot export."""
    require_exporting_backend()


def write_outputs(result, export_dir: str, preprocessor) -> None:
    """Writes `saved_model/`, `metrics.json` and `training_curves.png` into `export_dir`."""
    os.makedirs(export_dir, exist_ok=True)
    export_saved_model(
        result.model,
        os.path.join(export_dir, SAVED_MODEL),
        preprocessor=preprocessor,
        class_names=result.class_names,
        outputs="logits",
    )
    with open(os.path.join(export_dir, METRICS_FILE), "w") as handle:
        json.dump(metrics(result), handle, indent=1)
    plot_training_curves(result.history, result.stages, os.path.join(export_dir, PLOT_FILE))


def metrics(result) -> dict:
    return {
        "class_names": result.class_names,
        "validation_accuracy_frozen_backbone": result.head_accuracy,
        "validation_accuracy_fine_tuned": result.accuracy,
        "stages": [{"epoch": epoch, "trainable_groups": groups} for epoch, groups in result.stages],
        "history": result.history,
        "seconds": result.seconds,
    }


def plot_training_curves(history: dict, stages, path: str) -> None:
    """Loss and accuracy per epoch, a dashed line where each unfreezing stage begins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = history.get(prefix + metric, [])
            axis.plot(range(1, len(values) + 1), values, marker="o", label=label)
        for epoch, groups in stages:
            axis.axvline(epoch + 0.5, color="grey", linestyle="--", linewidth=1)
            axis.annotate(
                f"{groups} groups",
                (epoch + 0.5, 1.0),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=8,
            )
        axis.set_xlabel("epoch (frozen-backbone head, then unfreezing stages)")
        axis.set_title(metric)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
