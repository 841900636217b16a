"""The teacher-student Mask R-CNN (Zhao et al. 2022) on torchvision's detection stack."""

from boxmask.model.build import build_model
from boxmask.model.mask_branch import TeacherStudentMaskBranch
from boxmask.model.rcnn import BoxMaskRCNN

__all__ = ["BoxMaskRCNN", "TeacherStudentMaskBranch", "build_model"]
