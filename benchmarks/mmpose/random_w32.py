"""Write the random HRNet-w32 that posecli's speed scripts use as an MMPose checkpoint (same keys).

    python benchmarks/mmpose/random_w32.py /tmp/w32_random_mmpose.pth      # in posecli's environment

Both sides then time the very same weights (``posecli.engine.bench.run.random_model``, seed 0).
"""

import sys

import torch

from posecli.engine.bench.run import random_model

net, _ = random_model("hrnet-w32", "coco")
torch.save({"state_dict": net.state_dict()}, sys.argv[1])
print(f"wrote {sys.argv[1]}")
