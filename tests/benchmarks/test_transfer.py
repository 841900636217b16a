"""benchmarks/transfer.py: the headline recipe on the transfer split, levers as one change
each, kept runs reused by fingerprint, and tables paired by seed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from boxmask.config import load_config
from tests.benchmarks.ablation import VARIANT_FILES, variant_config
from tests.scripts import load_script

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def transfer():
    yield load_script(BENCHMARKS / "transfer.py", "transfer_benchmark")
    sys.modules.pop("transfer_benchmark", None)


def test_the_headline_split_trains_the_recipe_ablations_pixel_stem_runs(transfer):
    """The same configs as the ablation's …_pixels16 rows: the recipe is the headline's."""
    pairs = {("teacher_student", 0): "clear_v2_ts_fix_headgn128_pixels16",
             ("teacher_student", 2): "clear_v2_ts_fix_headgn128_pixels16_s2",
             ("agnostic", 1): "clear_v2_agnostic_fix_headgn128_pixels16_s1",
             ("oracle", 0): "clear_v2_oracle_headgn128_pixels16"}
    for (method, seed), variant in pairs.items():
        run = transfer.Run(transfer.SPLITS["headline"], method, None, seed)
        ours = load_config(transfer.CONFIG, [*run.overrides(transfer.ROOT / "data"),
                                             "train.output_dir=x"])
        theirs = variant_config(VARIANT_FILES / f"{variant}.yaml", ["train.output_dir=x"])
        assert ours.model_dump() == theirs.model_dump(), variant


def test_transfer_runs_see_the_transfer_split_and_a_lever_changes_one_thing(transfer):
    split = transfer.SPLITS["transfer"]
    runs = transfer.runs_of(split, (0, 1, 2), ["shapes"])
    assert [r.name for r in runs[:3]] == ["transfer_agnostic_s0", "transfer_teacher_student_s0",
                                          "transfer_oracle_s0"]
    assert len(runs) == 9 + 6 and {r.method for r in runs if r.lever} == {"agnostic",
                                                                         "teacher_student"}
    base = transfer.Run(split, "teacher_student", None, 1).overrides(Path("d"))
    lever = transfer.Run(split, "teacher_student", "shapes", 1).overrides(Path("d"))
    assert "data.seen=[disc, triangle, cross, star]" in base and "train.seed=1" in base
    assert [o for o in lever if o not in base] == ["data.random_shapes=0.5"]
    assert all(o in lever for o in base)
    cfg = load_config(transfer.CONFIG, lever)
    assert cfg.data.random_shapes == 0.5 and cfg.model.mask_pixel_channels == 16
    assert cfg.data.train_images.parts[-3:] == ("clear_transfer128", "images", "train")


def test_a_kept_run_is_reused_while_its_fingerprint_holds(transfer, tmp_path, monkeypatch):
    place = transfer.Place(tmp_path / "data", tmp_path / "runs", tmp_path / "kept")
    run = transfer.Run(transfer.SPLITS["transfer"], "oracle", None, 0)
    fp = transfer.fingerprint(run, place, [])
    assert fp == transfer.fingerprint(run, place, ["train.threads=1"])
    assert fp != transfer.fingerprint(run, place, ["train.epochs=2"])
    assert fp != transfer.fingerprint(transfer.Run(run.split, "oracle", None, 1), place, [])
    place.kept.mkdir()
    (place.kept / f"{run.name}.json").write_text(json.dumps({"fingerprint": fp, "run": run.name}))
    assert transfer.run_one(run, place, [])["run"] == run.name  # no training: it is kept
    # A lever the model does not produce the loss of is refused before anything is trained.
    monkeypatch.setattr(transfer, "lever_is_wired", lambda lever, cfg: False)
    lever = transfer.Run(run.split, "agnostic", "shapes", 0)
    assert transfer.run_one(lever, place, []) == {}
    assert not place.runs.exists()


def _result(method: str, lever: str | None, seed: int, unseen: float, slab: float) -> dict:
    box = {"mean_iou": {"seen": 0.4, "unseen": 0.5},
           "by_category": [{"id": 1, "name": "disc", "seen": True, "mean_iou": 0.4},
                           {"id": 5, "name": "slab", "seen": False, "mean_iou": 0.7}]}
    return {"method": method, "lever": lever, "seed": seed, "suffix": "",
            "box_prompted": {"mean_iou": {"seen": 0.7, "unseen": unseen}, "box_baseline": box,
                             "margin_over_box": {"mean_iou": {"unseen": unseen - 0.5},
                                                 "by_category": {"disc": 0.3, "slab": slab - 0.7}}}}


def test_the_tables_pair_methods_and_levers_by_seed(transfer):
    results = []
    for seed, (agn, ts, oracle, ts_shapes) in enumerate([(0.40, 0.50, 0.60, 0.52),
                                                         (0.42, 0.46, 0.62, 0.45),
                                                         (0.44, 0.49, 0.64, 0.50)]):
        results += [_result("agnostic", None, seed, agn, 0.5),
                    _result("teacher_student", None, seed, ts, 0.6 + seed * 0.1),
                    _result("oracle", None, seed, oracle, 0.8),
                    _result("teacher_student", "shapes", seed, ts_shapes, 0.75)]
    text = transfer.table(results)
    lines = text.splitlines()
    assert "| box as mask | 50.0 |  |  |  | 40.0 | |" in lines
    assert "| teacher-student | 48.3 ± 2.1 | 50.0 | 46.0 | 49.0 | 70.0 ± 0.0 | -1.7 |" in lines
    # (ts - agn) / (oracle - agn): 10/20, 4/20, 5/20.
    assert "| teacher-student | 50 % | 20 % | 25 % | 32 % |" in lines
    assert "| teacher-student + shapes | 60 % | 15 % | 30 % | 35 % |" in lines
    assert "| teacher-student + shapes - teacher-student | +2.0 | -1.0 | +1.0 | 2 of 3 seeds |" in lines
    # Unseen categories first; the slab's margins are -10, 0 and +10 for teacher-student.
    assert "| method | slab * | disc |" in lines and "| box as mask | 70.0 | 40.0 |" in lines
    assert "| teacher-student | +0.0 † | +30.0 |" in lines
    assert "| agnostic | -20.0 | +30.0 |" in lines


def test_an_inference_lever_evaluates_its_methods_checkpoint_and_trains_nothing(
        transfer, tmp_path, monkeypatch):
    place = transfer.Place(tmp_path / "data", tmp_path / "runs", tmp_path / "kept")
    split = transfer.SPLITS["transfer"]
    run = transfer.Run(split, "teacher_student", "sfit", 0)
    base = transfer.Run(split, "teacher_student", None, 0)
    # The lever changes inference only: training would be the method's own run.
    assert run.overrides(Path("d")) == base.overrides(Path("d"))
    assert transfer.runs_of(split, (0,), ["sfit"])[-1] == run  # agnostic has nothing to fit
    calls = []

    def fake_evaluate(ckpt, out_dir=None, overrides=(), progress=True, **kw):
        calls.append((Path(ckpt), list(overrides)))
        figures = {"mean_iou": {"seen": 0.7, "unseen": 0.6}}
        return {"segm": {"seen": {"AP": 0.3}, "unseen": {"AP": 0.2}}, "box_prompted": figures}

    import boxmask.evaluation.run as evaluation_run
    monkeypatch.setattr(evaluation_run, "evaluate_checkpoint", fake_evaluate)
    assert transfer.run_one(run, place, ["train.threads=1"]) == {}  # its method has not run
    assert not calls
    base_fp = transfer.fingerprint(base, place, [])
    base_out = place.runs / f"{base.name}_{base_fp[:8]}"
    base_out.mkdir(parents=True)
    (base_out / "checkpoint_last.pt").write_bytes(b"weights")
    place.kept.mkdir()
    (place.kept / f"{base.name}.json").write_text(json.dumps({"fingerprint": base_fp}))
    result = transfer.run_one(run, place, ["train.threads=1"])
    assert calls == [(base_out / "checkpoint_last.pt",
                      ["model.served_mask_fit=box", "train.threads=1"])]
    assert result["lever"] == "sfit" and result["evaluated_from"] == base.name
    assert result["box_prompted"]["mean_iou"]["unseen"] == 0.6
    kept = json.loads((place.kept / f"{run.name}.json").read_text())
    assert kept["fingerprint"] == result["fingerprint"]
    assert transfer.run_one(run, place, []) == kept and len(calls) == 1  # kept: not again
