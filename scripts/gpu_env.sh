# Sourced by the scripts/gpu_*.sh runners on the device machine, with PY and OUT set: installs
# what the GPU image lacks from .gpu-wheels (pip download --only-binary=:all: --python-version
# 3.12) and records the environment in $OUT/env.txt.
if [ -d .gpu-wheels ]; then
  $PY -m pip install -q --no-index --no-deps --find-links .gpu-wheels pycocotools pydantic \
    pydantic-core annotated-types typing-inspection rich markdown-it-py mdurl pygments pyyaml \
    2>&1 | tail -3
fi
export PYTHONPATH=$PWD
$PY -c "import torch, torchvision, cv2, PIL, pycocotools, pydantic; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" 2>&1 | tee "$OUT/env.txt"
nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null | tee -a "$OUT/env.txt"
