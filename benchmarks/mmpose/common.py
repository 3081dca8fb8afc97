"""Shared by the MMPose timing scripts: MMPose's own HRNet-w32 256x192 config and posecli's sample data.

These scripts run in a separate environment with MMPose 1.3.2 installed (see README.md),
never in posecli's: they time MMPose itself on this machine, for the ratios in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")  # MMPose and mmengine warn on every import and call

import mmpose  # noqa: E402
import numpy as np  # noqa: E402
from mmengine.config import Config  # noqa: E402

CONFIG = "body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py"
SAMPLE = Path(__file__).resolve().parents[2] / "posecli" / "sample" / "coco"


def config(flip: bool = True) -> Config:
    """The installed config of MMPose's COCO HRNet-w32 row, without the ImageNet weights it would download."""
    cfg = Config.fromfile(str(Path(mmpose.__file__).parent / ".mim" / "configs" / CONFIG))
    cfg.model.backbone.init_cfg = None
    cfg.model.test_cfg.flip_test = flip
    return cfg


def sample_boxes() -> dict[str, np.ndarray]:
    """{image path: (N, 4) float32 xyxy} of the bundled detector boxes (118 on 4 images)."""
    images = {im["id"]: str(SAMPLE / im["file_name"]) for im in json.loads((SAMPLE / "test_coco.json").read_text())["images"]}
    boxes: dict[str, list] = {}
    for d in json.loads((SAMPLE / "test_coco_det_AP_H_56.json").read_text()):
        x, y, w, h = d["bbox"]
        boxes.setdefault(images[d["image_id"]], []).append([x, y, x + w, y + h])
    return {path: np.array(b, np.float32) for path, b in boxes.items()}


def train_dataset(cfg: Config):
    """MMPose's CocoDataset with the config's train pipeline on the bundled COCO sample."""
    from mmengine.registry import init_default_scope
    from mmpose.datasets import CocoDataset

    init_default_scope("mmpose")
    return CocoDataset(ann_file=str(SAMPLE / "test_coco.json"), data_root="", data_mode="topdown",
                       data_prefix=dict(img=str(SAMPLE) + "/"), pipeline=cfg.train_pipeline, test_mode=False)
