"""VectorUnit in Amaranth's simulator against a Python model of the VECTOR semantics.

The testbench models the accumulator and scratchpad SRAMs in Python (read data
the cycle after ``en``, held while ``en`` is low, a same-cycle write not yet
visible), preloads the unit's state memories, streams instructions and checks:
the final accumulator, scratchpad and state against ``ref_vector`` (the loops
of docs/architecture.md on spec/numerics.py functions, tests/support/vector_ref.py) and
against ``GoldenNPU``; every take/done cycle against the cycle model of
docs/vector_unit.md; ``error`` always 0 and ``busy`` exactly while in flight.
"""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from flashnpu.hw.vector_unit import VectorUnit
from flashnpu.spec.timing import timing
from flashnpu.sw.perfmodel import scale_stall_cycles, vector_cycles
from flashnpu.spec.config import load_config
from flashnpu.sw.golden import GoldenNPU
from flashnpu.spec.isa import Opcode, VectorFunct, decode, encode
from flashnpu.spec.numerics import INT32_MAX, INT32_MIN, NEG_INF, P_SCALE, wrap32

from support import vector_ref

TINY = load_config("tiny")
DEFAULT = load_config("default")
F = VectorFunct
M32 = (1 << 32) - 1


# ------------------------------------------------------------------ model
class State:
    """Architectural state touched by VECTOR: accumulator, scratchpad, M, L, F (Python ints)."""

    def __init__(self, cfg, rng=None):
        self.dim = cfg.dim
        self.acc = np.zeros((cfg.acc_rows, cfg.dim), dtype=np.int64)
        self.spad = np.zeros((cfg.spad_rows, cfg.dim), dtype=np.int64)
        self.M = [0] * cfg.vector_state_rows
        self.L = [0] * cfg.vector_state_rows
        self.F = [0] * cfg.vector_state_rows

    def copy(self):
        c = State.__new__(State)
        c.dim, c.acc, c.spad = self.dim, self.acc.copy(), self.spad.copy()
        c.M, c.L, c.F = list(self.M), list(self.L), list(self.F)
        return c


def ref_vector(st, f):
    """One VECTOR instruction, element by element (tests/support/vector_ref.py)."""
    vector_ref.execute(f, st.dim, st.acc, st.spad, st.M, st.L, st.F)


def scale_stalls(cfg, f):
    """Issue cycles lost by a SCALE or EXP whose elements read rows still being written (docs/vector_unit.md)."""
    return scale_stall_cycles(timing(cfg), f["rows"], f["blocks"], f["acc_addr"], f["acc_block_stride"],
                              funct=f["funct"])


def expected_cycles(cfg, f):
    return vector_cycles(timing(cfg), f["funct"], f["rows"], f["blocks"]) + scale_stalls(cfg, f)


# ------------------------------------------------------------- simulation
def pack(vals, bits):
    return sum((int(v) & ((1 << bits) - 1)) << (bits * k) for k, v in enumerate(vals))


def unpack(word, bits, n):
    out = []
    for k in range(n):
        v = (word >> (bits * k)) & ((1 << bits) - 1)
        out.append(v - (1 << bits) if v >> (bits - 1) else v)
    return out


