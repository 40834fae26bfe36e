"""Metrics against hand-computed cases."""

import math

import cv2
import numpy as np
import pytest

from tempseg.metrics import (
    ConfusionMatrix,
    LatencyAwareMIoU,
    StreamScores,
    TemporalConsistency,
    flame_offset,
    paired_delta,
)
from tempseg.metrics.paired import miou_interval


def test_miou_hand_computed_two_images():
    # image 1: label [0 0 1 1], pred [0 1 1 1]; image 2: label [1 1 2 255], pred [1 2 2 0]
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 1, 1]), np.array([0, 0, 1, 1]))
    cm.update(np.array([1, 2, 2, 0]), np.array([1, 1, 2, 255]))
    # class 0: I=1, U=2 ; class 1: I=3, U=5 ; class 2: I=1, U=2 (summed over both images, eq. 2)
    np.testing.assert_allclose(cm.iou(), [0.5, 0.6, 0.5])
    assert cm.miou() == pytest.approx((0.5 + 0.6 + 0.5) / 3)
    assert cm.pixel_accuracy() == pytest.approx(5 / 7)  # the ignored pixel does not count
    assert cm.total == 7


def test_miou_sums_over_images_not_mean_of_image_mious():
    cm = ConfusionMatrix(2)
    cm.update(np.zeros(10, int), np.zeros(10, int))  # perfect on a big image of class 0
    cm.update(np.array([1]), np.array([0]))  # one wrong pixel
    # class 0: I=10, U=11; class 1: I=0, U=1 -> mean 0.4545..., not the mean of per-image mIoUs
    assert cm.miou() == pytest.approx((10 / 11 + 0) / 2)


def test_absent_classes_are_left_out_and_empty_is_nan():
    cm = ConfusionMatrix(19)
    assert math.isnan(cm.miou())
    cm.update(np.array([3, 3]), np.array([3, 3]))
    assert cm.miou() == 1.0
    summary = cm.summary()
    assert summary["per_class_iou"]["3"] == 1.0
    assert summary["per_class_iou"]["0"] is None


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(2).update(np.zeros((2, 2)), np.zeros((2, 3)))


@pytest.mark.parametrize(
    ("latency_ms", "fps", "k"),
    [(0.0, 17, 0), (26, 17, 1), (58.8, 17, 1), (59, 17, 2), (195, 20, 4), (76, 20, 2), (38, 30, 2)],
)
def test_flame_offset_is_eq5(latency_ms, fps, k):
    assert flame_offset(latency_ms, fps) == k


def test_flame_compares_prediction_t_with_label_t_plus_k():
    # labels move one class per frame; a prediction equal to the current label scores 1 at k=0
    flame = LatencyAwareMIoU(num_classes=4, max_offset=2)
    labels = [np.full((2, 2), c) for c in (0, 1, 2, 3)]
    for t in range(4):
        flame.update(prediction=labels[t], label=labels[t], sequence="s")
    assert flame.miou(0) == 1.0
    assert flame.miou(1) == 0.0  # prediction of t against label of t+1: always wrong
    # a prediction that anticipates the next frame scores 1 at k=1
    ahead = LatencyAwareMIoU(num_classes=4, max_offset=2)
    for t in range(4):
        ahead.update(prediction=labels[min(t + 1, 3)], label=labels[t], sequence="s")
    assert ahead.miou(1) == 1.0
    summary = ahead.summary(latency_ms=40.0, fps=30.0)
    assert summary["offset_frames"] == 2
    assert summary["flame_miou"] == ahead.miou(2)


def test_flame_never_crosses_a_sequence_cut():
    flame = LatencyAwareMIoU(num_classes=2, max_offset=1)
    flame.update(np.zeros((1, 1), int), np.zeros((1, 1), int), sequence="a")
    flame.update(np.ones((1, 1), int), np.ones((1, 1), int), sequence="b")
    assert flame.matrices[1].total == 0


