"""The runtime imports and segments with torch made unimportable (as on a serving machine)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_runtime_works_when_torch_cannot_be_imported(model_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None          # `import torch` now raises ImportError
        sys.modules["torchvision"] = None
        import numpy as np
        import boxmask.runtime
        from boxmask.runtime import Predictor
        from boxmask.runtime import masks, sessions
        from boxmask.runtime.sessions import onnx_runtime
        p = Predictor.from_dir({str(model_dir)!r}, intra_op_threads=1)
        key = p.set_image(np.zeros((40, 50, 3), np.uint8))
        pred = p.predict([[1, 2, 30, 35]], labels=["disc"], key=key)
        assert pred.masks.shape == (1, 40, 50)
        assert len(p.detect(key=key, score_threshold=0.0)) > 0
        masks.to_rle(pred.masks[0]); masks.to_polygons(pred.masks[0]); masks.to_png(pred.masks[0])
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch import was not blocked")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision") and sys.modules[m] is not None)
        assert not loaded, loaded
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
