"""The golden model against an independent per-element reference, its checks, and a GEMM program."""

import random

import numpy as np
import pytest

from flashnpu.spec import isa
from flashnpu.sw.asm import assemble, decode_word
from flashnpu.spec.config import load_config
from flashnpu.sw.golden import GoldenNPU, NpuError, check
from flashnpu.spec.isa import ErrorCode, Mem, Opcode, VectorFunct
from flashnpu.spec.numerics import INT32_MAX, INT32_MIN, NEG_INF, P_SCALE, saturate_a, wrap32

from support import vector_ref

CONFIGS = ["tiny", "default"]


# ------------------------------------------------------------------ reference
class Ref:
    """Architectural state as Python lists; one instruction by literal per-element loops."""

    def __init__(self, g: GoldenNPU, dram: np.ndarray):
        self.cfg = g.config
        self.spad = g.spad.tolist()
        self.acc = g.acc.tolist()
        self.M, self.L, self.F = g.M.tolist(), g.L.tolist(), g.F.tolist()
        self.dram = bytearray(dram.tobytes())

    def execute(self, f):
        op, dim = f["opcode"], self.cfg.dim
        if op in (Opcode.LOAD, Opcode.STORE):
            rb = dim if f["mem"] == Mem.SPAD else 4 * dim
            for r in range(f["rows"]):
                for c in range(f["chunks"]):
                    row = f["sram_addr"] + c * f["sram_chunk_stride"] + r
                    a = f["dram_addr"] + r * f["dram_stride"] + c * rb
                    for l in range(dim):
                        if f["mem"] == Mem.SPAD:
                            if op == Opcode.LOAD:
                                v = self.dram[a + l]
                                self.spad[row][l] = v - 256 if v >= 128 else v
                            else:
                                self.dram[a + l] = self.spad[row][l] & 0xFF
                        else:
                            if op == Opcode.LOAD:
                                self.acc[row][l] = int.from_bytes(self.dram[a + 4 * l:a + 4 * l + 4], "little",
                                                                  signed=True)
                            else:
                                self.dram[a + 4 * l:a + 4 * l + 4] = self.acc[row][l].to_bytes(4, "little",
                                                                                               signed=True)
        elif op == Opcode.MATMUL:
            for nb in range(f["n_blocks"]):
                for kc in range(f["k_chunks"]):
                    base = f["w_addr"] + kc * f["w_kstride"] + nb * f["w_nstride"]
                    a_rows = [f["a_addr"] + kc * f["a_kstride"] + m for m in range(f["m_rows"])]
                    # The tile reads all its A rows before it writes (P = A @ W, then dst).
                    a_vals = [list(self.spad[r]) if f["a_mem"] == Mem.SPAD else
                              [saturate_a(x) for x in self.acc[r]] for r in a_rows]
                    for m in range(f["m_rows"]):
                        arow = a_vals[m]
                        dst = f["out_addr"] + nb * f["out_nstride"] + m
                        for n in range(dim):
                            p = 0
                            for k in range(dim):
                                w = self.spad[base + n][k] if f["transpose_w"] else self.spad[base + k][n]
                                p += arow[k] * w
                            if kc == 0 and not f["accumulate"]:
                                self.acc[dst][n] = p
                            else:
                                self.acc[dst][n] = wrap32(self.acc[dst][n] + p)
        elif op == Opcode.VECTOR:
            self._vector(f)

    def _vector(self, f):
        vector_ref.execute(f, self.cfg.dim, self.acc, self.spad, self.M, self.L, self.F)

    def assert_equal(self, g: GoldenNPU):
        assert g.spad.tolist() == self.spad
        assert g.acc.tolist() == self.acc
        assert g.M.tolist() == self.M and g.L.tolist() == self.L and g.F.tolist() == self.F
        assert g.dram.tobytes() == bytes(self.dram)