def _panning_view(t: int, shift: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A camera panning over a textured world of class stripes: the view and its labels."""
    rng = np.random.default_rng(0)
    world = cv2.GaussianBlur(rng.integers(0, 255, (96, 256, 3), dtype=np.uint8), (5, 5), 0)
    world_labels = ((np.arange(256) // 12) % 3).astype(np.uint8)[None, :].repeat(96, 0)
    x0 = shift * t
    return world[:, x0 : x0 + 160].copy(), world_labels[:, x0 : x0 + 160].copy()


def test_temporal_consistency_rewards_following_the_motion():
    follows, frozen = TemporalConsistency(3), TemporalConsistency(3)
    first_labels = _panning_view(0)[1]
    for t in range(6):
        image, labels = _panning_view(t)
        follows.update(image, labels, sequence="s")
        frozen.update(image, first_labels, sequence="s")  # a prediction stuck on frame 0
    assert follows.value() > 0.9
    assert frozen.value() < 0.75


# ---- paired evidence -------------------------------------------------------------------------


def _scores(predictions: dict[str, list[tuple[np.ndarray, np.ndarray, str | None]]]) -> StreamScores:
    scores = StreamScores(3)
    for sequence, frames in predictions.items():
        for index, (prediction, label, degraded) in enumerate(frames):
            scores.update(sequence, index, degraded, prediction, label)
    return scores


def _two_model_frames(sequences: int, wrong_pixels_b: int, seed: int = 0) -> tuple[dict, dict]:
    """Model a is right everywhere; model b gets `wrong_pixels_b` pixels of every degraded frame wrong."""
    rng = np.random.default_rng(seed)
    a, b = {}, {}
    for s in range(sequences):
        frames_a, frames_b = [], []
        for t in range(4):
            label = rng.integers(0, 3, 64)
            degraded = "noise" if t % 2 else None
            wrong = label.copy()
            if degraded:
                wrong[:wrong_pixels_b] = (wrong[:wrong_pixels_b] + 1) % 3
            frames_a.append((label, label, degraded))
            frames_b.append((wrong, label, degraded))
        a[f"s{s}"], b[f"s{s}"] = frames_a, frames_b
    return a, b


def _two_models(sequences: int, wrong_pixels_b: int) -> tuple[StreamScores, StreamScores]:
    a, b = _two_model_frames(sequences, wrong_pixels_b)
    return _scores(a), _scores(b)


def test_paired_delta_of_a_model_with_itself_is_zero_with_a_zero_interval():
    a, _ = _two_models(8, 10)
    delta = paired_delta(a, a, "all")
    assert (delta.delta, delta.low, delta.high) == (0.0, 0.0, 0.0)
    assert not delta.separated()


def test_paired_delta_finds_a_gain_only_where_the_frames_differ():
    a, b = _two_models(10, 20)
    degraded = paired_delta(a, b, "degraded")
    assert degraded.delta > 0
    assert degraded.low > 0  # b is worse on every sequence: the interval excludes 0
    assert degraded.separated()
    assert paired_delta(a, b, "clean").delta == 0.0  # identical on clean frames
    # the point delta recomputes mIoU from summed intersections and unions
    assert degraded.delta == pytest.approx(100 * (a.matrix("degraded").miou() - b.matrix("degraded").miou()), abs=0.01)


def test_paired_delta_interval_widens_when_sequences_disagree():
    frames_a, frames_b = _two_model_frames(10, 20)
    # right on half of the sequences, wrong on the other half
    half = {name: (frames_b if i % 2 else frames_a)[name] for i, name in enumerate(frames_a)}
    a, b, mixed = _scores(frames_a), _scores(frames_b), _scores(half)
    consistent, noisy = paired_delta(a, b, "degraded"), paired_delta(a, mixed, "degraded")
    assert noisy.high - noisy.low > consistent.high - consistent.low


def test_paired_delta_refuses_different_frames():
    a, _ = _two_models(4, 10)
    c, _ = _two_models(3, 10)
    with pytest.raises(ValueError, match="same frames"):
        paired_delta(a, c)


def test_stream_scores_round_trip_and_split_by_kind():
    _, b = _two_models(3, 10)
    again = StreamScores.from_arrays(b.to_arrays())
    assert paired_delta(b, again).delta == 0.0
    summary = b.summary(["x", "y", "z"])
    assert summary["miou_clean"] == 1.0
    assert summary["miou_degraded"] < 1.0
    assert set(summary["miou_by_degradation"]) == {"noise"}
    low, high = miou_interval(b, "degraded")
    assert low <= summary["miou_degraded"] <= high


def test_degraded_frames_split_by_whether_the_frame_before_was_clean():
    """A one-frame-back state can only help the first frame of an event: the split that shows it."""
    scores = StreamScores(2)
    right, label = np.zeros(4, int), np.zeros(4, int)
    wrong = np.ones(4, int)
    # sequence a: clean, degraded (first), degraded (later), clean, degraded (first)
    for t, (kind, pred) in enumerate(
        [(None, right), ("noise", right), ("noise", wrong), (None, right), ("blur", right)]
    ):
        scores.update("a", t, kind, pred, label)
    scores.update("b", 0, "glare", wrong, label)  # a stream that starts degraded: no clean frame before it
    assert scores.counts("degraded_first").sum() == 4 * 3  # a#1, a#4, b#0
    assert scores.counts("degraded_later").sum() == 4  # a#2
    assert scores.miou("degraded_later") == 0.0
    np.testing.assert_array_equal(
        scores.counts("degraded"), scores.counts("degraded_first") + scores.counts("degraded_later")
    )
    again = StreamScores.from_arrays(scores.to_arrays())
    np.testing.assert_array_equal(again.counts("degraded_later"), scores.counts("degraded_later"))
