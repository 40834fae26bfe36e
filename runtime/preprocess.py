"""Frame -> network input, in one OpenCV call that writes into the runner's input buffer."""

from __future__ import annotations

import cv2
import numpy as np

from common.contract import Contract
from common.preprocess import normalize_bgr


class Preprocessor:
    """uint8 BGR HxWx3 -> float32 NCHW normalised, written into a preallocated buffer.

    Uses cv2.dnn.blobFromImageWithParams (OpenCV >= 4.8): per-channel scale and mean, BGR->RGB,
    resize if needed, no intermediate arrays. Older OpenCV falls back to numpy (allocates).
    """

    def __init__(self, contract: Contract) -> None:
        self.size = (contract.width, contract.height)
        self.swap_rb = contract.color_order.upper() == "RGB"
        self.mean, self.std = contract.mean, contract.std
        self._params = None
        if hasattr(cv2.dnn, "blobFromImageWithParams"):
            params = cv2.dnn.Image2BlobParams()
            params.scalefactor = (*(1.0 / (255.0 * s) for s in contract.std), 0.0)
            params.mean = (*(255.0 * m for m in contract.mean), 0.0)
            params.size = self.size
            params.swapRB = self.swap_rb
            params.ddepth = cv2.CV_32F
            self._params = params

    def __call__(self, image: np.ndarray, out: np.ndarray, index: int = 0) -> None:
        """Write `image` into batch slot `index` of `out` ([N,3,H,W] float32)."""
        target = out[index : index + 1]
        if self._params is not None:
            cv2.dnn.blobFromImageWithParams(image, target, self._params)
            return
        if image.shape[1::-1] != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_LINEAR)
        rgb_ready = image if self.swap_rb else image[..., ::-1]
        target[...] = normalize_bgr(rgb_ready, self.mean, self.std)