# ------------------------------------------------------------ random states
def _random_state(g: GoldenNPU, rng: np.random.Generator, small: bool):
    c = g.config
    g.spad[:] = rng.integers(-128, 128, g.spad.shape)
    if small:   # scores near the running max: exp arguments in the interesting range
        g.acc[:] = rng.integers(-6000, 6000, g.acc.shape)
        g.M[:] = rng.integers(-6000, 6000, c.vector_state_rows)
    else:
        g.acc[:] = rng.integers(INT32_MIN, INT32_MAX, g.acc.shape, endpoint=True)
        g.acc[rng.random(g.acc.shape) < 0.05] = INT32_MIN
        g.M[:] = rng.integers(INT32_MIN, INT32_MAX, c.vector_state_rows, endpoint=True)
        g.M[rng.random(c.vector_state_rows) < 0.2] = NEG_INF
    g.L[:] = rng.integers(-(1 << 20) if not small else 0, 1 << 24, c.vector_state_rows)
    # F: an exp factor (UQ1.15), or a huge reciprocal (products need more than 64 bits).
    g.F[:] = np.where(rng.random(c.vector_state_rows) < 0.5,
                      rng.integers(0, (1 << 15) + 1, c.vector_state_rows),
                      rng.integers(0, 1 << 47, c.vector_state_rows))


def _random_fields(op, cfg, rng: random.Random, image_size):
    dim = cfg.dim
    if op in (Opcode.LOAD, Opcode.STORE):
        mem = rng.choice([Mem.SPAD, Mem.ACC])
        rb = dim if mem == Mem.SPAD else 4 * dim
        size = cfg.spad_rows if mem == Mem.SPAD else cfg.acc_rows
        rows, chunks = rng.randint(1, 6), rng.randint(1, 3)
        stride = rng.choice([0, 1, rows, rows + 3, 2 * rows])
        sram_addr = rng.randint(0, size - 1 - (chunks - 1) * stride - (rows - 1))
        beat = cfg.dma_beat_bytes
        dstride = rng.choice([0, beat, chunks * rb, chunks * rb + beat, 3 * chunks * rb])
        span = (rows - 1) * dstride + chunks * rb
        dram_addr = rng.randrange(0, image_size - span + 1, beat)
        return dict(mem=mem, dram_addr=dram_addr, dram_stride=dstride, rows=rows, chunks=chunks,
                    sram_addr=sram_addr, sram_chunk_stride=stride)
    if op == Opcode.MATMUL:
        m, kcs, nbs = rng.randint(1, 2 * dim if dim <= 4 else dim), rng.randint(1, 3), rng.randint(1, 3)
        a_k = rng.choice([0, m, m + 1, 2 * dim])
        w_k = rng.choice([0, dim, dim + 2, 3 * dim])
        w_n = rng.choice([0, dim, 5 * dim])
        o_n = rng.choice([0, 1, m, m + 2])            # 0 and 1: overlapping output blocks
        sp = cfg.spad_rows
        a_mem = rng.choice([Mem.SPAD, Mem.ACC])
        a_size = sp if a_mem == Mem.SPAD else cfg.acc_rows
        return dict(accumulate=rng.randint(0, 1), transpose_w=rng.randint(0, 1), a_mem=a_mem, m_rows=m,
                    k_chunks=kcs, n_blocks=nbs,
                    a_addr=rng.randint(0, a_size - 1 - (kcs - 1) * a_k - (m - 1)), a_kstride=a_k,
                    w_addr=rng.randint(0, sp - 1 - (kcs - 1) * w_k - (nbs - 1) * w_n - (dim - 1)),
                    w_kstride=w_k, w_nstride=w_n,
                    out_addr=rng.randint(0, cfg.acc_rows - 1 - (nbs - 1) * o_n - (m - 1)), out_nstride=o_n)
    funct = rng.choice(list(VectorFunct))
    rows, blocks = rng.randint(1, 2 * dim), rng.randint(1, 4)
    a_s = rng.choice([0, rows, rows + 1, 1])       # 0 and 1 alias blocks
    s_s = rng.choice([0, rows, rows + 5])
    small = rng.random() < 0.5
    mult = rng.randint(0, (1 << 16) - 1) if funct == VectorFunct.RECIP else \
        (rng.randint(1 << 11, 1 << 14) if small else rng.randint(0, (1 << 32) - 1))
    return dict(funct=funct, rows=rows, blocks=blocks,
                acc_addr=rng.randint(0, cfg.acc_rows - 1 - (blocks - 1) * a_s - (rows - 1)), acc_block_stride=a_s,
                state_addr=rng.randint(0, cfg.vector_state_rows - rows),
                spad_addr=rng.randint(0, cfg.spad_rows - 1 - (blocks - 1) * s_s - (rows - 1)), spad_block_stride=s_s,
                kv_valid=rng.randint(0, blocks * dim + 2), causal=rng.randint(0, 1),
                causal_offset=rng.randint(-3, 2 * dim), mult=mult,
                shift=rng.randint(10, 14) if small else rng.randint(0, 63))


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("op", [Opcode.LOAD, Opcode.STORE, Opcode.MATMUL, Opcode.VECTOR])
def test_instruction_vs_reference(config, op):
    cfg = load_config(config)
    rng = random.Random(CONFIGS.index(config) * 16 + int(op))
    nrng = np.random.default_rng(int(op))
    n = 80 if config == "tiny" else 25
    functs = set()
    for _ in range(n):
        g = GoldenNPU(cfg)
        _random_state(g, nrng, small=rng.random() < 0.5)
        image = nrng.integers(0, 256, 4096, dtype=np.uint8)
        g.dram = image.copy()
        f = _random_fields(op, cfg, rng, image.size)
        word = isa.encode(op, **f)
        assert check(word, cfg) == ErrorCode.NONE
        ref = Ref(g, image)
        ref.execute(decode_word(word))
        g.execute(word)
        ref.assert_equal(g)
        functs.add(f.get("funct"))
    if op == Opcode.VECTOR:
        assert len(functs) >= 5


