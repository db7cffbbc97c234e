from keras_transfer.lora.adapters import load_adapters, save_adapters
from keras_transfer.lora.enable_lora import enable_lora
from keras_transfer.lora.lora_summary import LoraSummary
from keras_transfer.lora.merge_lora import merge_lora

__all__ = ["LoraSummary", "enable_lora", "load_adapters", "merge_lora", "save_adapters"]
