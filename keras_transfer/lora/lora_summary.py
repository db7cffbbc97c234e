"""`LoraSummary`: what `kt.enable_lora` did, as numbers and as a table."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class LoraSummary:
    """What `kt.enable_lora` turned on, returned by it; `print(summary)` shows it.

    Args:
        rank: the LoRA rank.
        alpha: the LoRA scale numerator (the update is scaled by `alpha / rank`).
        layers: `(path, class name, LoRA parameters)` of each layer given LoRA.
        groups: the names of the layer groups that hold them.
        head: the name of the head group, which trains in full.
        lora_params: the number of LoRA parameters (both factors, all layers).
        trainable_params: the parameters that train now (LoRA factors and head).
        total_params: all the model's parameters, LoRA factors included.
        skipped: layers of the chosen groups that hold weights but take no
            Keras LoRA (e.g. `DepthwiseConv2D`, normalisation), counted by
            class; they stay frozen.

    Example:

    >>> import keras
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([
    ...     keras.Input((16,)),
    ...     keras.layers.Dense(16, name="body"),
    ...     keras.layers.Dense(2, name="head"),
    ... ])
    >>> summary = kt.enable_lora(model, rank=2)
    >>> summary.lora_params, summary.trainable_params
    (64, 98)
    >>> print(summary)  # doctest: +NORMALIZE_WHITESPACE
    LoRA rank 2 (alpha 2) on 1 layer in 1 group: body
      LoRA parameters   64 (17.30% of 370)
      trainable now     98 (26.49%): the LoRA factors and the head group 'head'
    """

    rank: int
    alpha: float
    layers: tuple
    groups: tuple
    head: str
    lora_params: int
    trainable_params: int
    total_params: int
    skipped: dict = dataclasses.field(default_factory=dict)

    @property
    def share(self) -> float:
        """LoRA parameters as a fraction of all parameters."""
        return self.lora_params / self.total_params if self.total_params else 0.0

    @property
    def trainable_share(self) -> float:
        """Trainable parameters as a fraction of all parameters."""
        return self.trainable_params / self.total_params if self.total_params else 0.0

    def __str__(self) -> str:
        count = len(self.layers)
        groups = (
            ", ".join(self.groups)
            if len(self.groups) <= 4
            else (f"{self.groups[0]} ... {self.groups[-1]}")
        )
        lines = [
            f"LoRA rank {self.rank} (alpha {self.alpha:g}) on {count} "
            f"layer{'s' if count != 1 else ''} in {len(self.groups)} "
            f"group{'s' if len(self.groups) != 1 else ''}: {groups}",
            f"  LoRA parameters   {self.lora_params:,} ({self.share:.2%} of {self.total_params:,})",
            f"  trainable now     {self.trainable_params:,} ({self.trainable_share:.2%}): "
            f"the LoRA factors and the head group '{self.head}'",
        ]
        if self.skipped:
            kinds = ", ".join(f"{number} {kind}" for kind, number in self.skipped.items())
            lines.append(f"  no Keras LoRA, kept frozen: {kinds}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"LoraSummary(rank={self.rank}, layers={len(self.layers)}, "
            f"lora_params={self.lora_params}, share={self.share:.4f})"
        )
