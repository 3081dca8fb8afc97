"""Write a real MMPose training checkpoint, and its published form, for posecli's weights tests.

Runs in the MMPose 1.3.2 environment (never posecli's; see README.md):

    python -W ignore benchmarks/mmpose/make_training_checkpoint.py

MMPose's own COCO HRNet-w32 config, shrunk to the reference's tiny HRNet (hrnet_small_coco17,
tests/data/reference), is fine-tuned from that reference by mmengine's Runner for one epoch
(2 iterations of batch 8 on the 12 instances of the COCO sample, CPU), validated with
CocoMetric and saved as a user's ``work_dirs/`` holds it: ``epoch_1.pth`` with ``meta``,
``state_dict``, ``message_hub`` (mmengine HistoryBuffer objects, numpy scalars), ``optimizer``
(Adam) and ``param_schedulers``. The backbone is frozen (``frozen_stages=4``) so that Adam
keeps moments for the head only and the file stays near 1 MB; its keys are those of any HRNet
checkpoint. The published form keeps ``meta`` and ``state_dict`` in torch's legacy (non-zip)
format, as MMPose's ``tools/misc/publish_model.py`` writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from common import SAMPLE, config  # MMPose side: silences its warnings on import

# mmengine 0.10.7 predates torch 2.6's weights_only default and cannot read MMPose's own
# checkpoints (numpy arrays in meta) without it; every file read here is MMPose's own.
os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "data" / "mmpose_ckpt"
INIT = REPO / "tests" / "data" / "reference" / "hrnet_small_coco17.pth"
# The reference's tiny HRNet (tests/data/reference/README.md): w32's layout with 8-64 channels, one block each.
SMALL_EXTRA = dict(
    stage1=dict(num_modules=1, num_branches=1, block="BOTTLENECK", num_blocks=(1,), num_channels=(32,)),
    stage2=dict(num_modules=1, num_branches=2, block="BASIC", num_blocks=(1, 1), num_channels=(8, 16)),
    stage3=dict(num_modules=1, num_branches=3, block="BASIC", num_blocks=(1, 1, 1), num_channels=(8, 16, 32)),
    stage4=dict(num_modules=1, num_branches=4, block="BASIC", num_blocks=(1, 1, 1, 1), num_channels=(8, 16, 32, 64)),
)


def training_config(data: Path, init: Path, work_dir: Path) -> Config:
    """MMPose's w32 COCO config with the tiny backbone, local data, one epoch and its own checkpointing."""
    cfg = config(flip=True)
    cfg.work_dir, cfg.load_from, cfg.randomness = str(work_dir), str(init), dict(seed=0)
    cfg.model.backbone.extra = SMALL_EXTRA
    cfg.model.backbone.frozen_stages = 4
    cfg.model.head.in_channels = 8
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
    cfg.optim_wrapper.optimizer.lr = 0.01  # two steps that move the head enough to change AP
    cfg.param_scheduler = [  # the reference's warm-up; MultiStepLR at the end of the epoch
        dict(type="LinearLR", begin=0, end=50, start_factor=0.1, by_epoch=False),
        dict(type="MultiStepLR", begin=0, end=1, milestones=[1], gamma=0.3, by_epoch=True),
    ]
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 1  # the config's CheckpointHook: optimizer, schedulers, best AP
    for loader, batch in ((cfg.train_dataloader, 8), (cfg.val_dataloader, 32)):
        loader.update(batch_size=batch, num_workers=0, persistent_workers=False)
        loader.dataset.update(data_root=str(data), ann_file="test_coco.json", data_prefix=dict(img=""))
    cfg.val_dataloader.dataset.bbox_file = None  # ground-truth boxes: a quick validation
    cfg.val_evaluator.ann_file = str(data / "test_coco.json")
    cfg.test_dataloader, cfg.test_evaluator, cfg.test_cfg = None, None, None
    return cfg


def publish(raw: Path, out: Path) -> None:
    """Keep ``meta`` and ``state_dict``; legacy serialisation, as MMPose's publish script writes."""
    ckpt = torch.load(raw, map_location="cpu", weights_only=False)  # MMPose's own file, in MMPose's env
    torch.save({k: ckpt[k] for k in ("meta", "state_dict")}, out, _use_new_zipfile_serialization=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SAMPLE, help="folder with test_coco.json and its images")
    ap.add_argument("--init", type=Path, default=INIT, help="the weights to fine-tune")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner.from_cfg(training_config(args.data.resolve(), args.init.resolve(), Path(tmp)))
        runner.train()
        raw = Path(tmp) / "epoch_1.pth"
        shutil.copyfile(raw, args.out / "epoch_1.pth")
        publish(raw, args.out / "epoch_1_published.pth")
        best = sorted(Path(tmp).glob("best_*.pth"))
        print("Runner wrote:", sorted(p.name for p in Path(tmp).glob("*.pth")))
        # The weights saved in epoch_1.pth, evaluated by MMPose again (GT boxes, flip test): posecli's target.
        metrics = {k: float(v) for k, v in runner.val().items()}
    (args.out / "mmpose_val_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(metrics)
    ckpt = torch.load(args.out / "epoch_1.pth", map_location="cpu", weights_only=False)  # written just now, by MMPose
    print("raw keys:", sorted(ckpt), "| message_hub:", sorted(ckpt["message_hub"]), "| best:", [p.name for p in best])
    for name in ("epoch_1.pth", "epoch_1_published.pth"):
        print(f"{args.out / name}: {(args.out / name).stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