def simulate(cfg, st, words, gaps=None, state_rows=None):
    """Run ``words`` on a VectorUnit whose SRAMs and state start as ``st``; update ``st`` in place.

    ``gaps[j]``: idle cycles before instruction j is offered (after the previous take).
    Returns ``[(take cycle, done cycle)]`` per instruction.
    """
    dut = VectorUnit(cfg)
    dim = cfg.dim
    gaps = gaps or [0] * len(words)
    srows = range(cfg.vector_state_rows) if state_rows is None else state_rows
    takes, dones = [], []

    async def tb(ctx):
        for r in srows:
            ctx.set(dut.state_m.data[r], st.M[r] & M32)
            ctx.set(dut.state_l.data[r], st.L[r] & M32)
            ctx.set(dut.state_f.data[r], st.F[r])
        cyc, j, wait = 0, 0, gaps[0] if words else 0
        acc_rd_data = 0
        busy_expected = False
        while len(dones) < len(words) or cyc < (dones[-1] if dones else 0) + 3:
            assert cyc < 200_000, "hang"
            offer = j < len(words) and wait == 0
            ctx.set(dut.unit.instr.valid, offer)
            if offer:
                ctx.set(dut.unit.instr.payload.as_value(), words[j])
            assert ctx.get(dut.unit.error) == 0
            assert ctx.get(dut.unit.busy) == busy_expected, f"busy at cycle {cyc}"
            took = offer and ctx.get(dut.unit.instr.ready)
            done = ctx.get(dut.unit.done)
            rd = (ctx.get(dut.acc_rd.en), ctx.get(dut.acc_rd.addr))
            aw = (ctx.get(dut.acc_wr.en), ctx.get(dut.acc_wr.addr), ctx.get(dut.acc_wr.data))
            sw = (ctx.get(dut.spad_wr.en), ctx.get(dut.spad_wr.addr), ctx.get(dut.spad_wr.data))
            if done:
                assert len(dones) < len(takes), f"done without an instruction at cycle {cyc}"
                dones.append(cyc)
            if took:
                takes.append(cyc)
                j += 1
                wait = gaps[j] if j < len(words) else 0
            elif j < len(words) and wait:
                wait -= 1
            busy_expected = len(takes) > len(dones)
            await ctx.tick()
            cyc += 1
            # The SRAM model: the read sees the contents before this edge's write.
            if rd[0]:
                acc_rd_data = pack(st.acc[rd[1]], 32)
            if aw[0]:
                st.acc[aw[1]] = unpack(aw[2], 32, dim)
            if sw[0]:
                st.spad[sw[1]] = unpack(sw[2], 8, dim)
            ctx.set(dut.acc_rd.data, acc_rd_data)
        for r in srows:
            st.M[r] = unpack(ctx.get(dut.state_m.data[r]), 32, 1)[0]
            st.L[r] = unpack(ctx.get(dut.state_l.data[r]), 32, 1)[0]
            st.F[r] = ctx.get(dut.state_f.data[r])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return list(zip(takes, dones)), dut


def vword(**f):
    return encode(Opcode.VECTOR, **f)


def fields(word):
    return decode(word)


def run_and_check(cfg, st, words, gaps=None, golden=True, state_rows=None):
    """Simulate; compare data with ref_vector (and GoldenNPU), and every cycle count with the model."""
    want = st.copy()
    for w in words:
        ref_vector(want, fields(w))
    if golden:
        g = GoldenNPU(cfg)
        g.acc[:], g.spad[:] = st.acc, st.spad
        g.M[:], g.L[:], g.F[:] = st.M, st.L, st.F
        for w in words:
            g.execute(w)
        assert np.array_equal(g.acc, want.acc) and np.array_equal(g.spad, want.spad)
        assert list(g.M) == want.M and list(g.L) == want.L and list(g.F) == want.F
    times, vu = simulate(cfg, st, words, gaps, state_rows)
    assert np.array_equal(st.acc, want.acc), "accumulator differs"
    for r in np.nonzero((st.spad != want.spad).any(axis=1))[0][:3]:
        pytest.fail(f"spad row {r}: got {list(st.spad[r])}, want {list(want.spad[r])}")
    for name in "MLF":
        got, exp = getattr(st, name), getattr(want, name)
        bad = [r for r in range(len(got)) if got[r] != exp[r]]
        assert not bad, f"{name}[{bad[0]}] = {got[bad[0]]}, want {exp[bad[0]]} ({len(bad)} rows differ)"
    gaps = gaps or [0] * len(words)
    prev_done = None
    for k, (w, (t, d)) in enumerate(zip(words, times)):
        f = fields(w)
        assert d - t == expected_cycles(cfg, f), \
            f"instr {k} ({F(f['funct']).name}, rows {f['rows']}, blocks {f['blocks']}): took {d - t} cycles"
        if prev_done is not None and gaps[k] == 0:
            assert t == prev_done, f"instr {k} taken at {t}, previous done at {prev_done}"
        prev_done = d
    return times


# -------------------------------------------------------------- random data
EDGE32 = [INT32_MIN, INT32_MIN + 1, INT32_MAX, INT32_MAX - 1, 0, -1, 1]


def rand_acc(rng, st, rows, spread=None):
    for r in rows:
        if spread is None:
            st.acc[r] = [rng.choice(EDGE32) if rng.random() < 0.15 else rng.randrange(INT32_MIN, INT32_MAX + 1)
                         for _ in range(st.dim)]
        else:
            st.acc[r] = [rng.randrange(-spread, spread) for _ in range(st.dim)]


