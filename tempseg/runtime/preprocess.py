"""Frame -> network input, written into the runner's input buffer (one OpenCV call)."""

from __future__ import annotations

import numpy as np

from tempseg.common.contract import Contract
from tempseg.common.preprocess import normalize_bgr


class Preprocessor:
    """uint8 BGR HxWx3 -> float32 NCHW normalised as the contract says, into a preallocated buffer."""

    def __init__(self, contract: Contract) -> None:
        self.size = (contract.width, contract.height)
        self.swap_rb = contract.color_order.upper() == "RGB"
        self.mean, self.std = tuple(contract.mean), tuple(contract.std)

    def __call__(self, image: np.ndarray, out: np.ndarray, index: int = 0) -> None:
        """Write `image` into batch slot `index` of `out` ([N,3,H,W] float32)."""
        normalize_bgr(image, self.mean, self.std, out=out[index : index + 1], size=self.size, swap_rb=self.swap_rb)
