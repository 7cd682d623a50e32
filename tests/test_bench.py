"""`imo bench --quick` measures every mode on a real model and writes the three report files."""

import json

import pytest

from imo.pipeline.cli import main


@pytest.mark.slow
def test_quick_bench_writes_json_markdown_and_plots(tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    bench = json.loads((tmp_path / "bench.json").read_text())
    (mlp,) = bench["models"]
    assert mlp["monolithic"]["prove_s"] > 0 and mlp["segmented"]["parallel_s"] > 0 and mlp["hybrid"]["modes"] == ["zk", "op"]
    assert mlp["monolithic"]["verify_gas"] > 0 and all(g > 0 for g in mlp["hybrid"]["verify_gas"])
    assert "| mlp |" in (tmp_path / "bench.md").read_text()
    assert all((tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG" for name in ("time", "memory"))