def rand_state(rng, st, rows):
    for r in rows:
        st.M[r] = rng.choice([NEG_INF, INT32_MAX, 0, rng.randrange(INT32_MIN, INT32_MAX + 1),
                              rng.randrange(-5000, 5000)])
        st.L[r] = rng.choice([0, 1, -1, INT32_MIN, INT32_MAX, rng.randrange(INT32_MIN, INT32_MAX + 1),
                              rng.randrange(0, 1 << 16)])
        st.F[r] = rng.choice([0, 1 << 15, (1 << 48) - 1, (1 << 47) - 1, rng.randrange(1 << 16),
                              rng.randrange(1 << 48), rng.randrange(1 << 15)])


def rand_instr(rng, cfg, funct, *, max_rows=6, max_blocks=3):
    dim = cfg.dim
    rows = rng.randrange(1, max_rows + 1)
    blocks = rng.randrange(1, max_blocks + 1)
    f = dict(funct=int(funct), rows=rows, blocks=blocks,
             acc_addr=rng.randrange(0, 40), acc_block_stride=rng.choice([rows, rows + 3, 7]),
             state_addr=rng.randrange(0, cfg.vector_state_rows - rows + 1),
             spad_addr=rng.randrange(0, 40), spad_block_stride=rng.choice([rows, rows + 1, 0, 1]),
             kv_valid=rng.choice([0, 1, blocks * dim, blocks * dim - 1, rng.randrange(0, blocks * dim + 3),
                                  0xFFFF]),
             causal=rng.randrange(2),
             causal_offset=rng.choice([0, -1, 1, rng.randrange(-2 * dim, 2 * dim), -(1 << 19), (1 << 19) - 1]),
             mult=rng.choice([1, 0, (1 << 32) - 1, rng.randrange(1 << 16), rng.randrange(1 << 32)]),
             shift=rng.choice([0, 1, 15, 31, 63, rng.randrange(64)]))
    if funct in (F.SCALE, F.EXP):
        f["acc_block_stride"] = max(f["acc_block_stride"], rows)   # no self-overlap here
    if funct == F.RECIP:
        f["mult"] = rng.choice([0, 1, (1 << 16) - 1, rng.randrange(1 << 16)])
    if funct in (F.ROWMAX, F.EXP) and rng.random() < 0.5:
        f["mult"], f["shift"] = rng.randrange(1 << 15, 1 << 16), rng.randrange(8, 16)  # softmax-like
    return f


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("funct", list(F))
def test_each_funct_tiny(funct):
    rng = random.Random(100 + funct)
    cfg = TINY
    st = State(cfg)
    rand_acc(rng, st, range(80))
    rand_state(rng, st, range(cfg.vector_state_rows))
    words = [vword(**rand_instr(rng, cfg, funct)) for _ in range(6)]
    run_and_check(cfg, st, words)


@pytest.mark.parametrize("funct", list(F))
def test_each_funct_default(funct):
    rng = random.Random(200 + funct)
    cfg = DEFAULT
    st = State(cfg)
    rows = range(64)
    rand_acc(rng, st, rows)
    srows = range(24)
    rand_state(rng, st, srows)
    words = []
    for _ in range(2):
        f = rand_instr(rng, cfg, funct, max_rows=4, max_blocks=3)
        f["state_addr"] = rng.randrange(0, 24 - f["rows"] + 1)
        words.append(vword(**f))
    run_and_check(cfg, st, words, state_rows=srows)


def test_rowmax_exp_masks():
    """Causal masks with negative and positive offsets, kv_valid cutting a block, fully masked rows."""
    rng = random.Random(7)
    cfg = TINY
    dim = cfg.dim
    st = State(cfg)
    rand_acc(rng, st, range(60), spread=3000)
    words = []
    for off, kv, causal in [(-3, 12, 1), (2, 7, 1), (0, 5, 0), (-20, 12, 1), (5, 12, 1),
                            (-(1 << 19), 12, 1), ((1 << 19) - 1, 9, 1), (-2, 12, 1), (0, 0, 0)]:
        common = dict(rows=5, blocks=3, acc_addr=10, acc_block_stride=5, state_addr=3,
                      kv_valid=kv, causal=causal, causal_offset=off, mult=46000, shift=12)
        words.append(vword(funct=F.INIT, **common))
        words.append(vword(funct=F.ROWMAX, **common))
        words.append(vword(funct=F.EXP, **common))
    run_and_check(cfg, st, words)
    # The last group masks every column: M stays NEG_INF, L 0, and p = 0 is written over the scores.
    assert st.M[3:8] == [NEG_INF] * 5 and st.L[3:8] == [0] * 5 and not st.acc[10:25].any()


