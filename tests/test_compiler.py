"""The compiler: GEMM bit-exact on the golden model, token checks, tiling, causal skipping, rejections, CLI."""

import io

import numpy as np
import pytest

from flashnpu import cli
from flashnpu.sw.asm import assemble, decode_word
from hypothesis import given, settings, strategies as st

from flashnpu.sw.compiler import (OUTPUT_CHUNK_ROWS, CompileError, _causal_bands, attention_tiles,
                                  compile_attention, compile_gemm, output_fold, softmax_fold)
from flashnpu.spec.config import load_config
from flashnpu.driver import run
from flashnpu.spec.isa import Mem, Opcode, VectorFunct
from flashnpu.spec.numerics import MAX_SEQ_K
from flashnpu.sw.reference import make_attention_tensors, make_gemm_tensors, reference_attention, reference_gemm
from flashnpu.sw.tokens import check_tokens
from flashnpu.sw.workload import AttentionWorkload, GemmWorkload, WorkloadError


def _ops(prog):
    return [decode_word(w) for w in prog.words]


def _attn(seq_q, seq_k=None, head_dim=64, heads=1, kv_heads=None, causal=False, batch=1, **kw):
    return AttentionWorkload(batch, heads, kv_heads or heads, seq_q, seq_k or seq_q, head_dim, causal, **kw)


# ------------------------------------------------------------------ GEMM
@pytest.mark.parametrize("config,M,N,K", [
    ("tiny", 1, 1, 1), ("tiny", 5, 7, 9), ("tiny", 33, 40, 50), ("tiny", 64, 16, 200),
    ("default", 16, 16, 16), ("default", 100, 70, 300), ("default", 17, 129, 33), ("default", 256, 256, 256),
])
def test_gemm_bit_exact(config, M, N, K):
    wl = GemmWorkload(M, N, K)
    rng = np.random.default_rng(M * 1000 + N * 10 + K)
    t = make_gemm_tensors(wl, rng)
    r = run(wl, t, config=config)
    assert r.outputs["C"].shape == (M, N) and r.outputs["C"].dtype == np.int32
    assert np.array_equal(r.outputs["C"], reference_gemm(t["A"], t["B"]))
    assert r.program.macs_useful == M * N * K
    assert r.program.macs_issued >= M * N * K


def test_gemm_extremes_bit_exact():
    """All -128 operands: the largest products (a wrapping sum needs K > 2**17, beyond MAX_DIM)."""
    wl = GemmWorkload(32, 48, 1000)
    t = {"A": np.full((32, 1000), -128, np.int8), "B": np.full((1000, 48), -128, np.int8)}
    r = run(wl, t, config="default")
    assert np.array_equal(r.outputs["C"], np.full((32, 48), 16384 * 1000, np.int32))


def test_gemm_large_is_weight_stationary_and_tall():
    """1024^3 on default: tall A streams (m_rows >= 64) under weight tiles, prefetched loads, and every
    MATMUL except the first has its operands loaded while an earlier MATMUL runs (double buffering)."""
    cfg = load_config("default")
    prog = compile_gemm(GemmWorkload(1024, 1024, 1024), cfg)
    check_tokens(prog.words, cfg)
    mm = [f for f in _ops(prog) if f["opcode"] == Opcode.MATMUL]
    assert min(f["m_rows"] for f in mm) >= 64 and all(f["transpose_w"] == 0 for f in mm)
    assert prog.macs_issued == prog.macs_useful
    assert prog.onchip["spad_rows"] <= cfg.spad_rows and prog.onchip["acc_rows"] <= cfg.acc_rows
    # The A/B buffers alternate: consecutive MATMULs never read the same freshly loaded slot.
    a_addrs = [f["a_addr"] for f in mm]
    assert len(set(a_addrs)) == 2 and all(x != y for x, y in zip(a_addrs, a_addrs[1:]))


# ------------------------------------------------------------------ attention structure
ATTN_CASES = [
    ("default", _attn(256, causal=False, heads=2)),
    ("default", _attn(256, causal=True, heads=4, kv_heads=2)),
    ("default", _attn(77, 200, causal=True, head_dim=40)),
    ("default", _attn(200, 77, causal=True, head_dim=128)),
    ("tiny", _attn(40, 24, head_dim=8, causal=True, heads=2, kv_heads=1)),
    ("large", _attn(300, causal=True, head_dim=64)),
]


