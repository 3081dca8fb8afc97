#!/usr/bin/env bash
# A side environment with MMPose 1.3.2 on CPU torch 2.13.0, to time MMPose on this machine.
#   bash benchmarks/mmpose/setup.sh /tmp/mmpose-venv
# Nothing here is compiled; two packages need a small fix to import (see README.md).
set -euo pipefail
venv="${1:?usage: setup.sh VENV_DIR}"
python3 -m venv "$venv"
# shellcheck disable=SC1091
source "$venv/bin/activate"
pip install --quiet torch==2.13.0
pip install --quiet torch==2.13.0 torchvision==0.28.0 numpy==1.26.4 'opencv-python<4.12' mmengine==0.10.7 \
    xtcocotools==1.14.3 json_tricks munkres matplotlib scipy pillow six 'setuptools>=77.0.3,<81'
pip install --quiet --no-deps mmcv-lite==2.1.0 mmdet==3.2.0 mmpose==1.3.2
site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# mmcv-lite has no compiled ops, but mmpose imports mmcv.ops at import time (for heads the
# top-down HRNet never uses): a module whose every op raises if called.
cat > "$site/mmcv/_ext.py" <<'PY'
def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def missing(*args, **kwargs):
        raise NotImplementedError(f"mmcv._ext.{name}: mmcv-lite has no compiled ops")

    return missing
PY
# PyPI's torchvision is a CUDA build whose C++ ops cannot load beside CPU torch; 0.28 then fails
# at import on two fake-kernel registrations for those ops: register them only when the ops exist.
sed -i -E 's|^@torch.library.register_fake\("torchvision::(q?nms)"\)$|@(torch.library.register_fake("torchvision::\1") if torchvision.extension._has_ops() else (lambda f: f))|' \
    "$site/torchvision/_meta_registrations.py"
python -W ignore -c "import mmpose.apis, mmpose; print('mmpose', mmpose.__version__, 'ready in', '$venv')"
