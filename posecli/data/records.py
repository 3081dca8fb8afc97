"""One policy for bad records in annotation files, detection files and AIC's raw release.

A check returns a ``Problem`` (what is wrong with one record, and a short reason for counts)
or None; the caller names the record (file, annotation id, image id or entry index) and
applies the policy:

    ground truth (annotations, raw AIC)  refused with a ``UserError`` naming the file and the
        record: a bad value would crash COCOeval or silently move AP and training targets
    detector boxes                       skipped and counted in ``Skips``: one warning line

Bad means: a non-finite number (JSON's NaN, Infinity, or 1e999), a wrong count, a wrong
type (a string, null, a nested list), a box with no positive width and height, a box
outside its image. Nothing that fails these checks is ever written out.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field

COCO_VISIBILITY = {0: "unlabelled", 1: "occluded", 2: "visible"}
SHOWN = 3  # skipped records named in a warning
AREA_PER_BOX_AREA = 0.53  # MMPose's stand-in for a missing segmented area (xtcocotools' too, in OKS)
# Reasons of box problems: callers treat them differently (ground-truth boxes that are merely empty are MMPose's to drop).
NEGATIVE, EMPTY, OUTSIDE = "box with a negative width or height", "box with no width or height", "box outside the image"
GROUND_TRUTH_FIX = ("fix or remove the record: ground truth with such a value would crash the evaluation or silently "
                    "change AP and training (remapping the file with invalid records skipped writes a clean copy: "
                    "writes a copy without the bad records)")  # fmt: skip


@dataclass(frozen=True)
class Problem:
    detail: str  # for the message: "keypoints[7] is NaN, expected a finite number"
    reason: str  # for skip counts: "non-finite keypoints"


def json_type(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def show(value, limit: int = 60) -> str:
    """A value as JSON writes it (NaN, Infinity, null, "text"), cut to ``limit`` characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value) -> str:
    """'a string ("12")', 'null', 'a list ([1, 2])'."""
    return "null" if value is None else f"{json_type(value)} ({show(value, 30)})"


def _finite(x) -> bool:
    try:
        return math.isfinite(x)
    except OverflowError:  # an integer beyond float range
        return False


def numbers(values, n: int, what: str) -> Problem | None:
    """None if ``values`` is a list of ``n`` finite numbers, else what it is instead."""
    reason = f"{what} not {n} numbers"
    if type(values) is not list:
        return Problem(f"{what} is {json_type(values)}, expected a list of {n} numbers", reason)
    if len(values) != n:
        return Problem(f"{what} is a list of {len(values)} values, expected {n} numbers", reason)
    try:
        total = sum(values)  # C-fast, and fails on strings, null and lists
    except TypeError:
        i, v = next((i, v) for i, v in enumerate(values) if not isinstance(v, (int, float)))
        return Problem(f"{what}[{i}] is {_kind(v)}, expected a number", reason)
    if not _finite(total):
        bad = next(((i, v) for i, v in enumerate(values) if not _finite(v)), None)
        if bad is not None:  # (else only the sum overflowed)
            return Problem(f"{what}[{bad[0]}] is {show(bad[1])}, expected a finite number", f"non-finite {what}")
    return None


def number(value, what: str, minimum: float | None = None, above: float | None = None) -> Problem | None:
    """None if ``value`` is a finite number (>= ``minimum``, > ``above``), else what it is instead."""
    if type(value) is bool or not isinstance(value, (int, float)):
        return Problem(f"{what} is {_kind(value)}, expected a number", f"{what} not a number")
    if not _finite(value):
        return Problem(f"{what} is {show(value)}, expected a finite number", f"non-finite {what}")
    if (minimum is not None and value < minimum) or (above is not None and value <= above):
        bound = f">= {minimum}" if minimum is not None else f"> {above}"
        return Problem(f"{what} is {show(value)}, expected a number {bound}", f"{what} out of range")
    return None


def keypoints(values, names: tuple[str, ...], visibility: dict[int, str] = COCO_VISIBILITY) -> Problem | None:
    """None if ``values`` is K (x, y, v) triples of finite numbers with v among ``visibility``'s keys."""
    problem = numbers(values, 3 * len(names), "keypoints")
    if problem:
        return Problem(f"{problem.detail} (x, y, visibility for each of {len(names)} keypoints)", problem.reason)
    allowed = visibility.keys()
    if not allowed >= set(values[2::3]):
        k, v = next((k, v) for k, v in enumerate(values[2::3]) if v not in allowed)
        expected = ", ".join(f"{key} ({meaning})" for key, meaning in visibility.items())
        return Problem(f"visibility {show(v)} at keypoint {names[k]}, expected {expected}", f"visibility outside {min(allowed)}-{max(allowed)}")
    return None