@pytest.mark.parametrize("config,wl", ATTN_CASES)
def test_attention_programs_pass_token_check(config, wl):
    cfg = load_config(config)
    prog = compile_attention(wl, cfg)
    rep = check_tokens(prog.words, cfg)
    assert rep.halt_pc == len(prog.words) - 1
    beat = cfg.dma_beat_bytes
    for p in prog.layout.values():
        assert p.addr % beat == 0 and p.row_stride_bytes % beat == 0
    assert prog.prog_addr % 32 == 0 and prog.prog_addr >= max(p.addr + p.nbytes for p in prog.layout.values())
    # Every DMA row lies inside its tensor.
    regions = [(p.addr, p.addr + p.nbytes) for p in prog.layout.values()]
    for f in _ops(prog):
        if f["opcode"] in (Opcode.LOAD, Opcode.STORE):
            rb = cfg.dim * (1 if f["mem"] == Mem.SPAD else 4)
            lo, hi = f["dram_addr"], f["dram_addr"] + (f["rows"] - 1) * f["dram_stride"] + f["chunks"] * rb
            assert any(a <= lo and hi <= b for a, b in regions), f


def test_attention_tiny_config_runs_accurately():
    """The tiny config (4x4) compiles and runs attention through the whole stack (peaked rows)."""
    wl = _attn(40, 24, head_dim=8, causal=True, heads=2, kv_heads=1, q_scale=0.25, k_scale=4 / 127, v_scale=4 / 127)
    t = make_attention_tensors(wl, np.random.default_rng(3), dist="peaked")
    ref = reference_attention(wl, t)
    r = run(wl, t, config="tiny")
    err = np.abs(r.outputs["O"] * wl.out_scale - ref) / wl.out_scale
    assert err.max() <= 1.0


