"""benchmarks/runtime.py --quality-cost on a tiny random model: the three head variants, the
label-given and full decoders in fp32 and int8, finite positive timings and a table of them."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from boxmask.model.init_from import QUALITY_WEIGHTS
from tests.scripts import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "runtime.py"


@pytest.fixture(scope="module")
def runtime_bench():
    yield load_script(SCRIPT, "runtime_benchmark")
    sys.modules.pop("runtime_benchmark", None)


def test_quality_cost_times_the_three_heads_on_a_tiny_model(runtime_bench) -> None:
    import torch

    threads = torch.get_num_threads()
    try:
        # ResNet-18-FPN at 16 channels on 64x96 images: seconds, not the paper's minutes.
        res = runtime_bench.quality_cost("tiny", threads=1, repeats=2,
                                         spec=("resnet18_fpn", 16, 16, 32), size=(64, 96),
                                         boxes=(1, 3), calls=1)
    finally:
        torch.set_num_threads(threads)
    names = list(runtime_bench.QUALITY_HEADS)
    assert len(names) == 3 and set(res["variants"]) == set(names)
    none, default, wide = (res["variants"][v] for v in names)
    assert none["params"] == 0 and none["channels"] is None
    # The defaults are 32/128; at the mask head's width (0) the convs are the mask head's 16.
    assert (default["channels"], default["fc"]) == (32, 128)
    assert (wide["channels"], wide["fc"]) == (16, 256)
    assert default["params"] > 0 and wide["params"] > 0
    assert none["mask_head_params"] == default["mask_head_params"] == wide["mask_head_params"]
    graphs = {r["graph"] for r in res["rows"]}
    assert graphs == {"labelled_decoder", "labelled_decoder int8", "decoder", "decoder int8"}
    assert {(r["graph"], r["boxes"]) for r in res["rows"]} == {(g, n) for g in graphs
                                                              for n in (1, 3)}
    for r in res["rows"]:
        assert set(r["ms"]) == set(names)
        assert all(math.isfinite(ms) and ms > 0 for ms in r["ms"].values())
        assert set(r["ratios"]) == set(names[1:])
        assert all(len(v) == 2 and all(x > 0 for x in v) for v in r["ratios"].values())
    table = runtime_bench.quality_cost_table("tiny", res)
    assert table.count("\n") == 1 + len(res["rows"])
    assert all(v in table for v in names)
    params = runtime_bench.quality_params_table("tiny", res)
    assert params.count("\n") == 1 + len(names)
    # The review statistics, timed in the same rounds, beside each decoder.
    assert set(res["review_ms"]) == {1, 3}
    assert all(math.isfinite(ms) and ms > 0 for ms in res["review_ms"].values())
    review = runtime_bench.review_cost_table("tiny", res)
    assert review.count("\n") == 1 + len(res["rows"]) and "review statistics ms" in review


def test_a_head_variant_takes_every_other_weight_from_the_model_without_it(runtime_bench,
                                                                           tmp_path) -> None:
    import torch

    spec, size = ("resnet18_fpn", 16, 16, 32), (64, 96)
    base = runtime_bench.random_checkpoint("base", tmp_path, spec, size)
    # Another seed state first: without `like` the head's model would start elsewhere.
    torch.manual_seed(1)
    head = runtime_bench.random_checkpoint("head", tmp_path, spec, size,
                                           {"mask_quality": True}, like=base)
    a = torch.load(base, map_location="cpu", weights_only=False)["model"]
    b = torch.load(head, map_location="cpu", weights_only=False)["model"]
    extra = set(b) - set(a)
    assert extra and all(k.startswith(QUALITY_WEIGHTS) for k in extra)
    assert set(a) <= set(b) and all(torch.equal(a[k], b[k]) for k in a)
