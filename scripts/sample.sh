#!/usr/bin/env bash
# From a fresh clone to a trained, evaluated and drawn model on the bundled sample, in one command:
#   bash scripts/sample.sh            # minutes on a CPU; everything lands in .venv/ and runs/sample/
# TORCH="torch==2.13.0" is the CPU build; set TORCH to the build that suits your machine (CUDA, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# shellcheck disable=SC1091
source .venv/bin/activate
pip install --quiet "${TORCH:-torch==2.13.0}"
pip install --quiet ".[plot]"
posecli train --preset coco-aic-merge --sample --out runs/sample
posecli eval -w runs/sample/best.safetensors --sample --out runs/sample/eval
posecli predict posecli/sample/coco/000000000785.jpg -w runs/sample/best.safetensors --out runs/sample/predict
echo "done: runs/sample/ (curves.png, eval/metrics.json, predict/)"
