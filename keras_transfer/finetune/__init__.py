"""`kt.finetune`: labelled data and a pretrained backbone in, a served classifier out."""

from keras_transfer.finetune.data import LabelledData, load_labelled_data
from keras_transfer.finetune.finetune import FinetuneResult, finetune

# `kt.finetune` is the function, which hides this sub-package of the same name.
# The names that go with it are set on the function too, so that
# `kt.finetune.LabelledData` works as well as `kt.LabelledData`.
finetune.LabelledData = LabelledData
finetune.load_labelled_data = load_labelled_data
finetune.FinetuneResult = FinetuneResult

__all__ = ["FinetuneResult", "LabelledData", "finetune", "load_labelled_data"]
