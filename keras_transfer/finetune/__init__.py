"""`kt.finetune`: labelled data and a pretrained backbone in, a served classifier out."""

from keras_transfer.finetune.data import LabelledData, load_labelled_data
from keras_transfer.finetune.finetune import FinetuneResult, finetune

__all__ = ["FinetuneResult", "LabelledData", "finetune", "load_labelled_data"]