def test_exp_against_neg_inf_and_extremes():
    """EXP with M = NEG_INF (differences up to 2**32 - 1), INT32 extremes and F up to 2**47 in OUTPUT."""
    cfg = TINY
    st = State(cfg)
    st.acc[0] = [INT32_MAX, INT32_MIN, 0, -1]
    st.acc[1] = [INT32_MIN, INT32_MIN, INT32_MAX, INT32_MAX]
    st.acc[2] = [1, -1, INT32_MAX, INT32_MIN]
    st.acc[4:7] = st.acc[0:3]               # EXP overwrites its rows: a copy for it
    st.M[0:3] = [NEG_INF, INT32_MAX, 0]
    st.L[0:3] = [INT32_MAX, INT32_MIN, -1]
    words = [
        vword(funct=F.EXP, rows=3, blocks=1, acc_addr=4, state_addr=0, kv_valid=4,
              mult=(1 << 32) - 1, shift=0),
        vword(funct=F.OUTPUT, rows=3, blocks=1, acc_addr=0, state_addr=0, spad_addr=4, shift=63),
        vword(funct=F.OUTPUT, rows=3, blocks=1, acc_addr=0, state_addr=0, spad_addr=8, shift=47),
        vword(funct=F.OUTPUT, rows=3, blocks=1, acc_addr=0, state_addr=0, spad_addr=12, shift=0),
        vword(funct=F.REQUANT, rows=3, blocks=1, acc_addr=0, state_addr=0, spad_addr=16,
              mult=(1 << 32) - 1, shift=32),
        vword(funct=F.SCALE, rows=3, blocks=1, acc_addr=0, state_addr=0),
    ]
    st.F[0:3] = [1 << 15, (1 << 47) - 1, (1 << 47) - 12345]
    run_and_check(cfg, st, words)


def test_scale_self_overlap_stalls():
    """SCALE rows read again while their writes are in flight: exact data, documented stalls."""
    rng = random.Random(9)
    cfg = TINY
    st = State(cfg)
    rand_acc(rng, st, range(40))
    rand_state(rng, st, range(10))
    words = [
        vword(funct=F.SCALE, rows=2, blocks=3, acc_addr=4, acc_block_stride=0, state_addr=0),
        vword(funct=F.SCALE, rows=4, blocks=2, acc_addr=8, acc_block_stride=1, state_addr=2),
        vword(funct=F.SCALE, rows=6, blocks=2, acc_addr=20, acc_block_stride=2, state_addr=1),
        vword(funct=F.SCALE, rows=1, blocks=5, acc_addr=30, acc_block_stride=0, state_addr=5),
    ]
    assert all(scale_stalls(cfg, fields(w)) > 0 for w in words)
    run_and_check(cfg, st, words)


def test_exp_self_overlap_stalls():
    """EXP over rows that it reads again while their p is in flight: each element reads the latest row."""
    rng = random.Random(10)
    cfg = TINY
    st = State(cfg)
    rand_acc(rng, st, range(40), spread=4000)
    rand_state(rng, st, range(10))
    common = dict(kv_valid=0xFFFF, mult=46000, shift=12)
    words = [
        vword(funct=F.ROWMAX, rows=3, blocks=3, acc_addr=4, acc_block_stride=0, state_addr=0, **common),
        vword(funct=F.EXP, rows=3, blocks=3, acc_addr=4, acc_block_stride=0, state_addr=0, **common),
        vword(funct=F.EXP, rows=4, blocks=2, acc_addr=8, acc_block_stride=1, state_addr=3, **common),
        vword(funct=F.EXP, rows=6, blocks=2, acc_addr=20, acc_block_stride=2, state_addr=1, causal=1,
              causal_offset=1, **common),
    ]
    assert all(scale_stalls(cfg, fields(w)) > 0 for w in words[1:])
    run_and_check(cfg, st, words)


