"""flashnpu.attention / flashnpu.gemm on numpy arrays: quantization, scales, results, one-line errors."""

import numpy as np
import pytest

import flashnpu
from flashnpu.api import Result
from flashnpu.driver import run
from flashnpu.sw.reference import attention_float64, quantize, reference_gemm
from flashnpu.sw.workload import AttentionWorkload, GemmWorkload, WorkloadError


def _qkv(rng, B=1, H=2, KVH=1, Sq=6, Sk=9, D=8):
    return (rng.normal(size=(B, H, Sq, D)), rng.normal(size=(B, KVH, Sk, D)), rng.normal(size=(B, KVH, Sk, D)))


def test_float_attention_is_the_workload_run_on_the_absmax_quantized_inputs():
    rng = np.random.default_rng(0)
    q, k, v = _qkv(rng)
    r = flashnpu.attention(q, k, v, causal=True, config="tiny", return_raw=True)
    assert isinstance(r, Result) and r.run.backend == "golden"
    s = r.scales
    assert s["q"] == np.abs(q).max() / 127 and s["k"] == np.abs(k).max() / 127 and s["v"] == np.abs(v).max() / 127
    assert s["out"] == s["v"] and s["softmax"] == 1 / np.sqrt(8)
    t = {"Q": quantize(q, s["q"]), "K": quantize(k, s["k"]), "V": quantize(v, s["v"])}
    wl = AttentionWorkload(batch=1, heads=2, kv_heads=1, seq_q=6, seq_k=9, head_dim=8, causal=True,
                           q_scale=s["q"], k_scale=s["k"], v_scale=s["v"], out_scale=s["v"])
    want = run(wl, t, config="tiny").outputs["O"]
    assert r.raw.dtype == np.int8 and np.array_equal(r.raw, want)          # bit-exact with the driver
    assert np.array_equal(r.output, (want * s["out"]).astype(np.float64))
    plain = flashnpu.attention(q, k, v, causal=True, config="tiny")
    assert isinstance(plain, np.ndarray) and np.array_equal(plain, r.output) and plain.dtype == np.float64
    # within 1 output LSB of float64 attention on the same quantized inputs (docs/numerics.md)
    ref = attention_float64(t["Q"], t["K"], t["V"], q_scale=s["q"], k_scale=s["k"], v_scale=s["v"], causal=True)
    assert np.abs(r.output - ref).max() <= s["out"]


def test_int8_inputs_with_given_scales_and_3d_shapes():
    rng = np.random.default_rng(1)
    q = rng.integers(-128, 128, (2, 5, 8), dtype=np.int8)
    k = rng.integers(-128, 128, (2, 7, 8), dtype=np.int8)
    v = rng.integers(-128, 128, (2, 7, 8), dtype=np.int8)
    r = flashnpu.attention(q, k, v, q_scale=0.02, k_scale=0.03, v_scale=0.05, out_scale=0.04, scale=0.5,
                           config="tiny", return_raw=True)
    wl = AttentionWorkload(batch=1, heads=2, kv_heads=2, seq_q=5, seq_k=7, head_dim=8, q_scale=0.02,
                           k_scale=0.03, v_scale=0.05, out_scale=0.04, softmax_scale=0.5)
    want = run(wl, {"Q": q[None], "K": k[None], "V": v[None]}, config="tiny").outputs["O"][0]
    assert r.raw.shape == (2, 5, 8) and np.array_equal(r.raw, want)
    assert r.output.dtype == np.float32 and np.allclose(r.output, want * 0.04)
    assert r.scales == {"q": 0.02, "k": 0.03, "v": 0.05, "out": 0.04, "softmax": 0.5}


def test_gemm_float_and_int8():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(9, 7)).astype(np.float32), rng.normal(size=(7, 5)).astype(np.float32)
    r = flashnpu.gemm(a, b, config="tiny", return_raw=True)
    sa, sb = r.scales["a"], r.scales["b"]
    exact = reference_gemm(quantize(a, sa), quantize(b, sb))
    assert r.raw.dtype == np.int32 and np.array_equal(r.raw, exact)
    assert r.output.dtype == np.float32 and np.allclose(r.output, exact * (sa * sb), rtol=1e-6)
    ai = rng.integers(-128, 128, (4, 6), dtype=np.int8)
    bi = rng.integers(-128, 128, (6, 3)).astype(np.int64)
    c = flashnpu.gemm(ai, bi, a_scale=1, b_scale=1, config="tiny")
    assert np.array_equal(c, reference_gemm(ai, bi).astype(np.float32))


