"""`kt.BackboneRanking`: what `kt.rank_backbones` returns, a small table."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class RankedBackbone:
    """One candidate's row: its score, the time it took and its control's score.

    Attributes:
        name: the candidate's name, as given to `kt.rank_backbones`.
        score: its transferability score (higher = expected to transfer better).
        seconds: wall time of loading it, the forward pass over the data and
            the score (the random control not included).
        random_score: the score of the same architecture randomly initialised
            (`control="random"`), else `None`.
    """

    name: str
    score: float
    seconds: float
    random_score: float | None = None

    @property
    def negative_transfer(self) -> bool | None:
        """True when the pretrained weights score no better than random ones;
        `None` without the control."""
        if self.random_score is None:
            return None
        return self.score <= self.random_score


@dataclasses.dataclass(frozen=True)
class BackboneRanking:
    """Candidates ranked by a transferability score, best first.

    Print it for a table; index it by position or by name; `to_rows()` gives
    plain dicts for JSON or pandas.

    Attributes:
        method: the score used (`"logme"`, `"h_score"`, `"leep"`, `"nce"`).
        rows: one `RankedBackbone` per candidate, sorted by score, best first.

    Example:

    >>> import keras_transfer as kt
    >>> from keras_transfer.transferability.backbone_ranking import RankedBackbone
    >>> ranking = kt.BackboneRanking("logme", (RankedBackbone("b", -0.5, 1.0),
    ...                                        RankedBackbone("a", -0.7, 2.0)))
    >>> ranking.best, ranking["a"].score
    ('b', -0.7)
    >>> print(ranking)
    Backbones ranked by logme (higher = expected to transfer better)
    rank  backbone  score    seconds
    1     b         -0.5000  1.00
    2     a         -0.7000  2.00
    """

    method: str
    rows: tuple[RankedBackbone, ...]

    @property
    def best(self) -> str:
        """The name of the best-scoring candidate."""
        return self.rows[0].name

    @property
    def names(self) -> list[str]:
        """Candidate names, best first."""
        return [row.name for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, key: int | str) -> RankedBackbone:
        if isinstance(key, str):
            for row in self.rows:
                if row.name == key:
                    return row
            raise KeyError(f"No candidate named {key!r}; the candidates are {self.names}.")
        return self.rows[key]

    def to_rows(self) -> list[dict]:
        """The rows as plain dicts (with `rank` and `negative_transfer`), best first."""
        return [
            {"rank": rank, **dataclasses.asdict(row), "negative_transfer": row.negative_transfer}
            for rank, row in enumerate(self.rows, start=1)
        ]

    def plot(self, ax=None):
        """A horizontal bar per candidate (best on top), its random twin's
        score beside it where the control ran.

        Args:
            ax: the matplotlib `Axes` to draw on; a new figure's by default.

        Returns:
            The matplotlib `Axes`.
        """
        import matplotlib.pyplot as plt  # slow to import: only when plotting

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 1 + 0.5 * len(self.rows)))
        positions = list(range(len(self.rows)))[::-1]
        with_control = any(row.random_score is not None for row in self.rows)
        height = 0.4 if with_control else 0.8
        ax.barh(
            [p + (height / 2 if with_control else 0) for p in positions],
            [row.score for row in self.rows],
            height=height,
            label="pretrained",
        )
        if with_control:
            ax.barh(
                [p - height / 2 for p in positions],
                [row.random_score if row.random_score is not None else 0 for row in self.rows],
                height=height,
                color="lightgray",
                label="random init",
            )
            ax.legend()
        ax.set_yticks(positions, [row.name for row in self.rows])
        ax.set_xlabel(f"{self.method} (higher = expected to transfer better)")
        return ax

    def __str__(self) -> str:
        with_control = any(row.random_score is not None for row in self.rows)
        header = ["rank", "backbone", "score"] + (["random init"] if with_control else [])
        lines = [header + ["seconds"]]
        for rank, row in enumerate(self.rows, start=1):
            line = [str(rank), row.name, f"{row.score:.4f}"]
            if with_control:
                control = "-" if row.random_score is None else f"{row.random_score:.4f}"
                line.append(control + (" (!)" if row.negative_transfer else ""))
            lines.append(line + [f"{row.seconds:.2f}"])
        widths = [max(len(line[column]) for line in lines) for column in range(len(header) + 1)]
        table = [
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
            for line in lines
        ]
        title = f"Backbones ranked by {self.method} (higher = expected to transfer better)"
        notes = []
        if any(row.negative_transfer for row in self.rows):
            notes.append("(!) no better than randomly initialised: negative transfer")
        return "\n".join([title, *table, *notes])

    def __repr__(self) -> str:
        ranked = ", ".join(f"{row.name}={row.score:.4g}" for row in self.rows)
        return f"BackboneRanking(method={self.method!r}, best first: {ranked})"