def test_gaps_and_back_to_back():
    """Instructions offered late, and a stream where each is taken in the previous one's done cycle."""
    rng = random.Random(11)
    cfg = TINY
    st = State(cfg)
    rand_acc(rng, st, range(80))
    rand_state(rng, st, range(cfg.vector_state_rows))
    words = [vword(**rand_instr(rng, cfg, rng.choice(list(F)))) for _ in range(14)]
    gaps = [rng.choice([0, 0, 1, 3, 12]) for _ in words]
    run_and_check(cfg, st, words, gaps=gaps)


def online_softmax_model(s_tiles, v_tiles, kv_valid, mult, shift, out_mult, out_shift):
    """Two-tile online softmax + P@V, row by row on the shared row-state reference."""
    rows = s_tiles[0].shape[0]
    state = [vector_ref.RowState() for _ in range(rows)]
    O = np.zeros((rows, v_tiles[0].shape[1]), dtype=np.int64)
    cols0 = 0
    for s, v in zip(s_tiles, v_tiles):
        ok = cols0 + np.arange(s.shape[1]) < kv_valid
        p = np.zeros_like(s)
        for r, row in enumerate(state):
            row.rowmax(vector_ref.masked_max(s[r], ok), mult, shift)
            p[r] = row.exp(s[r], ok, mult, shift)
            O[r] = [vector_ref.scale(x, row.f) for x in O[r]]
        O = wrap32(O + p @ v)
        cols0 += s.shape[1]
    for row in state:
        row.recip(out_mult)
    out = np.array([[vector_ref.output(x, row.f, out_shift) for x in O[r]] for r, row in enumerate(state)])
    return out, [row.m for row in state], [row.l for row in state], [row.f for row in state], p


@pytest.mark.parametrize("cfg", [TINY, DEFAULT], ids=["tiny", "default"])
def test_online_softmax_two_tiles(cfg):
    """INIT, then per tile ROWMAX -> EXP -> SCALE (+ P@V, done here in numpy), then RECIP -> OUTPUT."""
    rng = np.random.default_rng(5)
    dim = cfg.dim
    rows, kb = dim, 2                       # dim query rows, two KV blocks per tile
    mult, shift = 47274, 16                 # ~ log2(e) * 2**12 / 2**?: a softmax-like scale
    out_mult, out_shift = 40000, 38
    kv_valid = 2 * kb * dim - 3             # the last block is cut
    s_tiles = [rng.integers(-40000, 40000, size=(rows, kb * dim)) for _ in range(2)]
    s_tiles[1][0, :] += 200000              # the max grows in tile 2 for row 0
    v_tiles = [rng.integers(-128, 128, size=(kb * dim, dim)) for _ in range(2)]
    want_out, want_M, want_L, want_F, _ = online_softmax_model(
        s_tiles, v_tiles, kv_valid, mult, shift, out_mult, out_shift)

    st = State(cfg)
    S, O, OUT, ST = 0, 100, 50, 4           # acc rows of S (then P) and O, spad rows of the output
    srows = range(ST, ST + rows)
    common = dict(rows=rows, state_addr=ST, mult=mult, shift=shift)
    times = []
    for t, (s, v) in enumerate(zip(s_tiles, v_tiles)):
        for b in range(kb):
            st.acc[S + b * rows:S + (b + 1) * rows] = s[:, b * dim:(b + 1) * dim]
        words = []
        if t == 0:
            words.append(vword(funct=F.INIT, blocks=1, **common))
        kvt = kv_valid - t * kb * dim
        words += [
            vword(funct=F.ROWMAX, blocks=kb, acc_addr=S, acc_block_stride=rows, kv_valid=kvt, **common),
            vword(funct=F.EXP, blocks=kb, acc_addr=S, acc_block_stride=rows, kv_valid=kvt, **common),
            vword(funct=F.SCALE, blocks=1, acc_addr=O, **common),
        ]
        times += simulate(cfg, st, words, state_rows=srows)[0]
        # P@V as the matrix unit would do it (P read from the accumulator, wrap32 accumulate into O).
        p = np.concatenate([st.acc[S + b * rows:S + (b + 1) * rows] for b in range(kb)], axis=1)
        assert p.min() >= 0 and p.max() == P_SCALE
        st.acc[O:O + rows] = wrap32(st.acc[O:O + rows] + p @ v)
    words = [vword(funct=F.RECIP, rows=rows, blocks=1, state_addr=ST, mult=out_mult),
             vword(funct=F.OUTPUT, rows=rows, blocks=1, acc_addr=O, state_addr=ST, spad_addr=OUT,
                   shift=out_shift)]
    times += simulate(cfg, st, words, state_rows=srows)[0]
    assert list(st.M[ST:ST + rows]) == list(want_M)
    assert list(st.L[ST:ST + rows]) == list(want_L)
    assert list(st.F[ST:ST + rows]) == list(want_F)
    assert np.array_equal(st.spad[OUT:OUT + rows], want_out)
    assert np.abs(want_out).max() > 10      # the check is not trivially on zeros
    functs = [(F.INIT, 1), (F.ROWMAX, kb), (F.EXP, kb), (F.SCALE, 1), (F.ROWMAX, kb), (F.EXP, kb),
              (F.SCALE, 1), (F.RECIP, 1), (F.OUTPUT, 1)]
    for (fn, blocks), (t0, d) in zip(functs, times):
        assert d - t0 == vector_cycles(timing(cfg), fn, rows, blocks), fn.name


