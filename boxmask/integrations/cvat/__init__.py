"""CVAT: nuclio serverless functions (`serverless`), a cvat-sdk auto-annotation function
(`auto_annotation`), whole-task box-to-mask conversion (`boxes_to_masks`) and its resume journal
(`journal`), and CVAT's mask encodings (`masks`)."""