def test_matrix_order_is_ping_pong():
    """Per Q tile: QK_0, QK_1, PV_0, QK_2, PV_1, ...; and the pipeline continues across Q tiles."""
    prog = compile_attention(_attn(256), "default")
    Br, Bc = prog.tiling["Br"], prog.tiling["Bc"]
    n_kv = 256 // Bc
    mm = [f["transpose_w"] for f in _ops(prog) if f["opcode"] == Opcode.MATMUL]
    steps = (256 // Br) * n_kv
    expect = [1] + [x for _ in range(steps - 1) for x in (1, 0)] + [0]
    assert mm == expect
    # The first PV of a Q tile overwrites (accumulate=0), the others accumulate.
    acc = [f["accumulate"] for f in _ops(prog) if f["opcode"] == Opcode.MATMUL and not f["transpose_w"]]
    assert acc == [int(j > 0) for _ in range(256 // Br) for j in range(n_kv)]


def test_p_stays_in_the_accumulator():
    """EXP writes P over S (double-buffered in the accumulator); PV reads it there (a_mem = ACC)."""
    prog = compile_attention(_attn(256, causal=True), "default")
    ops = _ops(prog)
    qk = [f for f in ops if f["opcode"] == Opcode.MATMUL and f["transpose_w"]]
    pv = [f for f in ops if f["opcode"] == Opcode.MATMUL and not f["transpose_w"]]
    exp = [f for f in ops if f["opcode"] == Opcode.VECTOR and f["funct"] == VectorFunct.EXP]
    assert len(qk) == len(pv) == len(exp)
    assert all(f["a_mem"] == Mem.SPAD for f in qk) and all(f["a_mem"] == Mem.ACC for f in pv)
    for q, e, p in zip(qk, exp, pv):
        assert e["acc_addr"] == q["out_addr"] == p["a_addr"]
        assert e["acc_block_stride"] == q["out_nstride"] == p["a_kstride"]
        assert e["blocks"] == q["n_blocks"] == p["k_chunks"] and e["rows"] == q["m_rows"] == p["m_rows"]
    assert len({q["out_addr"] for q in qk[::2]} & {q["out_addr"] for q in qk[1::2]}) == 0   # two S buffers
    assert not any(name.startswith("P") for name in prog.onchip["regions"])


def test_vector_ops_are_online_softmax():
    prog = compile_attention(_attn(256, head_dim=64), "default")
    fs = [VectorFunct(f["funct"]) for f in _ops(prog) if f["opcode"] == Opcode.VECTOR]
    n_kv = 256 // prog.tiling["Bc"]
    tile = [VectorFunct.INIT] + [VectorFunct.ROWMAX, VectorFunct.EXP] + \
        [VectorFunct.ROWMAX, VectorFunct.EXP, VectorFunct.SCALE] * (n_kv - 1)
    R, O = [VectorFunct.RECIP], [VectorFunct.OUTPUT] * (prog.tiling["Br"] // OUTPUT_CHUNK_ROWS)
    # RECIP as soon as L is final; tile 1's start precedes tile 0's OUTPUT (which waits for the last
    # PV of tile 0, which the array runs after QK_0 of tile 1), in row chunks.
    assert fs == tile + R + tile[:3] + O + tile[3:] + R + O
    wl = prog.workload
    mult, shift = softmax_fold(wl)
    for f in _ops(prog):
        if f["opcode"] == Opcode.VECTOR and f["funct"] in (VectorFunct.ROWMAX, VectorFunct.EXP):
            assert (f["mult"], f["shift"]) == (mult, shift)
    assert abs(mult / 2 ** shift - wl.q_scale * wl.k_scale * wl.softmax_scale * np.log2(np.e) * 4096) < 1e-6


def test_output_fold():
    wl = _attn(16, v_scale=0.05, out_scale=0.01)
    mult, shift = output_fold(wl)
    assert mult < 2 ** 16 and shift <= 63
    assert abs(mult * 2.0 ** (31 - shift) - 5.0) < 5.0 * 2 ** -15


@pytest.mark.parametrize("head_dim", [32, 64, 128])
def test_onchip_memory_independent_of_sequence(head_dim):
    cfg = load_config("default")
    usages = set()
    for seq in (64, 256, 1024, 4096):
        for causal in (False, True):
            prog = compile_attention(_attn(seq, head_dim=head_dim, causal=causal), cfg)
            oc = prog.onchip
            usages.add((oc["spad_rows"], oc["acc_rows"], oc["state_rows"], tuple(prog.tiling[k] for k in ("Br", "Bc"))))
            assert oc["spad_rows"] <= cfg.spad_rows and oc["acc_rows"] <= cfg.acc_rows
            assert oc["state_rows"] <= cfg.vector_state_rows
    assert len(usages) == 1


def _expected_steps(wl, Br, Bc):
    n_kv = -(-wl.seq_k // Bc)
    total = 0
    for q0 in range(0, wl.seq_q, Br):
        last = min(q0 + Br, wl.seq_q) - 1 + wl.seq_k - wl.seq_q
        total += n_kv if not wl.causal else max(1, min(n_kv, last // Bc + 1 if last >= 0 else 0))
    return total * wl.batch * wl.heads


@pytest.mark.parametrize("seq_q,seq_k", [(512, 512), (200, 200), (77, 200), (200, 77)])
def test_causal_skips_tiles(seq_q, seq_k):
    full = compile_attention(_attn(seq_q, seq_k), "default")
    causal = compile_attention(_attn(seq_q, seq_k, causal=True), "default")
    Br, Bc = full.tiling["Br"], full.tiling["Bc"]
    count = lambda p: sum(1 for f in _ops(p) if f["opcode"] == Opcode.MATMUL)
    assert count(full) == 2 * _expected_steps(full.workload, Br, Bc) == 2 * full.tiling["kv_steps"]
    assert causal.tiling["kv_steps"] == _expected_steps(causal.workload, Br, Bc)
    if seq_q >= seq_k:      # (77 queries, 200 keys: the one Q tile's last row sees every key)
        assert causal.tiling["kv_steps"] < full.tiling["kv_steps"]
    # Useful MACs: the visible (lower-triangle, bottom-right aligned) pairs exactly.
    vis = sum(min(seq_k, max(0, i + seq_k - seq_q + 1)) for i in range(seq_q))
    assert causal.macs_useful == 2 * 64 * vis
    assert full.macs_useful == 2 * 64 * seq_q * seq_k
    assert causal.macs_useful <= causal.macs_issued < full.macs_issued


def test_causal_512_matmul_count():
    """seq 512, Br=128, Bc=64: Q tile t needs KV tiles 0..2t+1, i.e. 2+4+6+8 = 20 of the 32 steps.

    The two diagonal steps of each Q tile run in four row bands each (rows 0-15, 16-31, 32-47,
    48-127 of KV tile 2t; rows 64-79, ..., 112-127 of KV tile 2t+1), the 12 others in one: a
    QK and a PV per band, 2 * (12 + 8 * 4) = 88 MATMULs. Rows 0-15 of KV tile 2t see its first
    16 keys, so their QK computes one block of 16 keys, not all four.
    """
    prog = compile_attention(_attn(512, causal=True), "default")
    assert (prog.tiling["Br"], prog.tiling["Bc"]) == (128, 64)
    assert prog.tiling["kv_steps"] == 20
    qk = [f for f in _ops(prog) if f["opcode"] == Opcode.MATMUL and f["transpose_w"]]
    assert len(qk) == 44
    assert [(f["m_rows"], f["n_blocks"]) for f in qk[:4]] == [(16, 1), (16, 2), (16, 3), (80, 4)]
    assert prog.macs_issued == 2 * 64 * 16 * sum(f["m_rows"] * f["n_blocks"] for f in qk)


@settings(max_examples=300, deadline=None)
@given(dim=st.sampled_from([4, 16, 32]), trows=st.integers(1, 128), kv_valid=st.integers(1, 64),
       coff0=st.integers(-140, 140), data=st.data())
def test_causal_bands_compute_every_visible_key_and_little_else(dim, trows, kv_valid, coff0, data):
    """Bands cover rows i0.. once, in order; each row's visible keys are computed; a band computes
    only the blocks its last row needs; the mask is on exactly where a computed key is invisible;
    a row wastes fewer than 2*dim keys (before: up to a whole tile)."""
    i0 = data.draw(st.integers(0, trows - 1))
    bands = _causal_bands(i0, trows, kv_valid, coff0, dim)
    assert bands[0][0] == i0 and sum(b[1] for b in bands) == trows - i0
    assert all(a[0] + a[1] == b[0] for a, b in zip(bands, bands[1:]))
    for s, rows, cols, causal, coff in bands:
        assert rows >= dim or s + rows == trows
        assert coff == coff0 + s
        computed = min(kv_valid, -(-cols // dim) * dim)
        visible = [min(kv_valid, max(0, i + coff0 + 1)) for i in range(s, s + rows)]
        assert cols >= max(1, max(visible))                        # every visible key is computed
        assert -(-cols // dim) == -(-max(1, visible[-1]) // dim)    # no block beyond the last row's
        assert causal == int(any(v < computed for v in visible))   # masked iff something to mask
        assert all(computed - v < 2 * dim for v in visible if v)


# ------------------------------------------------------------------ pack / unpack
def test_pack_unpack_layout():
    wl = _attn(77, 90, head_dim=40, heads=2, kv_heads=1)
    prog = compile_attention(wl, "default")
    rng = np.random.default_rng(0)
    t = make_attention_tensors(wl, rng)
    img = prog.pack(t)
    assert img.dtype == np.uint8 and img.size == prog.dram_bytes
    K = prog.layout["K"]
    assert K.padded_shape == (1, 1, 96, 48)       # seq_k to a multiple of dim, head_dim to a multiple of dim
    raw = img[K.addr:K.addr + K.nbytes].view(np.int8).reshape(K.padded_shape)
    assert np.array_equal(raw[:, :, :90, :40], t["K"]) and not raw[:, :, 90:].any() and not raw[..., 40:].any()
    words = [int.from_bytes(img[prog.prog_addr + 32 * k:prog.prog_addr + 32 * (k + 1)].tobytes(), "little")
             for k in range(len(prog.words))]
    assert words == prog.words
    # unpack reads outputs in the user's shape.
    O = prog.layout["O"]
    img[O.addr:O.addr + O.nbytes] = np.arange(O.nbytes, dtype=np.uint8)
    out = prog.unpack(img)["O"]
    assert out.shape == wl.shapes()["O"]
    full = np.arange(O.nbytes, dtype=np.uint8).view(np.int8).reshape(O.padded_shape)
    assert np.array_equal(out, full[..., :40])
    with pytest.raises(ValueError, match="shape"):
        prog.pack({**t, "Q": t["Q"][..., :8]})
    with pytest.raises(ValueError, match="missing"):
        prog.pack({"Q": t["Q"]})


# ------------------------------------------------------------------ rejections
@pytest.mark.parametrize("kwargs,match", [
    (dict(batch=0), "'batch' = 0: must be at least 1"),
    (dict(seq_q=0), "'seq_q' = 0"),
    (dict(head_dim=0), "'head_dim' = 0"),
    (dict(heads=4, kv_heads=3), "'kv_heads' = 3: must divide heads = 4"),
    (dict(q_scale=0.0), "'q_scale' = 0.0: must be a positive finite"),
    (dict(out_scale=float("nan")), "'out_scale'"),
    (dict(seq_k=1 << 20), "'seq_k' = 1048576: must be at most"),
])
def test_workload_rejections(kwargs, match):
    base = dict(batch=1, heads=1, kv_heads=1, seq_q=16, seq_k=16, head_dim=16)
    with pytest.raises(WorkloadError, match=match):
        AttentionWorkload(**{**base, **kwargs})


def test_gemm_workload_rejection():
    with pytest.raises(WorkloadError, match="'K' = 0"):
        GemmWorkload(4, 4, 0)


def test_compile_rejections():
    with pytest.raises(CompileError, match=r"'head_dim' = 512: too large for config 'tiny'.*spad_rows"):
        compile_attention(_attn(16, head_dim=512), "tiny")
    with pytest.raises(CompileError, match=r"'head_dim' = 8192: must be at most 4080"):
        compile_attention(_attn(16, head_dim=8192), "default")
    with pytest.raises(CompileError, match=r"q_scale\*k_scale\*softmax_scale"):
        compile_attention(_attn(16, q_scale=1e-12, k_scale=1e-12), "default")
    with pytest.raises(CompileError, match=r"v_scale/out_scale"):
        compile_attention(_attn(16, v_scale=1.0, out_scale=1e-9), "default")
    # O = sum p*v in INT32: seq_k * P_SCALE * 128 must not wrap.
    compile_attention(_attn(16, MAX_SEQ_K, head_dim=16), "default")
    with pytest.raises(CompileError, match=rf"'seq_k' = {MAX_SEQ_K + 1}: must be at most {MAX_SEQ_K}"):
        compile_attention(_attn(16, MAX_SEQ_K + 1, head_dim=16), "default")
    assert issubclass(CompileError, ValueError)


def test_attention_tiles_fit_largest_first():
    assert attention_tiles(_attn(16, head_dim=64), "default") == (128, 64)
    assert attention_tiles(_attn(16, head_dim=128), "default") == (64, 64)


# ------------------------------------------------------------------ driver, CLI
def test_driver_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend = 'fpga'"):
        run(GemmWorkload(4, 4, 4), make_gemm_tensors(GemmWorkload(4, 4, 4), np.random.default_rng(0)),
            backend="fpga", config="tiny")


def test_cli_compile_summary(tmp_path, capsys):
    listing = tmp_path / "prog.s"
    rc = cli.main(["compile", "attention", "--config", "default", "--seq", "512", "--head-dim", "64",
                   "--heads", "4", "--causal", "--listing", str(listing)])
    assert rc == 0
    out = capsys.readouterr().out
    prog = compile_attention(_attn(512, heads=4, causal=True), "default")
    assert f"instructions: {len(prog.words)}" in out
    assert f"DRAM bytes:   {prog.dram_bytes}" in out
    assert f"spad {prog.onchip['spad_bytes']} B" in out and f"acc {prog.onchip['acc_bytes']} B" in out
    assert f"useful {prog.macs_useful}, issued {prog.macs_issued}" in out
    assert assemble(listing.read_text()) == prog.words


def test_cli_compile_gemm_and_error(capsys):
    assert cli.main(["compile", "gemm", "--config", "tiny", "-M", "20", "-N", "12", "-K", "40"]) == 0
    assert "gemm M=20 N=12 K=40" in capsys.readouterr().out
    assert cli.main(["compile", "attention", "--config", "tiny", "--head-dim", "512", "--seq", "16"]) == 2
    assert "'head_dim' = 512" in capsys.readouterr().err
