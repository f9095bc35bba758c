"""The benchmark's analysis without the RTL: rows built from the performance model's counters.

The RTL part of a row (``bench.measure_rtl``) is replaced by the model's
prediction of the same program; everything after it (derived columns, the
bottleneck, the table, ``--reuse``) is the code ``make bench`` runs.
"""

import json
from types import SimpleNamespace

import pytest

from flashnpu import bench, cli
from flashnpu.sw.compiler import compile_workload
from flashnpu.spec.config import load_config
from flashnpu.sw.perfmodel import predict

CFG = load_config("default")


def model_row(case):
    """A row as measure_rtl makes it, with the model's counters standing in for the RTL's."""
    prog = compile_workload(case.workload(), CFG)
    perf = predict(CFG, prog.words, lat=bench.BENCH_LAT)
    counters = dict(perf.counters)
    counters.setdefault("DISPATCH_STALL", 0)
    return {"name": case.name, "kind": case.kind, "params": dict(case.params), "target": case.target,
            "seed": 0, "program_hash": bench.program_hash(prog.words), "instructions": prog.instructions,
            "tiling": prog.tiling, "pes": CFG.pes, "macs_useful": prog.macs_useful,
            "macs_issued": prog.macs_issued, "rtl_cycles": perf.cycles, "counters": counters,
            "bit_exact": True, "dma_bytes_min": bench.min_dma_bytes(prog), "build_s": 0.0,
            "build_cached": True, "sim_wall_s": 1.0, "sim_run_s": 0.5, "golden_s": 0.1}


def case(name):
    return next(c for c in bench.SUITE if c.name == name)


def test_min_dma_bytes():
    prog = compile_workload(case("attn-gqa-h4-kv1-s256-d64").workload(), CFG)
    # Q and O: 4 heads x 256 x 64 int8; K and V: 1 kv head.
    assert bench.min_dma_bytes(prog) == 2 * 4 * 256 * 64 + 2 * 256 * 64
    prog = compile_workload(case("gemm-skinny-16x1024x1024").workload(), CFG)
    assert bench.min_dma_bytes(prog) == 16 * 1024 + 1024 * 1024 + 4 * 16 * 1024


def test_row_columns_from_counters():
    row = bench.add_model(model_row(case("attn-s256-d64")), CFG)
    c = row["counters"]
    assert row["model_error"] == 0.0
    assert row["util"] == row["macs_useful"] / (CFG.pes * row["rtl_cycles"])
    assert row["vector_busy"] == c["VECTOR_BUSY"] / row["rtl_cycles"]
    assert row["dma_ratio"] == (c["BYTES_READ"] + c["BYTES_WRITTEN"]) / row["dma_bytes_min"] > 1
    assert row["target_met"] is None


def test_causal_short_run_names_masking_and_drain():
    row = bench.add_model(model_row(case("attn-s256-d64-causal")), CFG)
    losses = row["losses"]
    # The loss list accounts for every cycle the array does not spend on useful MACs.
    useful = row["macs_useful"] / CFG.pes / row["rtl_cycles"]
    assert sum(f for _, _, f in losses) == pytest.approx(1 - useful, abs=1e-9)
    assert losses[0][0] == "array" and "masked" in losses[0][1]
    assert "drain" in row["bottleneck"]


def test_saturated_dma_is_named():
    row = bench.add_model(model_row(case("gemm-skinny-16x1024x1024")), CFG)
    assert row["load_busy"] >= bench.SATURATED
    assert row["bottleneck"].startswith("load: saturated")


def test_long_run_is_compute_bound():
    row = bench.add_model(model_row(case("attn-s1024-d64")), CFG)
    assert row["target_met"] is True
    assert row["bottleneck"].startswith("array: compute-bound")


def test_missed_target_gets_a_unit():
    # The same run against a target it cannot reach: the bottleneck names a unit and a cause.
    row = model_row(case("attn-s256-d64"))
    row["target"] = 0.95
    row = bench.add_model(row, CFG)
    assert row["target_met"] is False
    unit = row["bottleneck"].split(":")[0]
    assert unit in ("array", "vector", "load", "store", "sequencer")
    assert ">=95% MISSED" in bench.render(_result([row]))


def _result(rows):
    return {"config": CFG.name, "date": "d", "machine": "m", "git": {"commit": "c", "dirty": []},
            "lat": bench.BENCH_LAT, "wall_s": 1.0, "rows": rows, "not_run": []}


def test_table_has_every_column():
    rows = [bench.add_model(model_row(case(n)), CFG) for n in ("attn-s256-d64", "gemm-256x256x256")]
    table = bench.markdown_table(rows).splitlines()
    head = table[0]
    for col in ("RTL cycles", "model cycles", "model err", "PE util", "target", "vector busy",
                "DMA busy", "DMA bytes vs min", "bottleneck", "MACs/cycle per 1k LUT4", "bit-exact", "sim wall"):
        assert col in head
    assert len(table) == 2 + len(rows)
    assert all(line.count("|") == head.count("|") for line in table)


def test_area_column_is_useful_macs_per_cycle_per_1k_lut4():
    row = {"macs_useful": 1_000_000, "rtl_cycles": 10_000}
    area = {"LUT4": 50_000, "FF": 1, "DSP": 2, "BRAM": 3, "key": "k", "black_boxes": ["npu.spad", "npu.acc"]}
    assert bench.add_area(dict(row), area)["macs_per_klut"] == 100 / 50
    assert bench.add_area(dict(row), None)["macs_per_klut"] is None
    note = bench._area_note({"config": "default", "area": area})
    assert "50,000 LUT4" in note and "logic only" in note and "npu.spad" in note
    assert "no cached synthesis" in bench._area_note({"config": "default", "area": None})


def test_reuse_repredicts_and_flags_changed_programs(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "area_of", lambda cfg: None)   # its lookup is flashnpu.synth's (test_synth)
    rows = [model_row(case("attn-s256-d64")), model_row(case("gemm-256x256x256"))]
    rows[1]["program_hash"] = "0" * 16          # as if the compiler had changed since the RTL run
    (tmp_path / "bench.json").write_text(json.dumps(_result(rows)))
    args = SimpleNamespace(config="default", output=str(tmp_path), reuse=True, only=None, plot=False,
                           full=False)
    assert bench.run_bench(args.config, args.output, reuse=True) == 0
    assert cli.main(["bench", "--reuse", "-o", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "bench.json").read_text())
    assert out["rows"][0]["model_cycles"] == rows[0]["rtl_cycles"]
    assert out["rows"][1]["model_cycles"] is None and out["rows"][1]["bottleneck"].startswith("stale")
    assert "attn-s256-d64" in (tmp_path / "bench.md").read_text()
