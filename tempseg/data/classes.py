"""The 19 Cityscapes training classes: names and colours, taken from cityscapesscripts (not retyped).

The runtime reads names and palette from the ONNX metadata, so only the training side and the data
tools import this module (cityscapesscripts comes with the `train` extra).
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import trainId2label

from tempseg.common.classes import ClassTable

NUM_CLASSES = 19
IGNORE = 255
CLASS_NAMES: tuple[str, ...] = tuple(trainId2label[i].name for i in range(NUM_CLASSES))
PALETTE: tuple[tuple[int, int, int], ...] = tuple(tuple(trainId2label[i].color) for i in range(NUM_CLASSES))  # RGB
CITYSCAPES = ClassTable(CLASS_NAMES, PALETTE, IGNORE)


def class_table(num_classes: int) -> ClassTable | None:
    """The class table of a model with `num_classes` outputs: every data set here (synthetic street video,
    Cityscapes) labels the 19 Cityscapes classes; None for another count (its graph then names no classes)."""
    return CITYSCAPES if num_classes == NUM_CLASSES else None


def colorize(label: np.ndarray) -> np.ndarray:
    """HxW train ids -> HxWx3 uint8 BGR in the Cityscapes colours; ignore (and anything > 18) is black."""
    table = np.zeros((256, 3), np.uint8)
    table[:NUM_CLASSES] = np.array(PALETTE, np.uint8)[:, ::-1]
    return table[label]