def test_perf_backend_returns_cycles_and_no_output():
    rng = np.random.default_rng(3)
    q, k, v = _qkv(rng)
    r = flashnpu.attention(q, k, v, backend="perf", config="tiny", return_raw=True)
    assert r.output is None and r.raw is None and r.cycles > 0 and r.run.counters["CYCLES"] == r.cycles
    with pytest.raises(WorkloadError, match="argument 'backend' = 'perf' predicts cycles"):
        flashnpu.attention(q, k, v, backend="perf", config="tiny")
    g = flashnpu.gemm(np.ones((4, 4)), np.ones((4, 4)), backend="perf", config="tiny", return_raw=True)
    assert g.output is None and g.cycles == run(GemmWorkload(4, 4, 4), None, backend="perf", config="tiny").cycles


@pytest.mark.parametrize("call, words", [
    (lambda q, k, v: flashnpu.attention(q[0], k, v), "arguments 'q', 'k', 'v' have 3, 4, 4 dimensions"),
    (lambda q, k, v: flashnpu.attention(q[0, 0], k[0, 0], v[0, 0]), "argument 'q' has shape (6, 8): expected 4-D"),
    (lambda q, k, v: flashnpu.attention(q, k[..., :4], v), "argument 'k' has shape (1, 1, 9, 4): expected batch 1 and head_dim 8"),
    (lambda q, k, v: flashnpu.attention(q, k, v[:, :, :3]), "argument 'v' has shape (1, 1, 3, 8): expected k's shape"),
    (lambda q, k, v: flashnpu.attention(np.concatenate([q, q[:, :1]], 1), np.concatenate([k, k], 1),
                                        np.concatenate([v, v], 1)), "argument 'k' has 2 heads: must divide q's 3 heads"),
    (lambda q, k, v: flashnpu.attention(q.astype(np.complex64), k, v), "argument 'q' has dtype complex64"),
    (lambda q, k, v: flashnpu.attention("q", k, v), "argument 'q' = str: expected an array"),
    (lambda q, k, v: flashnpu.attention(q, np.where(k > 1, np.nan, k), v), "argument 'k' has the non-finite value nan at"),
    (lambda q, k, v: flashnpu.attention(q, k, np.where(v > 1, np.inf, v)), "argument 'v' has the non-finite value inf at"),
    (lambda q, k, v: flashnpu.attention(q.astype(np.int8), k, v), "argument 'q_scale' is missing: 'q' is an integer (int8)"),
    (lambda q, k, v: flashnpu.attention((q * 100).astype(np.int32), k, v, q_scale=1), "argument 'q' (int32) has values in"),
    (lambda q, k, v: flashnpu.attention(q, k, v, scale=-1), "argument 'scale' = -1: must be a positive finite number"),
    (lambda q, k, v: flashnpu.attention(q, k, v, k_scale=0), "argument 'k_scale' = 0: must be a positive"),
    (lambda q, k, v: flashnpu.attention(q, k, v, causal="yes"), "argument 'causal' = 'yes': must be a bool"),
    (lambda q, k, v: flashnpu.attention(q, k, v, backend="fpga"), "argument 'backend' = 'fpga': must be 'golden', 'perf' or 'rtl'"),
    (lambda q, k, v: flashnpu.gemm(q[0, 0], k[0, 0]), "argument 'b' has shape (9, 8): its rows must equal a's columns 8"),
    (lambda q, k, v: flashnpu.gemm(q[0], k[0, 0]), "argument 'a' has shape (2, 6, 8): expected a non-empty 2-D (M, K)"),
    (lambda q, k, v: flashnpu.gemm(q[0, 0], np.full((8, 2), np.nan)), "argument 'b' has the non-finite value nan at (0, 0)"),
])
def test_bad_arguments_get_one_line_naming_them(call, words):
    q, k, v = _qkv(np.random.default_rng(4))
    with pytest.raises(WorkloadError) as e:
        call(q, k, v)
    msg = str(e.value)
    assert "\n" not in msg and words in msg, msg


def test_bad_config_names_the_config():
    from flashnpu.spec.config import ConfigError
    q, k, v = _qkv(np.random.default_rng(5))
    with pytest.raises(ConfigError):
        flashnpu.attention(q, k, v, config="no-such-config")


def test_top_level_exports():
    import flashnpu.api as api
    assert flashnpu.attention is api.attention and flashnpu.gemm is api.gemm and flashnpu.Result is api.Result
    with pytest.raises(AttributeError):
        flashnpu.no_such_name


@pytest.mark.rtl
def test_attention_on_the_rtl_is_bit_exact_with_golden_and_has_the_models_cycles():
    q, k, v = _qkv(np.random.default_rng(6), H=2, KVH=1, Sq=5, Sk=7, D=8)
    rtl = flashnpu.attention(q, k, v, causal=True, backend="rtl", config="tiny", memory="fast", return_raw=True)
    gold = flashnpu.attention(q, k, v, causal=True, config="tiny", return_raw=True)
    perf = flashnpu.attention(q, k, v, causal=True, backend="perf", config="tiny", return_raw=True)
    assert rtl.run.backend == "rtl" and np.array_equal(rtl.raw, gold.raw) and np.array_equal(rtl.output, gold.output)
    assert rtl.cycles == perf.cycles > 0
