"""A data set's class list as every stage sees it: names, RGB colours and the ignore value.

The data stage makes the tables (data/classes.py: the 19 Cityscapes classes); models and export take one
as a value, so nothing below the data assumes a class list, and the graph's metadata carries it to the
runtime.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassTable:
    """The classes of one data set, in train-id order."""

    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]  # RGB, one per class
    ignore: int = 255  # the label value of pixels no class is scored on

    def __post_init__(self) -> None:
        if len(self.names) != len(self.palette):
            raise ValueError(f"{len(self.names)} class names but {len(self.palette)} colours")

    def __len__(self) -> int:
        return len(self.names)
