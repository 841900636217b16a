"""`CvatSettings`: what the CVAT functions are told, read from the environment in one place.

The nuclio functions (`deploy/cvat/*/function.yaml` sets their environment) and the cvat-sdk
auto-annotation function read the same variables, once, here:

- `BOXMASK_MODEL_DIR`: the exported model directory (a nuclio function's default:
  `/opt/nuclio/model`, where function.yaml copies it);
- `BOXMASK_TRITON_URL`: run the graphs on this Triton server instead of in-process;
- `BOXMASK_PRECISION` (fp32), `BOXMASK_CACHE_BYTES` (256 MB): the predictor's;
- `BOXMASK_SCORE_THRESHOLD` (0.5): the detector's, when CVAT sends none;
- `BOXMASK_CVAT_INTERACTOR_REPLY` (`shapes`; `mask` answers CVAT 2.59 and older).

Plain Python (no pydantic-settings): a function's image installs the torch-free runtime only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from boxmask.runtime import Predictor, PredictorOptions
from boxmask.runtime.options import Precision

#: Where a nuclio function's model is when `BOXMASK_MODEL_DIR` does not say.
NUCLIO_MODEL_DIR = "/opt/nuclio/model"


@dataclass(frozen=True)
class CvatSettings:
    model_dir: str | None = None
    triton_url: str | None = None
    precision: Precision = "fp32"
    cache_bytes: int = 256 << 20
    score_threshold: float = 0.5
    interactor_reply: Literal["shapes", "mask"] = "shapes"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **given: Any) -> CvatSettings:
        """The settings of `environ` (default: this process's environment); `given` values
        that are not None win over it (a cvat-cli `-p name=type:value` parameter)."""
        env = os.environ if environ is None else environ
        read = cls(
            model_dir=env.get("BOXMASK_MODEL_DIR") or None,
            triton_url=env.get("BOXMASK_TRITON_URL") or None,
            precision=env.get("BOXMASK_PRECISION", "fp32"),  # type: ignore[arg-type]
            cache_bytes=int(env.get("BOXMASK_CACHE_BYTES", str(256 << 20))),
            score_threshold=float(env.get("BOXMASK_SCORE_THRESHOLD", "0.5")),
            interactor_reply=env.get("BOXMASK_CVAT_INTERACTOR_REPLY",  # type: ignore[arg-type]
                                     "shapes"))
        return dataclasses.replace(read, **{k: v for k, v in given.items() if v is not None})

    def predictor_options(self) -> PredictorOptions:
        return PredictorOptions(backend="triton" if self.triton_url else "onnxruntime",
                                triton_url=self.triton_url, precision=self.precision,
                                cache_bytes=self.cache_bytes)

    def load_predictor(self, default_model_dir: str | None = None) -> Predictor:
        """The predictor of `model_dir` (else `default_model_dir`); `ValueError` without one."""
        model_dir = self.model_dir or default_model_dir
        if not model_dir:
            raise ValueError("no model: pass -p model_dir=str:/path/to/exported_model or set "
                             "BOXMASK_MODEL_DIR")
        return Predictor.from_dir(model_dir, self.predictor_options())