def test_recip_radix_and_dividers_from_config():
    """``divider_bits_per_cycle`` and ``recip_dividers`` of the config set the divider and how many
    rows divide at once: each extra row of RECIP takes as many cycles as the timing model says, fewer
    at 4 bits per cycle than at 2, and fewer with 8 dividers than with 1."""
    per_row = {}
    for bits, dividers in ((2, 1), (4, 1), (2, 8)):
        cfg = TINY.replace(name=f"radix{bits}-div{dividers}", divider_bits_per_cycle=bits, recip_dividers=dividers)
        rng = random.Random(41)
        st = State(cfg)
        rand_state(rng, st, range(cfg.vector_state_rows))
        words = [vword(funct=F.RECIP, rows=5, blocks=1, state_addr=3, mult=(1 << 16) - 1),
                 vword(funct=F.RECIP, rows=1, blocks=1, state_addr=0, mult=7)]
        (t5, d5), (t1, d1) = run_and_check(cfg, st, words)
        extra = (d5 - t5) - (d1 - t1)              # four more rows
        assert extra % 4 == 0
        per_row[bits, dividers] = extra // 4
        assert per_row[bits, dividers] == timing(cfg).recip_row_interval
    assert per_row[4, 1] < per_row[2, 1] and per_row[2, 8] < per_row[2, 1]


def test_random_sequence_vs_golden():
    """A random stream of every funct on overlapping rows, against GoldenNPU and the element model."""
    rng = random.Random(21)
    cfg = TINY
    st = State(cfg)
    rand_acc(rng, st, range(80), spread=1 << 20)
    rand_state(rng, st, range(cfg.vector_state_rows))
    words = []
    for _ in range(30):
        fn = rng.choice(list(F))
        f = rand_instr(rng, cfg, fn, max_rows=5, max_blocks=3)
        f["acc_addr"] = rng.randrange(0, 16)
        f["state_addr"] = rng.randrange(0, 8)
        if fn in (F.SCALE, F.EXP) and rng.random() < 0.3:
            f["acc_block_stride"] = rng.randrange(0, 3)
        words.append(vword(**f))
    run_and_check(cfg, st, words)


def test_state_rows_not_a_power_of_two():
    """The last state rows of a 37-entry state memory: RECIP's prefetch never reads past the end."""
    import dataclasses
    cfg = dataclasses.replace(TINY, name="odd_state", vector_state_rows=37)
    rng = random.Random(31)
    st = State(cfg)
    rand_acc(rng, st, range(40), spread=5000)
    rand_state(rng, st, range(37))
    words = [
        vword(funct=F.RECIP, rows=5, blocks=1, state_addr=32, mult=(1 << 16) - 1),
        vword(funct=F.OUTPUT, rows=5, blocks=2, acc_addr=0, acc_block_stride=5, state_addr=32,
              spad_addr=0, spad_block_stride=5, shift=40),
        vword(funct=F.INIT, rows=37, blocks=1, state_addr=0),
        vword(funct=F.ROWMAX, rows=3, blocks=2, acc_addr=10, acc_block_stride=3, state_addr=34,
              kv_valid=8, mult=50000, shift=13),
        vword(funct=F.EXP, rows=3, blocks=2, acc_addr=10, acc_block_stride=3, state_addr=34,
              kv_valid=8, mult=50000, shift=13),
        vword(funct=F.RECIP, rows=1, blocks=1, state_addr=36, mult=1),
    ]
    run_and_check(cfg, st, words)
