"""InstrChecker against the golden model's ``check`` on random and boundary words."""

import random
from collections import Counter

import pytest
from amaranth.sim import Simulator

from flashnpu.hw.decoder import InstrChecker
from flashnpu.sw.asm import encode_word, instr_fields
from flashnpu.spec.config import load_config
from flashnpu.sw.golden import check
from flashnpu.spec.isa import INSTR_BITS, ErrorCode, Mem, Opcode, VectorFunct


def hw_check(cfg, words):
    """Run every word through the RTL checker; return the error codes."""
    dut = InstrChecker(cfg)
    out = []

    async def tb(ctx):
        for w in words:
            ctx.set(dut.word.as_value(), w)
            out.append(ctx.get(dut.error))

    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()
    return out


def _field_value(rng, name, width, signed, cfg, limit):
    """A value that often lands near a range limit, sometimes anywhere in the field."""
    top = (1 << width) - 1
    r = rng.random()
    if signed:
        return rng.randint(-(1 << (width - 1)), (1 << (width - 1)) - 1)
    if r < 0.1:
        return rng.choice([0, 1, top, top - 1])
    if r < 0.15:
        return rng.randint(0, top)
    if name in ("rows", "m_rows", "chunks", "k_chunks", "n_blocks", "blocks"):
        return min(top, rng.choice([1, 1, 2, 3, 4, rng.randint(1, 40)]))
    if name.endswith("stride") or "stride" in name:
        if name == "dram_stride":
            return rng.choice([0, cfg.dma_beat_bytes, 3 * cfg.dma_beat_bytes, rng.randint(0, 999)])
        return min(top, rng.choice([0, 1, rng.randint(0, 8), rng.randint(0, 300)]))
    if name.endswith("addr"):
        if name == "dram_addr":
            return rng.choice([0, cfg.dma_beat_bytes * rng.randint(0, 1000), rng.randint(0, top)])
        return min(top, max(0, limit - rng.randint(0, 40)) if rng.random() < 0.7 else rng.randint(0, limit))
    if name == "funct":
        return rng.randint(0, 15) if rng.random() < 0.2 else rng.randint(0, 6)
    if name == "mult":
        return rng.choice([0, (1 << 16) - 1, 1 << 16, rng.randint(0, 1 << 17), rng.randint(0, top)])
    if name in ("wait", "signal"):
        return rng.choice([0, 0, 1 << rng.randint(0, 3), rng.randint(0, 15)])
    return rng.randint(0, top)


def random_word(rng, cfg):
    r = rng.random()
    if r < 0.05:
        return rng.getrandbits(INSTR_BITS)                      # anything at all
    op = rng.choice(list(Opcode))
    if r < 0.1:
        # An illegal opcode with a plausible body.
        op_raw = rng.choice([0, 5, 6, 7, 8, 9, 0xA, 0xE])
        return (rng.getrandbits(INSTR_BITS) & ~0xF) | op_raw
    limits = {"sram_addr": cfg.spad_rows if rng.random() < 0.5 else cfg.acc_rows,
              "a_addr": cfg.spad_rows if rng.random() < 0.5 else cfg.acc_rows, "w_addr": cfg.spad_rows - cfg.dim, "out_addr": cfg.acc_rows,
              "acc_addr": cfg.acc_rows, "spad_addr": cfg.spad_rows, "state_addr": cfg.vector_state_rows}
    fields = {}
    for name, _off, width, signed in instr_fields(op):
        if name == "opcode":
            continue
        if op == Opcode.HALT and name in ("wait", "signal") and rng.random() < 0.7:
            fields[name] = 0
            continue
        fields[name] = _field_value(rng, name, width, signed, cfg, limits.get(name, 0))
    word = encode_word(op, **fields)
    if rng.random() < 0.1:
        word |= rng.getrandbits(INSTR_BITS) & ~((1 << 12) - 1) & ~_used(op)   # junk in unused bits
    return word


def _used(op):
    m = 0
    for _n, off, width, _s in instr_fields(op):
        m |= ((1 << width) - 1) << off
    return m


def range_words(cfg, delta):
    """Words whose last touched row is the last legal row (``delta=0``) or one past it (1)."""
    d = cfg.dim
    beat = cfg.dma_beat_bytes
    words = []
    for mem, rows_lim in ((Mem.SPAD, cfg.spad_rows), (Mem.ACC, cfg.acc_rows)):
        # last = sram_addr + (chunks-1)*stride + rows - 1
        words.append(encode_word(Opcode.LOAD, mem=mem, dram_addr=beat, dram_stride=2 * beat,
                                 rows=3, chunks=2, sram_chunk_stride=5,
                                 sram_addr=rows_lim - 1 - 5 - 2 + delta))
        words.append(encode_word(Opcode.STORE, mem=mem, rows=1, chunks=1, sram_addr=rows_lim - 1 + delta))
    base = dict(m_rows=2, k_chunks=3, n_blocks=2, a_kstride=4, w_kstride=d, w_nstride=3 * d,
                out_nstride=7)
    words.append(encode_word(Opcode.MATMUL, **base, a_addr=cfg.spad_rows - 1 - 8 - 1 + delta))
    words.append(encode_word(Opcode.MATMUL, **base, a_mem=Mem.ACC, a_addr=cfg.acc_rows - 1 - 8 - 1 + delta))
    words.append(encode_word(Opcode.MATMUL, **base, w_addr=cfg.spad_rows - 1 - 2 * d - 3 * d - (d - 1) + delta))
    words.append(encode_word(Opcode.MATMUL, **base, out_addr=cfg.acc_rows - 1 - 7 - 1 + delta))
    for f in VectorFunct:
        vb = dict(funct=f, rows=3, blocks=2, mult=5)
        words.append(encode_word(Opcode.VECTOR, **vb, state_addr=cfg.vector_state_rows - 3 + delta))
        words.append(encode_word(Opcode.VECTOR, **vb, acc_block_stride=6,
                                 acc_addr=cfg.acc_rows - 1 - 6 - 2 + delta))
        words.append(encode_word(Opcode.VECTOR, **vb, spad_block_stride=9,
                                 spad_addr=cfg.spad_rows - 1 - 9 - 2 + delta))
    return words


