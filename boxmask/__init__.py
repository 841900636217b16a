"""boxmask: boxes to class-specific instance masks (Zhao et al. 2022, teacher-student mask heads)."""

__version__ = "0.1.0"