def box_xywh(bbox, what: str = "bbox", image_size: tuple[float, float] | None = None) -> Problem | None:
    """None if ``bbox`` is [x, y, w, h] of finite numbers with w, h > 0 (overlapping the image, if its (W, H) is given)."""
    problem = numbers(bbox, 4, what)
    if problem:
        return problem
    x, y, w, h = bbox
    if w < 0 or h < 0:
        return Problem(f"{what} [x, y, w, h] = {show(bbox)} has a negative width or height", NEGATIVE)
    if w == 0 or h == 0:
        return Problem(f"{what} [x, y, w, h] = {show(bbox)} has no width or height", EMPTY)
    if image_size is not None and (x >= image_size[0] or y >= image_size[1] or x + w <= 0 or y + h <= 0):
        return Problem(f"{what} [x, y, w, h] = {show(bbox)} lies outside the {image_size[0]}x{image_size[1]} image", OUTSIDE)
    return None


def identifier(value, what: str) -> Problem | None:
    """None if ``value`` is an integer, as COCO's image and annotation ids are (evaluation sorts and indexes by them)."""
    if type(value) is not int:
        return Problem(f"{what} is {_kind(value)}, expected an integer", f"{what} not an integer")
    return None


def image_record(img) -> Problem | None:
    """None if a COCO image record has an id, a file_name string and a positive width and height."""
    if not isinstance(img, dict):
        return Problem(f"is {json_type(img)}, expected an object with id, file_name, width and height", "malformed image")
    missing = [k for k in ("id", "file_name", "width", "height") if k not in img]
    if missing:
        return Problem(f"has no {' or '.join(missing)} (needs id, file_name, width and height)", "malformed image")
    if type(img["file_name"]) is not str:
        return Problem(f"file_name is {json_type(img['file_name'])}, expected a string", "malformed image")
    return identifier(img["id"], "id") or number(img["width"], "width", above=0) or number(img["height"], "height", above=0)


def non_finite(value) -> str | None:
    """Where a JSON value (objects, lists, numbers) holds NaN or an infinity, as '.bbox[2]'; None if nowhere."""
    if type(value) is float:
        return None if math.isfinite(value) else ""
    if type(value) is list:
        try:
            if _finite(sum(value)):  # all numbers, all finite: the common case, C-fast
                return None
        except TypeError:
            pass
        for i, v in enumerate(value):
            where = non_finite(v)
            if where is not None:
                return f"[{i}]{where}"
    elif type(value) is dict:
        for k, v in value.items():
            where = non_finite(v)
            if where is not None:
                return f".{k}{where}"
    return None


@dataclass
class Skips:
    """Records skipped under the lenient policy (detector boxes): counted by reason, the first few named."""

    source: str  # the file
    kind: str  # what the records are: "detector boxes"
    consequence: str = ""  # said after the list: "their persons count as missed"
    total: int | None = None  # records of this kind in the file, if known
    named: list[str] = field(default_factory=list)
    reasons: Counter = field(default_factory=Counter)

    def add(self, record: str, problem: Problem) -> None:
        self.reasons[problem.reason] += 1
        if len(self.named) < SHOWN:
            self.named.append(f"{record}: {problem.detail}")

    def __len__(self) -> int:
        return sum(self.reasons.values())

    def extend(self, other: "Skips") -> None:
        self.reasons += other.reasons
        self.named += other.named[: SHOWN - len(self.named)]

    def summary(self, total: int | None = None) -> str | None:
        """One line: '<file>: skipped 3 of 118 <kind> (2 non-finite bbox, 1 ...): entry 4: ...; ...', or None."""
        if not self.reasons:
            return None
        why = ", ".join(f"{n} {reason}" for reason, n in self.reasons.most_common())
        more = "; ..." if len(self) > len(self.named) else ""
        total = self.total if total is None else total
        of = f" of {total}" if total is not None else ""
        after = f". {self.consequence}" if self.consequence else ""
        return f"{self.source}: skipped {len(self)}{of} {self.kind} ({why}): {'; '.join(self.named)}{more}{after}"