def boundary_words(cfg):
    """The range boundaries, then edges of checks 2, 4 and 5 and the precedence between checks."""
    beat = cfg.dma_beat_bytes
    words = range_words(cfg, 0) + range_words(cfg, 1)
    # Check 4 and 5 edges, and the precedence between checks.
    words += [
        encode_word(Opcode.VECTOR, funct=VectorFunct.RECIP, rows=1, blocks=1, mult=(1 << 16) - 1),
        encode_word(Opcode.VECTOR, funct=VectorFunct.RECIP, rows=1, blocks=1, mult=1 << 16),
        encode_word(Opcode.VECTOR, funct=VectorFunct.RECIP, rows=0, blocks=1, mult=1 << 16,
                    state_addr=4095),
        encode_word(Opcode.VECTOR, funct=VectorFunct.REQUANT, rows=1, blocks=1, mult=1 << 20),
        encode_word(Opcode.VECTOR, funct=7, wait=8, rows=0),
        encode_word(Opcode.VECTOR, funct=7, rows=0),
        encode_word(Opcode.LOAD, rows=1, chunks=1, dram_addr=beat // 2 if beat > 1 else 0),
        encode_word(Opcode.LOAD, rows=1, chunks=1, dram_stride=1, sram_addr=65535),
        encode_word(Opcode.LOAD, rows=0, chunks=1, dram_stride=1, sram_addr=65535),
        encode_word(Opcode.STORE, signal=2, rows=1, chunks=1),
        encode_word(Opcode.STORE, wait=1, signal=4, rows=1, chunks=1),
        encode_word(Opcode.MATMUL, signal=4, m_rows=0),
        encode_word(Opcode.MATMUL, m_rows=1, k_chunks=1, n_blocks=0),
        encode_word(Opcode.HALT), encode_word(Opcode.HALT, wait=1), encode_word(Opcode.HALT, signal=8),
        encode_word(Opcode.HALT) | (1 << 200),   # junk in a HALT's unused bits is not checked
        0, (1 << INSTR_BITS) - 1,
    ]
    return words


@pytest.mark.parametrize("name,n", [("tiny", 3000), ("default", 800)])
def test_checker_matches_golden(name, n):
    cfg = load_config(name)
    rng = random.Random(name)
    words = boundary_words(cfg) + [random_word(rng, cfg) for _ in range(n)]
    want = [check(w, cfg) for w in words]
    got = hw_check(cfg, words)
    bad = [(hex(w), ErrorCode(g).name, e.name) for w, g, e in zip(words, got, want) if g != e]
    assert not bad, bad[:5]
    # The random mix must exercise every check, so that the comparison means something.
    seen = Counter(want)
    for code in (ErrorCode.NONE, ErrorCode.ILLEGAL_OPCODE, ErrorCode.BAD_TOKEN_MASK,
                 ErrorCode.ILLEGAL_FUNCT, ErrorCode.BAD_FIELD, ErrorCode.DMA_MISALIGNED,
                 ErrorCode.SPAD_RANGE, ErrorCode.ACC_RANGE, ErrorCode.STATE_RANGE):
        assert seen[code] >= 5, (code.name, seen)


def test_boundaries_exact():
    """The last legal row passes and the next one fails, for every range of check 6."""
    cfg = load_config("tiny")
    legal, over = range_words(cfg, 0), range_words(cfg, 1)
    got = hw_check(cfg, legal + over)
    assert got[:len(legal)] == [ErrorCode.NONE] * len(legal)
    # A VECTOR range that its funct does not touch stays legal one row past it.
    E, F = ErrorCode, VectorFunct
    vec = []
    for f in F:
        vec += [E.STATE_RANGE,
                E.ACC_RANGE if f not in (F.INIT, F.RECIP) else E.NONE,
                E.SPAD_RANGE if f in (F.OUTPUT, F.REQUANT) else E.NONE]     # EXP writes in place
    want = [E.SPAD_RANGE, E.SPAD_RANGE, E.ACC_RANGE, E.ACC_RANGE,
            E.SPAD_RANGE, E.ACC_RANGE, E.SPAD_RANGE, E.ACC_RANGE] + vec
    assert got[len(legal):] == want
