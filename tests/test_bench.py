"""`imo bench --quick` measures every mode on a real model and writes the three report files."""

import json

import pytest

from imo.pipeline.bench import _keygen, _markdown, _ratios
from imo.pipeline.cli import main

RATIO_KEYS = {"hybrid_time_to_submit_over_monolithic_prove", "hybrid_zk_proving_over_monolithic_prove", "segmented_peak_rss_over_monolithic",
              "parallel_over_sequential_segmented", "native_executor_over_onnxruntime", "hybrid_zk_rows_over_monolithic_rows"}


def _result(model="m"):
    report = {"cached": False, "seconds": {"setup": 2.0}}
    return {"model": model, "params": 10, "onnxruntime_ms": 0.1,
            "monolithic": {"logrows": 18, "rows": 200_000, "setup_s": 30.0, "keygen_s": 30.0, "prove_s": 40.0, "peak_rss_mb": 2000.0, "pk_mb": 1000.0, "verify_gas": 1},
            "segmented": {"segments": 3, "tiles": [2, 8, 0], "logrows_untiled": [16, 18, 15], "logrows": [15] * 11, "sequential_s": 100.0, "parallel_s": 60.0,
                          "peak_rss_mb": 800.0, **_keygen([report, report, {**report, "cached": True}])},
            "hybrid": {"modes": ["zk", "op"], "tiles": [4, 0], "zk_logrows": [14] * 4, "zk_rows": [10_000] * 4, "keygen_s": 8.0, "time_to_submit_s": 12.0, "zk_proving_s": 10.0,
                       "peak_rss_mb": 300.0, "verify_gas": [1]},
            "op_executor": {"segment": 1, "onnxruntime_ms": 0.1, "native_ms": 0.2, "reference_witness_ms": 5.0}}


def test_ratios_hold_every_target_and_keygen_is_apart_from_proving():
    ratios = _ratios([_result()])["m"]
    assert set(ratios) == RATIO_KEYS
    assert ratios["hybrid_zk_proving_over_monolithic_prove"] == 10.0 / 40.0 and ratios["segmented_peak_rss_over_monolithic"] == 0.4
    assert ratios["parallel_over_sequential_segmented"] == 0.6 and ratios["hybrid_zk_rows_over_monolithic_rows"] == 0.2
    seg = _result()["segmented"]
    assert seg["keygen_s"] == 4.0 and seg["circuits_built"] == 2 and seg["circuits_reused"] == 1  # a store hit costs no keygen
    text = _markdown({"quick": False, "ezkl": "23.0.5", "machine": "x", "models": [_result()], "ratios": _ratios([_result()])})
    assert "hybrid_zk_proving_over_monolithic_prove = 0.25" in text and "| m | 18 | 30.0 | 40.0 |" in text


@pytest.mark.slow
def test_quick_bench_writes_json_markdown_and_plots(tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    bench = json.loads((tmp_path / "bench.json").read_text())
    (mlp,) = bench["models"]
    assert mlp["monolithic"]["prove_s"] > 0 and mlp["segmented"]["parallel_s"] > 0 and mlp["hybrid"]["modes"] == ["zk", "op"]
    assert mlp["monolithic"]["verify_gas"] > 0 and all(g > 0 for g in mlp["hybrid"]["verify_gas"])
    assert set(bench["ratios"]["mlp"]) == RATIO_KEYS and mlp["hybrid"]["zk_proving_s"] > 0 and mlp["monolithic"]["keygen_s"] > 0
    assert mlp["segmented"]["keygen_s"] >= 0 and mlp["hybrid"]["keygen_s"] >= 0
    assert "| mlp |" in (tmp_path / "bench.md").read_text()
    assert all((tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG" for name in ("time", "memory"))
