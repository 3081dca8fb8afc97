"""Keypoint layouts as data, and mappings between layouts by keypoint name.

A layout is everything that depends on *which* keypoints a model predicts:
names, OKS sigmas, skeleton links and drawing colours. Flip pairs are derived
from the names (``left_x`` <-> ``right_x``), so they can never disagree with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

# Drawing colours (RGB), as in MMPose's dataset files: left side green, right side orange.
LEFT, RIGHT, CENTRE = (0, 255, 0), (255, 128, 0), (51, 153, 255)


@dataclass(frozen=True)
class Layout:
    name: str
    keypoints: tuple[str, ...]
    sigmas: tuple[float, ...]  # OKS sigmas, one per keypoint
    skeleton: tuple[tuple[str, str], ...]  # links by keypoint name
    upper_body: tuple[str, ...]  # for the half-body augmentation
    coco_category: str = "person"

    def __post_init__(self):
        if len(self.sigmas) != len(self.keypoints):
            raise ValueError(f"layout {self.name}: {len(self.sigmas)} sigmas for {len(self.keypoints)} keypoints")
        unknown = {n for link in self.skeleton for n in link} - set(self.keypoints)
        if unknown:
            raise ValueError(f"layout {self.name}: skeleton names unknown keypoints {sorted(unknown)}")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    def index(self, name: str) -> int:
        return self.keypoints.index(name)

    @cached_property
    def flip_indices(self) -> tuple[int, ...]:
        """flip_indices[k] = the keypoint that k becomes in a mirrored image."""
        out = []
        for name in self.keypoints:
            if name.startswith("left_"):
                partner = "right_" + name[5:]
            elif name.startswith("right_"):
                partner = "left_" + name[6:]
            else:
                partner = name
            out.append(self.index(partner))
        return tuple(out)

    @cached_property
    def upper_body_ids(self) -> tuple[int, ...]:
        return tuple(i for i, n in enumerate(self.keypoints) if n in self.upper_body)

    @cached_property
    def lower_body_ids(self) -> tuple[int, ...]:
        return tuple(i for i, n in enumerate(self.keypoints) if n not in self.upper_body)

    @cached_property
    def skeleton_ids(self) -> tuple[tuple[int, int], ...]:
        return tuple((self.index(a), self.index(b)) for a, b in self.skeleton)

    def colour(self, name: str) -> tuple[int, int, int]:
        """RGB colour of a keypoint: by side."""
        return LEFT if name.startswith("left_") else RIGHT if name.startswith("right_") else CENTRE

    def link_colour(self, a: str, b: str) -> tuple[int, int, int]:
        """A link is coloured by its side when both ends share it, else as a centre link."""
        ca, cb = self.colour(a), self.colour(b)
        return ca if ca == cb else CENTRE

    def coco_category_dict(self) -> dict:
        """The COCO ``categories`` entry for this layout (skeleton 1-based, as COCO)."""
        return {
            "supercategory": "person",
            "id": 1,
            "name": self.coco_category,
            "keypoints": list(self.keypoints),
            "skeleton": [[a + 1, b + 1] for a, b in self.skeleton_ids],
        }


COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
# COCO's standard OKS sigmas (cocoapi).
COCO_SIGMAS = (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
               0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089)  # fmt: skip
COCO_SKELETON = (
    ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
    ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"),
    ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"),
    ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"), ("left_eye", "right_eye"),
    ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
    ("right_eye", "right_ear"), ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
)  # fmt: skip
COCO_UPPER = COCO_KEYPOINTS[:11]

# AI Challenger's order, as in its raw release and MMPose's aic_train.json.
AIC_KEYPOINTS = (
    "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "head_top", "neck",
)  # fmt: skip
# From AI Challenger's official keypoint_eval.py (delta = 2 * sigma there).
AIC_SIGMAS = (0.01388152, 0.01515228, 0.01057665, 0.01417709, 0.01497891, 0.01402144,
              0.03909642, 0.03686941, 0.01981803, 0.03843971, 0.03412318, 0.02415081,
              0.01291456, 0.01236173)  # fmt: skip
AIC_SKELETON = (
    ("right_wrist", "right_elbow"), ("right_elbow", "right_shoulder"), ("right_shoulder", "neck"),
    ("neck", "left_shoulder"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("right_ankle", "right_knee"), ("right_knee", "right_hip"), ("right_hip", "left_hip"),
    ("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("head_top", "neck"),
    ("right_shoulder", "right_hip"), ("left_shoulder", "left_hip"),
)  # fmt: skip

LAYOUTS: dict[str, Layout] = {
    "coco": Layout("coco", COCO_KEYPOINTS, COCO_SIGMAS, COCO_SKELETON, COCO_UPPER),
    "aic": Layout(
        "aic", AIC_KEYPOINTS, AIC_SIGMAS, AIC_SKELETON,
        upper_body=AIC_KEYPOINTS[:6] + ("head_top", "neck"),
    ),
    # COCO 17 + AIC head_top and neck; MMPose gives both the sigma of the nose.
    "coco-aic": Layout(
        "coco-aic", COCO_KEYPOINTS + ("head_top", "neck"), COCO_SIGMAS + (0.026, 0.026),
        COCO_SKELETON + (("head_top", "neck"),), COCO_UPPER + ("head_top", "neck"),
    ),
}  # fmt: skip


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown keypoint layout {name!r}; known: {', '.join(LAYOUTS)}") from None


def keypoint_names(names: list) -> tuple[str, ...]:
    """Category keypoint names in layout spelling: MMPose's aic_train.json says "Right Shoulder", "Head top"."""
    return tuple(str(n).strip().lower().replace(" ", "_") for n in names)