@pytest.mark.parametrize("config", CONFIGS)
def test_matmul_a_from_acc_reads_earlier_tiles(config):
    """a_mem = ACC with A rows that earlier tiles of the same MATMUL write: tile by tile, as the loops say."""
    cfg = load_config(config)
    dim = cfg.dim
    nrng = np.random.default_rng(7)
    for m, a_k, o_n, acc in ((dim, dim, dim, 0), (3, 3, 0, 1), (2 * dim, 0, 1, 0), (5, 1, 5, 1)):
        g = GoldenNPU(cfg)
        _random_state(g, nrng, small=True)
        f = dict(accumulate=acc, transpose_w=0, a_mem=Mem.ACC, m_rows=m, k_chunks=3, n_blocks=2,
                 a_addr=40, a_kstride=a_k, w_addr=0, w_kstride=dim, w_nstride=3 * dim,
                 out_addr=40 + (a_k or 1), out_nstride=o_n)
        a_rows = {40 + kc * a_k + i for kc in range(3) for i in range(m)}
        out_rows = {f["out_addr"] + nb * o_n + i for nb in range(2) for i in range(m)}
        assert a_rows & out_rows                                 # the aliasing case
        word = isa.encode(Opcode.MATMUL, **f)
        ref = Ref(g, g.dram)
        ref.execute(decode_word(word))
        g.execute(word)
        ref.assert_equal(g)


def test_exp_rows_nontrivial():
    """The EXP case above is not all zeros: near-max scores give probabilities across the range."""
    cfg = load_config("tiny")
    g = GoldenNPU(cfg)
    g.acc[:4] = np.array([[0, -100, -2000, -5000]] * 4)
    g.M[:4] = 0
    g.F[:4] = 1 << 15
    g.execute(isa.encode(Opcode.VECTOR, funct=VectorFunct.EXP, rows=4, blocks=1, kv_valid=4,
                         mult=1 << 12, shift=12))
    p = g.acc[0].tolist()                  # in place over the scores
    for got, diff in zip(p, [0, -100, -2000, -5000]):
        assert abs(got - P_SCALE * 2.0 ** (diff / 4096)) <= 1
    assert p[0] == P_SCALE and len(set(p)) == 4
    assert g.L[0] == sum(p)


