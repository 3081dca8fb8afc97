"""Tracking across frames: the tracker as a pure function of (previous people, current people), on known motion."""

from __future__ import annotations

import numpy as np
import pytest

from posecli.engine.track import People, assign_ids, box_iou, boxes_from_keypoints, keypoint_oks
from posecli.layouts import LAYOUTS

SIGMAS = np.asarray(LAYOUTS["coco"].sigmas)
# a standing person's 17 keypoints in a unit box (x right, y down): head, shoulders, elbows, wrists, hips, knees, ankles
BODY = np.array([[0.5, 0.08], [0.45, 0.06], [0.55, 0.06], [0.4, 0.08], [0.6, 0.08], [0.3, 0.22], [0.7, 0.22],
                 [0.22, 0.38], [0.78, 0.38], [0.2, 0.52], [0.8, 0.52], [0.38, 0.55], [0.62, 0.55], [0.37, 0.77],
                 [0.63, 0.77], [0.36, 0.98], [0.64, 0.98]])  # fmt: skip


def person(x: float, y: float, w: float = 60, h: float = 160) -> tuple[np.ndarray, np.ndarray]:
    return BODY * [w, h] + [x, y], np.array([x, y, x + w, y + h], np.float32)


def frame(positions: list[tuple[float, float]], scores: float = 0.9) -> People:
    kpts, boxes = zip(*(person(x, y) for x, y in positions)) if positions else ((), ())
    n = len(positions)
    return People(np.array(kpts).reshape(n, 17, 2), np.full((n, 17), scores), np.array(boxes).reshape(n, 4))


def run(sequence: list[People], match_by: str = "oks") -> list[list[int]]:
    previous, next_id, out = None, 0, []
    for people in sequence:
        people.ids, next_id = assign_ids(previous, people, next_id, match_by, SIGMAS)
        out.append(people.ids.tolist())
        previous = people
    return out


@pytest.mark.parametrize("match_by", ["oks", "iou"])
def test_people_walking_keep_their_ids_newcomers_get_new_ones(match_by):
    # A walks right 8 px a frame, B walks left 6 px a frame (listed in another order each frame);
    # C enters at frame 3; A leaves after frame 4 and its id is not given again.
    sequence = []
    for t in range(7):
        a, b = (100 + 8 * t, 50), (400 - 6 * t, 60)
        people = [b, a] if t % 2 else [a, b]
        if t >= 3:
            people.append((250, 40 + 2 * t))
        if t > 4:
            people = [p for p in people if p != a]
        sequence.append(frame(people))
    ids = run(sequence, match_by)
    assert ids[:3] == [[0, 1], [1, 0], [0, 1]]
    assert ids[3] == [1, 0, 2] and ids[4] == [0, 1, 2]
    assert ids[5] == [1, 2] and ids[6] == [1, 2]  # B and C; A's id 0 is not reused


def test_a_jump_too_far_is_somebody_new():
    ids = run([frame([(100, 50)]), frame([(100, 50)]), frame([(400, 50)])])
    assert ids == [[0], [0], [1]]


def test_two_people_side_by_side_are_not_swapped_by_a_small_step():
    ids = run([frame([(100, 50), (170, 50)]), frame([(104, 50), (174, 50)]), frame([(180, 52), (108, 52)])])
    assert ids == [[0, 1], [0, 1], [1, 0]]


def test_oks_is_one_for_the_same_pose_and_falls_to_box_iou_without_confident_keypoints():
    a = frame([(100, 50)])
    np.testing.assert_allclose(keypoint_oks(a, frame([(100, 50)]), SIGMAS), [[1.0]])
    moved = frame([(110, 50)], scores=0.1)  # no confident keypoints: box IoU (50 / 70 of the width)
    np.testing.assert_allclose(keypoint_oks(a, moved, SIGMAS), box_iou(a.xyxy, moved.xyxy))
    np.testing.assert_allclose(box_iou(a.xyxy, moved.xyxy), [[50 / 70]])


def test_boxes_from_keypoints_grow_the_keypoint_box_by_a_quarter_and_stay_inside():
    people = frame([(100, 50), (600, 300)])
    people.scores[1, :] = 0.1  # second person: no confident keypoints, keeps its box
    boxes = boxes_from_keypoints(people, 640, 420)
    lo, hi = people.keypoints[0].min(0), people.keypoints[0].max(0)
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * 1.25
    np.testing.assert_allclose(boxes[0], [*(centre - half), *(centre + half)], rtol=1e-5)
    np.testing.assert_allclose(boxes[1], [600, 300, 640, 420])  # clipped to the image
