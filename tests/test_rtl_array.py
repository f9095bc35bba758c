"""The Verilated SystolicArray under cocotb: random tiles (INT8 W, INT8 or 12-bit A) back to back, bit-exact vs numpy."""

import json
from pathlib import Path

import numpy as np
import pytest

from flashnpu.cosim.build import build, run_cocotb
from flashnpu.hw.systolic_array import SystolicArray
from flashnpu.spec.config import load_config
from flashnpu.spec.numerics import A_WIDE_BITS, wrap32

pytestmark = pytest.mark.rtl

HERE = Path(__file__).resolve().parent
MODULE = "cocotb_array"


def _model(config):
    return build(SystolicArray(config), "systolic_array", MODULE)


def _stimulus(dim, rows_per_tile, seed):
    rng = np.random.default_rng(seed)
    T = len(rows_per_tile)
    w = rng.integers(-128, 128, size=(T, dim, dim), dtype=np.int64)
    w[0] = -128                        # extremes: the largest products
    transpose = rng.integers(0, 2, size=T)
    m = np.array(rows_per_tile)
    a_min, a_max = -(1 << (A_WIDE_BITS - 1)), (1 << (A_WIDE_BITS - 1)) - 1
    a = rng.integers(-128, 128, size=(int(m.sum()), dim), dtype=np.int64)
    wide = rng.random(a.shape[0]) < 0.5                    # rows of 12-bit A (P from the accumulator)
    a[wide] = rng.integers(a_min, a_max + 1, size=(int(wide.sum()), dim))
    a[0] = a_min
    expected, row = [], 0
    for t in range(T):
        expected.append(wrap32(a[row:row + m[t]] @ w[t]))
        row += m[t]
    return dict(w=w.astype(np.int8), transpose=transpose, a=a.astype(np.int16), m=m,
                expected=np.concatenate(expected))


def _run(b, stim, tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    np.savez(tmp_path / "array_in.npz", **stim)
    res = run_cocotb(b, run_dir=tmp_path, python_path=[HERE], timeout_s=300)
    out = json.loads((tmp_path / "array_result.json").read_text()) \
        if (tmp_path / "array_result.json").exists() else None
    return res, out


@pytest.mark.parametrize("config_name, rows", [
    ("tiny", [4, 7, 1, 4, 9, 2, 5, 4]),        # shorter, equal and longer than dim
    ("default", [16, 40, 3, 16, 25, 16]),
])
def test_array_streams_tiles_bit_exact(config_name, rows, tmp_path):
    config = load_config(config_name)
    b = _model(config)
    stim = _stimulus(config.dim, rows, seed=hash(config_name) & 0xFFFF)
    res, out = _run(b, stim, tmp_path)
    assert res.passed, res.summary()
    assert out["rows"] == sum(rows) and out["mismatches"] == []
    assert out["latencies"] == [2 * config.dim - 1]
    got = np.load(tmp_path / "array_out.npz")["got"]
    np.testing.assert_array_equal(got, stim["expected"])


def test_array_reports_a_corrupted_expectation(tmp_path):
    config = load_config("tiny")
    b = _model(config)
    stim = _stimulus(config.dim, [4, 6, 4], seed=7)
    stim["expected"] = stim["expected"].copy()
    stim["expected"][5, 2] += 1
    res, out = _run(b, stim, tmp_path)
    assert not res.passed
    assert out["mismatches"] == [f"row 5 lane 2: got {stim['expected'][5, 2] - 1}, "
                                 f"expected {stim['expected'][5, 2]}"]
    assert "row 5 lane 2" in res.summary()
