#!/usr/bin/env bash
# One command, under 5 minutes on one GPU: eval parity with the CPU, AMP training steps, inference crops/s per
# precision, the loader with 8 and 16 workers, 2-process NCCL training against 2 micro-batches (with 2 GPUs).
# Writes one JSON (default gpu_check.json; --out FILE). Without CUDA, or with --cpu: the same steps, tiny sizes.
#   benchmarks/gpu_check.sh [--out FILE] [--cpu] [--ddp-on-cpu] [--compile]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "${PYTHON:-python}" "$here/gpu_check.py" "$@"
