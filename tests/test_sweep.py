"""flashnpu.sweep: space files, one-line errors, a sweep on a Dask LocalCluster, Pareto fronts."""

import json

import pytest

from flashnpu import sweep
from flashnpu.cli import main

SPACE = """
base: tiny
grid:
  array:
    - {array_rows: 4, array_cols: 4, vector_lanes: 4}
    - {array_rows: 8, array_cols: 8, vector_lanes: 8}
  queue_depth: [2, 8]
workloads:
  - {name: attn, kind: attention, seq: 64, head_dim: 16, heads: 2, kv_heads: 1, causal: true}
  - {name: gemm, kind: gemm, M: 32, N: 32, K: 32}
check: {seq: 16, M: 8, N: 8, K: 8}
synth: none
"""


def _space(tmp_path, text=SPACE, name="s.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_small_space_ships_and_loads():
    space = sweep.load_space("small")
    assert len(space.points) == 4 and space.synth == "ecp5"
    assert len({cfg.name for _, _, cfg in space.points}) == 4


def test_grid_is_the_cartesian_product(tmp_path):
    space = sweep.load_space(_space(tmp_path))
    got = [(cfg.array_rows, cfg.queue_depth) for _, _, cfg in space.points]
    assert got == [(4, 2), (4, 8), (8, 2), (8, 8)]


@pytest.mark.parametrize("edit, message", [
    (("queue_depth: [2, 8]", "queue_depth: [2, 0]"), "point array_rows=4,array_cols=4,vector_lanes=4,queue_depth=0: "
                                                     ".*queue_depth"),
    (("queue_depth: [2, 8]", "queue_depth: []"), "grid.queue_depth: must be a non-empty list"),
    (("synth: none", "synth: asic"), "synth = 'asic'"),
    (("base: tiny", "base: nope"), "base: .*nope"),
    (("kind: gemm,", "kind: conv,"), r"workloads\[1\]: must be a mapping with kind"),
    (("M: 32,", "M: 32, Q: 1,"), r"workloads\[1\]: unknown key 'Q'"),
    (("check: {seq: 16,", "check: {len: 3, seq: 16,"), "check: unknown key 'len'"),
    (("synth: none", "synth: none\nextra: 1"), "unknown key 'extra'"),
    (("synth: none", "synth: none\nsynth_srams: flops"), "synth_srams = 'flops'"),
])
def test_bad_space_gets_one_line_naming_the_field(tmp_path, edit, message):
    with pytest.raises(sweep.SweepError, match=message) as e:
        sweep.load_space(_space(tmp_path, SPACE.replace(*edit)))
    assert "\n" not in str(e.value)


def test_missing_space_names_the_known_ones(tmp_path):
    with pytest.raises(sweep.SweepError, match="known: .*small"):
        sweep.load_space(tmp_path / "none.yaml")


def test_sweep_on_a_dask_local_cluster(tmp_path):
    space = sweep.load_space(_space(tmp_path))
    res = sweep.run_sweep(space, tmp_path / "out", dask="local", workers=2, progress=False)
    assert [r["point"] for r in res["rows"]] == [name for name, _, _ in space.points]
    for row, (_, _, cfg) in zip(res["rows"], space.points):
        assert not row["errors"]
        for w in row["workloads"].values():
            assert w["golden"]["ok"] and 0 < w["util"] <= 1
            assert w["macs_per_cycle"] == pytest.approx(w["util"] * cfg.pes)
    # The model is exact, so it must see the larger array finish the same GEMM sooner.
    assert res["rows"][3]["workloads"]["gemm"]["cycles"] < res["rows"][1]["workloads"]["gemm"]["cycles"]
    on_disk = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert on_disk["rows"] == res["rows"] and (tmp_path / "out" / "sweep.md").exists()


def test_unreachable_scheduler_is_one_line(tmp_path, capsys):
    assert main(["sweep", str(_space(tmp_path)), "--dask", "tcp://127.0.0.1:1", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot reach the scheduler" in err and "\n" not in err


def test_pareto_front():
    pts = [(10, 5), (20, 9), (15, 4), (30, 9), (5, 1)]     # (area, throughput)
    assert sweep.pareto(pts) == [0, 1, 4]


def test_area_columns_and_plots(tmp_path):
    rows = [{"point": f"p{i}", "errors": [], "area": {"target": "ecp5", "LUT4": lut, "cells": 0},
             "workloads": {"w": {"cycles": 100, "util": 0.5, "macs_per_cycle": mpc, "dma_bytes": 1,
                                 "golden": {"ok": True, "what": "bit-exact"}}}}
            for i, (lut, mpc) in enumerate([(1000, 8.0), (4000, 30.0), (5000, 20.0)])]
    result = {"space": "t", "base": "tiny", "synth": "ecp5", "workloads": ["w"], "rows": rows,
              "executor": "x", "seconds": 1.0}
    md = sweep.report_md(result)
    assert "| p0 | w | 100 | 50.0% | 8.0 | 1 | bit-exact | 1,000 LUT4 | 8.00 |" in md
    files = sweep._plot(result, tmp_path)
    assert [f.name for f in files] == ["pareto-w.png"] and files[0].stat().st_size > 1000