def test_decode_word_matches_isa_decode():
    rng = random.Random(5)
    for _ in range(500):
        w = rng.getrandbits(256)
        w = (w & ~0xF) | rng.choice([1, 2, 3, 4, 15, 0, 7])
        assert decode_word(w) == isa.decode(w)


# ------------------------------------------------------------------- checks
def _image(words, size=8192, prog_addr=0):
    img = np.zeros(size, dtype=np.uint8)
    for k, w in enumerate(words):
        a = prog_addr + 32 * k
        img[a:a + 32] = np.frombuffer(int(w).to_bytes(32, "little"), dtype=np.uint8)
    return img


def _expect(config, words, code, pc, size=8192):
    with pytest.raises(NpuError) as e:
        GoldenNPU(config).run(_image(words, size), 0)
    assert e.value.code == code and e.value.pc == pc, str(e.value)
    assert code.name in str(e.value) and f"pc {pc}" in str(e.value)
    if code in STATIC_CODES:
        assert check(words[pc], load_config(config)) == code


STATIC_CODES = {ErrorCode.ILLEGAL_OPCODE, ErrorCode.ILLEGAL_FUNCT, ErrorCode.BAD_TOKEN_MASK, ErrorCode.BAD_FIELD,
                ErrorCode.SPAD_RANGE, ErrorCode.ACC_RANGE, ErrorCode.STATE_RANGE, ErrorCode.DMA_MISALIGNED}
E = Opcode
V = VectorFunct
NOP = isa.encode(E.VECTOR, funct=V.INIT, rows=1, blocks=1)
HALT = isa.encode(E.HALT)


def _ld(**kw):
    f = dict(mem=0, dram_addr=4096, dram_stride=0, rows=1, chunks=1, sram_addr=0, sram_chunk_stride=0)
    f.update(kw)
    return isa.encode(E.LOAD, **f)


def _mm(**kw):
    f = dict(m_rows=1, k_chunks=1, n_blocks=1)
    f.update(kw)
    return isa.encode(E.MATMUL, **f)


def _vec(funct, **kw):
    f = dict(funct=funct, rows=1, blocks=1)
    f.update(kw)
    return isa.encode(E.VECTOR, **f)


