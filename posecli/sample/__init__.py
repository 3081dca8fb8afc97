"""The bundled sample: 4 COCO val2017 images and 3 AIC images with their annotations.

Used by ``--sample`` (train, eval), the pipeline benchmark and the tests; it ships inside the package.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent
COCO_IMAGES = ROOT / "coco"
COCO_ANN = COCO_IMAGES / "test_coco.json"
COCO_DET = COCO_IMAGES / "test_coco_det_AP_H_56.json"  # MMPose's boxes from a detector with human AP 56.4
AIC_IMAGES = ROOT / "aic"
AIC_ANN = AIC_IMAGES / "test_aic.json"
