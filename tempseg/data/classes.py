"""The 19 Cityscapes training classes: names and colours, taken from cityscapesscripts (not retyped).

They are the classes of synthetic video and Cityscapes; a labelled data set (data/labelled.py: a folder tree,
CamVid) brings its own table, which data/sources.py's `dataset_classes(spec)` returns for any data spec.

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
    """The class table of a model with `num_classes` outputs where nothing records its classes: the 19 Cityscapes
    classes of synthetic street video and Cityscapes; None for another count (its graph then names no classes).
    Data with classes of its own (folder, CamVid) names them through `dataset_classes(spec)` instead."""
    return CITYSCAPES if num_classes == NUM_CLASSES else None


def colorize(label: np.ndarray, classes: ClassTable = CITYSCAPES) -> np.ndarray:
    """HxW train ids -> HxWx3 uint8 BGR in the classes' colours (Cityscapes by default); ignore and ids past the
    last class are black."""
    table = np.zeros((256, 3), np.uint8)
    table[: len(classes)] = np.array(classes.palette, np.uint8)[:, ::-1]
    return table[label]