def layout_from_names(names: list[str] | tuple[str, ...]) -> Layout:
    """Recognise a layout from a COCO category's keypoint names (in any spelling ``keypoint_names`` accepts)."""
    names = keypoint_names(names)
    for layout in LAYOUTS.values():
        if names == layout.keypoints:
            return layout
    raise ValueError(f"keypoint names {list(names)[:4]}... ({len(names)}) match no known layout ({', '.join(LAYOUTS)})")


@dataclass(frozen=True)
class Mapping:
    """How each target keypoint is made from source keypoints.

    ``sources[t]`` lists the source indices whose mean gives target keypoint t;
    an empty tuple leaves the target unlabelled (visibility 0).
    """

    source: Layout
    target: Layout
    sources: tuple[tuple[int, ...], ...] = field(repr=False)

    def apply(self, keypoints: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, Ks, 2) coords and (N, Ks) visibility -> (N, Kt, 2), (N, Kt).

        A target made from several sources is labelled only when all of them are;
        its visibility is then the smallest of theirs.
        """
        n = keypoints.shape[0]
        out_kpts = np.zeros((n, self.target.num_keypoints, 2), dtype=keypoints.dtype)
        out_vis = np.zeros((n, self.target.num_keypoints), dtype=visible.dtype)
        for t, src in enumerate(self.sources):
            if not src:
                continue
            idx = list(src)
            vis = visible[:, idx].min(axis=1)
            labelled = vis > 0
            out_kpts[:, t] = np.where(labelled[:, None], keypoints[:, idx].mean(axis=1), 0)
            out_vis[:, t] = np.where(labelled, vis, 0)
        return out_kpts, out_vis


def make_mapping(source: str | Layout, target: str | Layout, averages: dict[str, tuple[str, ...]] | None = None) -> Mapping:
    """Map keypoints with the same name; ``averages`` adds targets made as a mean of sources.

    >>> make_mapping("coco", "aic", {"neck": ("left_shoulder", "right_shoulder")})
    """
    src = source if isinstance(source, Layout) else get_layout(source)
    tgt = target if isinstance(target, Layout) else get_layout(target)
    averages = averages or {}
    sources = []
    for name in tgt.keypoints:
        if name in averages:
            sources.append(tuple(src.index(s) for s in averages[name]))
        elif name in src.keypoints:
            sources.append((src.index(name),))
        else:
            sources.append(())
    return Mapping(src, tgt, tuple(sources))
