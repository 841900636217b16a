"""`boxmask import torchvision`: what it accepts, what it refuses, and what it writes."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from boxmask.config import ConfigError
from boxmask.model.torchvision_import import (
    ARCHS,
    WeightsFileError,
    coco_categories,
    import_torchvision,
    read_state_dict,
)
from tests.torchvision_models import import_overrides, write_torchvision_weights

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def v1_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tv") / "maskrcnn.pth"
    write_torchvision_weights("maskrcnn_resnet50_fpn", path)
    return path


def test_coco_categories_come_from_torchvision_metadata_with_coco_ids():
    for arch in ARCHS:
        cats = coco_categories(arch)
        assert len(cats) == 80
        assert [c["label"] for c in cats] == list(range(1, 81))
        assert cats[0] == {"id": 1, "name": "person", "seen": True, "label": 1}
        assert cats[-1]["id"] == 90 and cats[-1]["name"] == "toothbrush"
        assert "N/A" not in {c["name"] for c in cats}
        assert {c["id"] for c in cats}.isdisjoint({12, 26, 29, 30, 45, 66, 68, 69, 71, 83})


def test_import_writes_a_checkpoint_whose_student_is_cocos_mask_predictor(v1_weights, tmp_path):
    from boxmask.model.checkpoint import load_checkpoint, model_from_checkpoint

    tv = torch.load(v1_weights, weights_only=True)
    import_torchvision(v1_weights, "maskrcnn_resnet50_fpn", tmp_path / "c.pt", import_overrides())
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt["source"]["arch"] == "maskrcnn_resnet50_fpn"
    assert ckpt["source"]["published_metrics"] is None  # not the published file
    model, cats = model_from_checkpoint(ckpt)
    assert model.roi_heads.mask_branch.teacher is None  # an oracle: student only
    sd = model.state_dict()
    # boxmask label l is COCO id cats[l-1]["id"]: the same row of torchvision's 91.
    toothbrush = cats[-1]
    assert torch.equal(sd["roi_heads.mask_branch.student.predictor.mask_fcn_logits.weight"][79],
                       tv["roi_heads.mask_predictor.mask_fcn_logits.weight"][toothbrush["id"]])
    assert torch.equal(sd["roi_heads.box_predictor.cls_score.weight"][80],
                       tv["roi_heads.box_predictor.cls_score.weight"][90])
    assert torch.equal(sd["roi_heads.box_predictor.cls_score.bias"][0],
                       tv["roi_heads.box_predictor.cls_score.bias"][0])
    assert torch.equal(sd["roi_heads.box_predictor.bbox_pred.weight"][4 * 80: 4 * 81],
                       tv["roi_heads.box_predictor.bbox_pred.weight"][4 * 90: 4 * 91])
    assert torch.equal(sd["roi_heads.mask_branch.student.tower.0.0.weight"],
                       tv["roi_heads.mask_head.0.0.weight"])
    assert torch.equal(sd["backbone.body.layer4.2.bn3.running_var"],
                       tv["backbone.body.layer4.2.bn3.running_var"])


def test_the_wrong_arch_is_named_in_the_refusal(v1_weights, tmp_path):
    with pytest.raises(WeightsFileError, match=r"is a maskrcnn_resnet50_fpn state dict.*--arch maskrcnn_resnet50_fpn"):
        import_torchvision(v1_weights, "maskrcnn_resnet50_fpn_v2", tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()


def test_a_truncated_file_is_refused(v1_weights, tmp_path):
    cut = tmp_path / "cut.pth"
    cut.write_bytes(v1_weights.read_bytes()[: 1 << 20])
    with pytest.raises(WeightsFileError, match="truncated or corrupt"):
        read_state_dict(cut)


def test_a_hash_named_file_that_does_not_match_its_hash_is_refused(v1_weights, tmp_path):
    fake = tmp_path / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
    fake.write_bytes(v1_weights.read_bytes())
    with pytest.raises(WeightsFileError, match="its name says bf2d0c1e"):
        read_state_dict(fake)


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path("/nonexistent-boxmask-test/ran"),))


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"backbone.body.conv1.weight": torch.zeros(1), "x": _Payload()}, path)
    with pytest.raises(WeightsFileError, match="could run code: refused"):
        read_state_dict(path)


@pytest.mark.parametrize("obj, message", [
    (torch.zeros(3), "holds a Tensor, not a state dict"),
    ({"a": [1, 2]}, "'a' is not a tensor"),
    ({}, "not a state dict"),
])
def test_what_is_not_a_state_dict_is_refused(tmp_path, obj, message):
    path = tmp_path / "x.pth"
    torch.save(obj, path)
    with pytest.raises(WeightsFileError, match=message):
        read_state_dict(path)


def test_a_plain_pickle_is_not_a_torch_file(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(WeightsFileError):
        read_state_dict(path)


def test_a_faster_rcnn_is_refused_for_lack_of_a_mask_head(tmp_path):
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    path = tmp_path / "frcnn.pth"
    torch.save(fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict(), path)
    with pytest.raises(WeightsFileError, match="Faster R-CNN"):
        import_torchvision(path, "maskrcnn_resnet50_fpn", tmp_path / "c.pt")


def test_a_model_with_other_classes_is_refused(tmp_path):
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    path = tmp_path / "m.pth"
    torch.save(maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=5).state_dict(), path)
    with pytest.raises(WeightsFileError, match="5 outputs, not COCO's 91"):
        import_torchvision(path, "maskrcnn_resnet50_fpn", tmp_path / "c.pt")


def test_a_damaged_state_dict_names_the_keys(v1_weights, tmp_path):
    state = torch.load(v1_weights, weights_only=True)
    del state["backbone.fpn.layer_blocks.0.0.weight"]
    state["rpn.head.conv.0.0.weight"] = torch.zeros(3, 3)
    path = tmp_path / "damaged.pth"
    torch.save(state, path)
    with pytest.raises(WeightsFileError, match=r"missing 1 keys \(backbone.fpn.layer_blocks.0.0.weight.*shapes differ"):
        import_torchvision(path, "maskrcnn_resnet50_fpn", tmp_path / "c.pt")


def test_architecture_settings_cannot_be_overridden(v1_weights, tmp_path):
    with pytest.raises(WeightsFileError, match="box_head cannot be changed"):
        import_torchvision(v1_weights, "maskrcnn_resnet50_fpn", tmp_path / "c.pt", {"box_head": "conv"})


def test_the_cli_refuses_with_a_message_and_no_traceback(v1_weights, tmp_path):
    from typer.testing import CliRunner

    from boxmask.cli import app

    r = CliRunner().invoke(app, ["import", "torchvision", str(v1_weights), "--arch",
                                 "maskrcnn_resnet50_fpn_v2", "--out", str(tmp_path / "c.pt")])
    assert r.exit_code == 2
    assert "pass --arch maskrcnn_resnet50_fpn" in " ".join(r.output.split())
    assert "Traceback" not in r.output
    r = CliRunner().invoke(app, ["import", "torchvision", str(v1_weights), "--arch", "resnet",
                                 "--out", str(tmp_path / "c.pt")])
    assert r.exit_code == 2 and "choose maskrcnn_resnet50_fpn" in r.output


def test_resuming_an_imported_checkpoint_points_to_init_from(v1_weights, tmp_path, tiny_dataset):
    from boxmask.config import load_config
    from boxmask.training.trainer import train
    from tests.conftest import TINY_CONFIG

    import_torchvision(v1_weights, "maskrcnn_resnet50_fpn", tmp_path / "c.pt")
    d = tiny_dataset
    cfg = load_config(TINY_CONFIG, [f"data.train_annotations={d / 'annotations' / 'instances_train.json'}",
                                    f"data.train_images={d / 'images' / 'train'}",
                                    f"train.output_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match=r"model\.init_from="):
        train(cfg, resume=tmp_path / "c.pt")


@pytest.mark.parametrize("arch, heads", [
    ("maskrcnn_resnet50_fpn", []),
    ("maskrcnn_resnet50_fpn_v2", ["model.rpn_conv_depth=2", "model.box_head=conv", "model.head_norm=bn"]),
])
def test_the_worked_finetune_config_fits_an_imported_checkpoint(arch, heads, tmp_path):
    """configs/finetune_coco_r50.yaml (with the v2 keys its header names, for v2) builds a
    teacher-student model that init_from fills from the imported checkpoint: nothing misfits,
    the teacher comes from COCO's mask head, a new category gets fresh rows."""
    from boxmask.config import load_config
    from boxmask.model import build_model
    from boxmask.model.checkpoint import load_checkpoint
    from boxmask.model.init_from import init_from_checkpoint
    from tests.conftest import REPO

    write_torchvision_weights(arch, tmp_path / "w.pth")
    import_torchvision(tmp_path / "w.pth", arch, tmp_path / "coco.pt")
    cfg = load_config(REPO / "configs" / "finetune_coco_r50.yaml",
                      [f"model.init_from={tmp_path / 'coco.pt'}", *heads])
    cats = [{"id": 1, "name": "person", "label": 1, "seen": True},
            {"id": 2, "name": "forklift", "label": 2, "seen": False}]
    model = build_model(cfg.model, len(cats), {1})
    report = init_from_checkpoint(model, cats, load_checkpoint(tmp_path / "coco.pt"))
    assert report.matched == {"person": "person"} and report.new == ["forklift"]
    assert not report.fresh and len(report.unused) == 79
    assert any(k.startswith("roi_heads.mask_branch.teacher.") for k in report.derived)
