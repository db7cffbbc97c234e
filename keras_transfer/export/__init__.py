"""SavedModel export for serving (TensorFlow; models trained on JAX too)."""

from keras_transfer.export.saved_model import export_saved_model

__all__ = ["export_saved_model"]