def _static_cases(cfg):
    """(word, expected code) for checks 1-6, including 'first failure wins' pairs and exact limits."""
    d, sp, ac, st = cfg.dim, cfg.spad_rows, cfg.acc_rows, cfg.vector_state_rows
    beat = cfg.dma_beat_bytes
    return [
        (0, ErrorCode.ILLEGAL_OPCODE),
        (0x5 | 0x10, ErrorCode.ILLEGAL_OPCODE),
        (isa.encode(E.HALT, wait=1), ErrorCode.BAD_TOKEN_MASK),
        (isa.encode(E.HALT, signal=8), ErrorCode.BAD_TOKEN_MASK),
        (isa.encode(E.LOAD, wait=1, rows=1, chunks=1), ErrorCode.BAD_TOKEN_MASK),
        (isa.encode(E.STORE, signal=2, rows=1, chunks=1), ErrorCode.BAD_TOKEN_MASK),
        (isa.encode(E.MATMUL, wait=4, m_rows=1, k_chunks=1, n_blocks=1), ErrorCode.BAD_TOKEN_MASK),
        (isa.encode(E.VECTOR, signal=8, funct=9), ErrorCode.BAD_TOKEN_MASK),      # 2 before 3
        (isa.encode(E.VECTOR, funct=9, rows=0), ErrorCode.ILLEGAL_FUNCT),        # 3 before 4
        (isa.encode(E.VECTOR, funct=15, rows=1, blocks=1), ErrorCode.ILLEGAL_FUNCT),
        (_ld(rows=0, dram_addr=1), ErrorCode.BAD_FIELD),                          # 4 before 5
        (_ld(chunks=0), ErrorCode.BAD_FIELD),
        (_mm(m_rows=0), ErrorCode.BAD_FIELD),
        (_mm(k_chunks=0), ErrorCode.BAD_FIELD),
        (_mm(n_blocks=0), ErrorCode.BAD_FIELD),
        (_vec(V.INIT, rows=0), ErrorCode.BAD_FIELD),
        (_vec(V.RECIP, blocks=0), ErrorCode.BAD_FIELD),
        (_vec(V.RECIP, mult=1 << 16), ErrorCode.BAD_FIELD),
        (_vec(V.RECIP, mult=(1 << 16) - 1), ErrorCode.NONE),
        (_vec(V.REQUANT, mult=1 << 31), ErrorCode.NONE),
        (_ld(dram_addr=4096 + beat // 2, sram_addr=sp), ErrorCode.DMA_MISALIGNED),  # 5 before 6
        (_ld(dram_stride=beat + beat // 2), ErrorCode.DMA_MISALIGNED),
        (_ld(sram_addr=sp - 1), ErrorCode.NONE),
        (_ld(sram_addr=sp - 1, rows=2), ErrorCode.SPAD_RANGE),
        (_ld(mem=1, sram_addr=ac - 3, rows=2, chunks=2, sram_chunk_stride=1), ErrorCode.NONE),
        (_ld(mem=1, sram_addr=ac - 3, rows=2, chunks=2, sram_chunk_stride=2), ErrorCode.ACC_RANGE),
        (isa.encode(E.STORE, mem=1, rows=ac + 1, chunks=1), ErrorCode.ACC_RANGE),
        (_mm(a_addr=sp - 2, m_rows=2, w_addr=sp - d), ErrorCode.NONE),
        (_mm(a_addr=sp - 2, m_rows=3, out_addr=ac), ErrorCode.SPAD_RANGE),        # A before out
        (_mm(a_mem=1, a_addr=ac - 2, m_rows=2, w_addr=sp - d), ErrorCode.NONE),   # A in the accumulator
        (_mm(a_mem=1, a_addr=ac - 2, m_rows=3, w_addr=sp), ErrorCode.ACC_RANGE),  # A before W
        (_mm(a_mem=1, k_chunks=2, a_kstride=ac - 1), ErrorCode.NONE),
        (_mm(a_mem=1, k_chunks=2, a_kstride=ac), ErrorCode.ACC_RANGE),
        (_mm(a_mem=1, a_addr=sp - 1, m_rows=2), ErrorCode.ACC_RANGE if ac < sp else ErrorCode.NONE),
        (_mm(k_chunks=2, a_kstride=sp, w_addr=0), ErrorCode.SPAD_RANGE),
        (_mm(w_addr=sp - d + 1, out_addr=ac), ErrorCode.SPAD_RANGE),              # W before out
        (_mm(n_blocks=2, w_nstride=sp - d + 1), ErrorCode.SPAD_RANGE),
        (_mm(k_chunks=3, w_kstride=(sp - d) // 2 + 1), ErrorCode.SPAD_RANGE),
        (_mm(out_addr=ac - 1), ErrorCode.NONE),
        (_mm(out_addr=ac - 1, m_rows=2), ErrorCode.ACC_RANGE),
        (_mm(n_blocks=3, out_nstride=ac // 2), ErrorCode.ACC_RANGE),
        (_vec(V.INIT, state_addr=st - 1), ErrorCode.NONE),
        (_vec(V.INIT, state_addr=st - 1, rows=2), ErrorCode.STATE_RANGE),
        (_vec(V.RECIP, state_addr=st, acc_addr=ac), ErrorCode.STATE_RANGE),
        (_vec(V.INIT, acc_addr=ac, spad_addr=sp), ErrorCode.NONE),                # INIT: no acc/spad
        (_vec(V.RECIP, acc_addr=ac, spad_addr=sp), ErrorCode.NONE),
        (_vec(V.ROWMAX, acc_addr=ac, state_addr=st), ErrorCode.STATE_RANGE),     # state before acc
        (_vec(V.ROWMAX, acc_addr=ac - 1, spad_addr=sp), ErrorCode.NONE),         # ROWMAX: no spad
        (_vec(V.ROWMAX, blocks=2, acc_block_stride=1, acc_addr=ac - 2), ErrorCode.NONE),
        (_vec(V.ROWMAX, blocks=2, acc_block_stride=1, acc_addr=ac - 1), ErrorCode.ACC_RANGE),
        (_vec(V.SCALE, acc_addr=ac, spad_addr=sp), ErrorCode.ACC_RANGE),
        (_vec(V.SCALE, spad_addr=sp), ErrorCode.NONE),
        (_vec(V.EXP, acc_addr=ac, spad_addr=sp), ErrorCode.ACC_RANGE),
        (_vec(V.EXP, spad_addr=sp), ErrorCode.NONE),                              # EXP: in place, no spad
        (_vec(V.OUTPUT, acc_addr=ac, spad_addr=sp), ErrorCode.ACC_RANGE),        # acc before spad
        (_vec(V.OUTPUT, rows=2, spad_addr=sp - 2), ErrorCode.NONE),
        (_vec(V.OUTPUT, rows=2, blocks=2, spad_block_stride=1, spad_addr=sp - 2), ErrorCode.SPAD_RANGE),
        (_vec(V.REQUANT, spad_addr=sp), ErrorCode.SPAD_RANGE),
    ]


@pytest.mark.parametrize("config", CONFIGS)
def test_static_checks(config):
    cfg = load_config(config)
    for k, (word, code) in enumerate(_static_cases(cfg)):
        assert check(word, cfg) == code, (k, code)
        if code == ErrorCode.NONE:
            continue
        # The failing instruction at pc 2, after two legal ones.
        _expect(cfg, [NOP, NOP, word, HALT], code, 2)


def test_misaligned_beat_sizes():
    for config in CONFIGS:
        cfg = load_config(config)
        beat = cfg.dma_beat_bytes
        assert check(_ld(dram_addr=4096 + beat), cfg) == ErrorCode.NONE
        assert check(_ld(dram_stride=3 * beat), cfg) == ErrorCode.NONE
        for off in (1, beat // 2, beat - 1):
            assert check(_ld(dram_addr=4096 + off), cfg) == ErrorCode.DMA_MISALIGNED
            assert check(_ld(dram_stride=beat + off), cfg) == ErrorCode.DMA_MISALIGNED


def test_runtime_checks():
    cfg = load_config("tiny")
    ld = _ld(signal=1 << 2)
    mm = _mm(wait=1 << 0)
    # 7: pop before push, in program order
    _expect(cfg, [NOP, mm, ld, HALT], ErrorCode.TOKEN_UNDERFLOW, 1)
    # 7: overflow: the 16th LOAD->MATRIX token with token_bits = 4
    _expect(cfg, [ld] * 16 + [mm] * 16 + [HALT], ErrorCode.TOKEN_OVERFLOW, 15)
    GoldenNPU(cfg).run(_image([ld] * 15 + [mm] * 15 + [HALT]), 0)
    # HALT with a token left
    _expect(cfg, [ld, ld, mm, HALT], ErrorCode.TOKENS_LEFT, 3)
    # DRAM beyond the image, LOAD and STORE (exactly at the end is fine)
    size = 8192
    rb = cfg.dim
    ok = _ld(dram_addr=size - rb)
    GoldenNPU(cfg).run(_image([ok, HALT], size), 0)
    _expect(cfg, [NOP, _ld(dram_addr=size - rb + cfg.dma_beat_bytes)], ErrorCode.AXI_DECERR, 1, size)
    _expect(cfg, [_ld(mem=1, rows=2, dram_stride=size - 4 * rb + cfg.dma_beat_bytes, dram_addr=0)], ErrorCode.AXI_DECERR, 0, size)
    st = isa.encode(E.STORE, dram_addr=size, rows=1, chunks=1)
    _expect(cfg, [NOP, NOP, st, HALT], ErrorCode.AXI_DECERR, 2, size)
    # fetch beyond the image: a program without HALT runs off the end
    _expect(cfg, [NOP] * 3, ErrorCode.FETCH_ERROR, 3, 96)
    with pytest.raises(NpuError) as e:
        GoldenNPU(cfg).run(_image([NOP, HALT], 64), 32 * 2)
    assert e.value.code == ErrorCode.FETCH_ERROR and e.value.pc == 0


def test_run_result_and_trace():
    cfg = load_config("tiny")
    img = _image([NOP, NOP, HALT])
    r = GoldenNPU(cfg).run(img, 0, trace=True)
    assert r.instructions == 3 and [t["pc"] for t in r.trace] == [0, 1, 2]
    assert r.trace[2]["opcode"] == Opcode.HALT
    assert r.dram is not img and np.array_equal(r.dram, img)
    with pytest.raises(ValueError, match="prog_addr"):
        GoldenNPU(cfg).run(img, 16)
    with pytest.raises(RuntimeError, match="max_instructions"):
        GoldenNPU(cfg).run(img, 0, max_instructions=2)


# --------------------------------------------------------------------- GEMM
@pytest.mark.parametrize("config,m,k,n,transpose", [("tiny", 12, 8, 8, False), ("tiny", 5, 12, 4, True),
                                                     ("default", 32, 48, 32, True)])
def test_gemm_program(config, m, k, n, transpose):
    """C = wrap32(C0 + A @ B) through a hand-written LOAD/MATMUL/STORE program."""
    cfg = load_config(config)
    d = cfg.dim
    rng = np.random.default_rng(m * k * n)
    A = rng.integers(-128, 128, (m, k), dtype=np.int8)
    B = rng.integers(-128, 128, (k, n), dtype=np.int8)
    C0 = (INT32_MAX - rng.integers(0, 1000, (m, n))).astype(np.int32)   # a positive product wraps
    kc, nb = k // d, n // d
    a_at, b_at, c_at = 0x4000, 0x8000, 0xC000
    img = np.zeros(0x10000, dtype=np.uint8)
    img[a_at:a_at + A.size] = A.view(np.uint8).ravel()
    Bs = B.T.copy() if transpose else B
    img[b_at:b_at + Bs.size] = Bs.view(np.uint8).ravel()
    img[c_at:c_at + C0.nbytes] = C0.view(np.uint8).ravel()
    # Scratchpad: A chunk c row r at c*m + r; B (or B^T) rows from w0; C in the accumulator.
    w0 = kc * m
    if transpose:     # B^T is n rows of k: row j (output column) chunk c at w0 + c*n + j
        w = f"w_addr={w0} w_kstride={n} w_nstride={d} transpose_w=1"
        ldb = f"load signal=matrix mem=spad dram_addr={b_at} dram_stride={k} rows={n} chunks={kc} sram_addr={w0} sram_chunk_stride={n}"
    else:             # B is k rows of n: row r chunk c at w0 + c*k + r
        w = f"w_addr={w0} w_kstride={d} w_nstride={k}"
        ldb = f"load signal=matrix mem=spad dram_addr={b_at} dram_stride={n} rows={k} chunks={nb} sram_addr={w0} sram_chunk_stride={k}"
    text = f"""
        load mem=spad dram_addr={a_at} dram_stride={k} rows={m} chunks={kc} sram_addr=0 sram_chunk_stride={m}
        load mem=acc dram_addr={c_at} dram_stride={4 * n} rows={m} chunks={nb} sram_addr=0 sram_chunk_stride={m}
        {ldb}
        matmul wait=load signal=store accumulate=1 m_rows={m} k_chunks={kc} n_blocks={nb} a_addr=0 a_kstride={m} {w} out_addr=0 out_nstride={m}
        store wait=matrix mem=acc dram_addr={c_at} dram_stride={4 * n} rows={m} chunks={nb} sram_addr=0 sram_chunk_stride={m}
        halt
    """
    words = assemble(text)
    img[:32 * len(words)] = _image(words, 32 * len(words))
    r = GoldenNPU(cfg).run(img, 0)
    C = np.frombuffer(r.dram[c_at:c_at + C0.nbytes].tobytes(), dtype="<i4").reshape(m, n)
    expect = wrap32(C0.astype(np.int64) + A.astype(np.int64) @ B.astype(np.int64))
    assert np.array_equal(C, expect)
    assert (C.astype(np.int64) != C0.astype(np.int64) + A.astype(np.int64) @ B).any()   # it did wrap
    assert r.instructions == len(words)
