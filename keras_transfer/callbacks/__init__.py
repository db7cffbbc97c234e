from keras_transfer.callbacks.non_finite_guard import NonFiniteGuard, NonFiniteLossError
from keras_transfer.callbacks.safe_backup_and_restore import SafeBackupAndRestore

__all__ = ["NonFiniteGuard", "NonFiniteLossError", "SafeBackupAndRestore"]
