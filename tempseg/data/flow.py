"""Optical flow of real video on the host: OpenCV DIS, for TC on any video and the Accel `flow` input.

The flow is HxWx2 float32, current -> previous: pixel (x, y) of frame t shows the point that frame
t-1 showed at (x + dx, y + dy), the convention of cv2.remap maps and of
metrics.consistency.warp_with_flow. Synthetic video knows its flow exactly (data/synthetic/flow.py);
`backward_flow` takes that where a frame or its source has it, and DIS otherwise. This module holds
no renderer: the runtime imports it on a Jetson.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from tempseg.data.frames import Frame, FrameSource

# ETC's occlusion mask (Liu et al., ECCV 2020, section 2.1, the V of eq. 1): V = exp(-|I_t - warp(I_{t-1})|).
# The paper gives no scale; here alpha * |difference| with the difference in grey levels (mean over the
# three channels) and alpha = ln 2 / DIS_TOLERANCE, so V = 0.5 at DIS_TOLERANCE grey levels, and a pixel
# is valid where V >= 0.5. 12 grey levels sits above the synthetic sensor noise (sigma <= 4.5 per frame).
DIS_TOLERANCE = 12.0
DIS_ALPHA = math.log(2.0) / DIS_TOLERANCE
DIS_MIN_WEIGHT = 0.5


def dis_flow(
    image: np.ndarray, previous: np.ndarray, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
) -> tuple[np.ndarray, np.ndarray]:
    """Backward DIS flow from `image` to `previous` (both HxWx3 BGR uint8) and ETC's photometric mask."""
    dis = cv2.DISOpticalFlow.create(preset)
    grey, previous_grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.cvtColor(previous, cv2.COLOR_BGR2GRAY)
    # flow=None: OpenCV allocates the output (the stubs type this InputOutputArray as never None)
    flow = dis.calc(grey, previous_grey, None)  # pyright: ignore[reportCallIssue, reportArgumentType]
    height, width = flow.shape[:2]
    map_x = flow[..., 0] + np.arange(width, dtype=np.float32)[None, :]
    map_y = flow[..., 1] + np.arange(height, dtype=np.float32)[:, None]
    warped = cv2.remap(previous, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    diff = cv2.absdiff(image, warped).astype(np.float32).mean(axis=2)  # grey levels, mean over channels
    weight = np.exp(-DIS_ALPHA * diff)  # ETC's V (section 2.1, eq. 1)
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    return flow, inside & (weight >= DIS_MIN_WEIGHT)


def backward_flow(
    frame: Frame, previous: Frame | None = None, source: FrameSource | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """(flow, valid, "exact" or "dis") from `frame` to the frame before it.

    Exact where the frame carries its flow (SyntheticVideo(with_flow=True)) or `source`, the source it came
    from, knows it (FrameSource.exact_flow, at the frame's size); otherwise DIS between `previous` and
    `frame`. Exact flow describes the scene, so it holds for labels and predictions; on a "frozen"
    degraded frame the image repeats an earlier one while the flow does not.
    """
    if frame.flow_prev is not None and frame.flow_valid is not None:
        return frame.flow_prev, frame.flow_valid, "exact"
    exact = source.exact_flow(frame.index, frame.image.shape[:2]) if source is not None and frame.index >= 1 else None
    if exact is not None:
        return exact[0], exact[1], "exact"
    if previous is None:
        raise ValueError(f"frame {frame.index} of {frame.sequence}: no exact flow, and no previous frame for DIS")
    flow, valid = dis_flow(frame.image, previous.image)
    return flow, valid, "dis"


class GridFlow:
    """Backward DIS flow on a coarse grid, the `flow` input of an Accel update graph (models/accel.py):
    [2, h, w] float32, (dx, dy) in pixels of the h x w grid, from the current frame to the previous one.

    DIS runs on the grey frames at `scale` of their size (FAST preset: about 1 ms at 128x256 on one core of
    this VM, measured by bench/accel.py with the rest of the flow cost); the field is then averaged down to
    the grid (INTER_AREA) and its vectors rescaled to grid pixels. Training (train/clips.py) and the
    runtime (runtime/stream.py) both call this class, so a model deploys with the flow it learned from.
    """

    def __init__(
        self, grid_hw: tuple[int, int], *, scale: float = 0.5, preset: int = cv2.DISOPTICAL_FLOW_PRESET_FAST
    ) -> None:
        self.grid_hw = grid_hw
        self.scale = scale
        self.dis = cv2.DISOpticalFlow.create(preset)

    def grey(self, image: np.ndarray) -> np.ndarray:
        """The frame (HxWx3 BGR uint8) as DIS reads it: grey, at `scale`."""
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if self.scale == 1.0:
            return grey
        size = (max(1, round(grey.shape[1] * self.scale)), max(1, round(grey.shape[0] * self.scale)))
        return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)

    def __call__(self, grey: np.ndarray, previous_grey: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Flow from `grey` to `previous_grey` (both from `grey()`) on the grid, written into `out` [2, h, w]."""
        h, w = self.grid_hw
        # flow=None: OpenCV allocates the output (the stubs type this InputOutputArray as never None)
        flow = self.dis.calc(grey, previous_grey, None)  # pyright: ignore[reportCallIssue, reportArgumentType]
        coarse = cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA)
        out = np.empty((2, h, w), np.float32) if out is None else out
        np.multiply(coarse[..., 0], w / flow.shape[1], out=out[0])
        np.multiply(coarse[..., 1], h / flow.shape[0], out=out[1])
        return out

    def clip(self, frames: list[np.ndarray]) -> np.ndarray:
        """[L-1, 2, h, w]: the flow of each frame after the first to the one before it."""
        greys = [self.grey(f) for f in frames]
        return np.stack([self(greys[j], greys[j - 1]) for j in range(1, len(greys))])
