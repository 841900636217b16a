"""Print the teacher curve: one line per kept pseudo_mask_quality.py result in this folder.

    python benchmarks/results/teacher_curve/show.py

Each JSON is `python benchmarks/pseudo_mask_quality.py <run>/checkpoint_epochNNN.pt --split
{val,train} --images {100,60} --by-category --json ...` on an epoch checkpoint of the recipe
ablation's runs clear_v2_ts_fix_headgn128_12ep_curve, _mnv3, _holes, clear_v2_ts_box_headgn128
and clear_v2_ts_fix_headgn128_pixels16_12ep_curve (the pixels16_* files)
(x100, IoU on the 28x28 grid with each true box as the RoI; unseen: box, cleaned box, teacher,
cleaned threshold pseudo-mask, student; per shape teacher/student).
"""
import json
from pathlib import Path


def _cell(r: dict, k: str) -> str:
    return "" if r.get(k) is None else f"{100 * r[k]:.1f}"


for f in sorted(Path(__file__).resolve().parent.glob("*.json")):
    r = json.loads(f.read_text())[0]
    tag = f.stem

    def g(k: str, r: dict = r) -> str:
        return _cell(r, k)

    c = r["by_category"]
    cat = " ".join(f"{n}:{100 * c[n]['teacher']:.0f}/{100 * (c[n]['student'] or 0):.0f}"
                   for n in ("ring", "star", "crescent", "hexagon"))
    print(f"{tag:32s} unseen: box {g('unseen_all_box')} clean {g('unseen_all_box_clean')} "
          f"T {g('unseen_all_teacher')} P {g('unseen_all_pseudo_threshold')} "
          f"S {g('unseen_all_student')} | seen T {g('seen_all_teacher')} "
          f"S {g('seen_all_student')} | {cat}")
