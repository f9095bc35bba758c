"""MatrixUnit in Amaranth's simulator with BankedSram scratchpad and accumulator.

Every test checks three things: the final accumulator against the MATMUL
semantics of docs/architecture.md computed here in numpy (and against
GoldenNPU.execute), every accept/done/busy/array_active cycle against the
cycle model of docs/matrix_unit.md, and that ``error`` stays 0.
"""

import random

import numpy as np
import pytest
from amaranth import Elaboratable, Module
from amaranth.lib.wiring import connect
from amaranth.sim import Simulator

from flashnpu.hw.matrix_unit import MatrixUnit
from flashnpu.hw.sram import BankedSram
from flashnpu.spec.config import load_config
from flashnpu.sw.golden import GoldenNPU
from flashnpu.spec.isa import Mem, Opcode, encode
from flashnpu.spec.numerics import saturate_a, wrap32

TINY = load_config("tiny")
DEFAULT = load_config("default")


class Harness(Elaboratable):
    """The matrix unit wired to its scratchpad (ports a, w) and accumulator (reads m, a; write m)."""

    def __init__(self, cfg):
        dim = cfg.dim
        self.mu = MatrixUnit(cfg)
        self.spad = BankedSram(rows=cfg.spad_rows, banks=cfg.spad_banks, width=8 * dim,
                               read_ports=("a", "w"), write_ports=())
        self.acc = BankedSram(rows=cfg.acc_rows, banks=cfg.acc_banks, width=32 * dim,
                              read_ports=("m", "a"), write_ports=("m",))

    def elaborate(self, platform):
        m = Module()
        m.submodules.mu = self.mu
        m.submodules.spad = self.spad
        m.submodules.acc = self.acc
        connect(m, self.mu.a_rd, self.spad.rd_a)
        connect(m, self.mu.w_rd, self.spad.rd_w)
        connect(m, self.mu.acc_rd, self.acc.rd_m)
        connect(m, self.mu.acc_a_rd, self.acc.rd_a)
        connect(m, self.mu.acc_wr, self.acc.wr_m)
        return m


# ------------------------------------------------------------------ models
def ref_matmul(spad, acc, f, dim):
    """The MATMUL loop of docs/architecture.md, literally (acc: int64 array, updated in place)."""
    m_rows = f["m_rows"]
    for nb in range(f["n_blocks"]):
        for kc in range(f["k_chunks"]):
            base = f["w_addr"] + kc * f["w_kstride"] + nb * f["w_nstride"]
            w = spad[base:base + dim].astype(np.int64)
            if f["transpose_w"]:
                w = w.T
            a0 = f["a_addr"] + kc * f["a_kstride"]
            a = spad[a0:a0 + m_rows] if f["a_mem"] == Mem.SPAD else saturate_a(acc[a0:a0 + m_rows])
            p = a.astype(np.int64) @ w
            dst = f["out_addr"] + nb * f["out_nstride"]
            if kc == 0 and not f["accumulate"]:
                acc[dst:dst + m_rows] = wrap32(p)
            else:
                acc[dst:dst + m_rows] = wrap32(acc[dst:dst + m_rows] + p)


def cycle_model(dim, instrs, offers):
    """(accept, done, array_active cycles, A-wait cycles) per instruction; see docs/matrix_unit.md.

    ``offers[j]`` is the cycle instruction j is first offered, or ``None`` for
    "right after the previous one was taken". Tile by tile: a tile with
    ``a_mem = ACC`` starts no earlier than the write cycle of the last earlier
    row written to one of its A rows.
    """
    ready, out = 0, []
    prev_accept = None
    written = {}                # accumulator row -> cycle of its latest write (stage w)
    for f, off in zip(instrs, offers):
        offered = (0 if prev_accept is None else prev_accept + 1) if off is None else off
        accept = max(ready, offered)
        m_rows, t_len = f["m_rows"], max(f["m_rows"], dim)
        start, active, waited = accept + 1, [], 0
        for nb in range(f["n_blocks"]):
            for kc in range(f["k_chunks"]):
                if f["a_mem"] == Mem.ACC:
                    a0 = f["a_addr"] + kc * f["a_kstride"]
                    late = max((written.get(r, -1) for r in range(a0, a0 + m_rows)), default=-1)
                    waited += max(0, late - start)
                    start = max(start, late)
                dst = f["out_addr"] + nb * f["out_nstride"]
                for i in range(m_rows):
                    written[dst + i] = start + i + 2 * dim + 2
                active += [start + 2 + i for i in range(m_rows)]
                last_start = start
                start += t_len
        ready = last_start + t_len - 1
        done = last_start + m_rows - 1 + 2 * dim + 2
        out.append((accept, done, active, waited))
        prev_accept = accept
    return out


def rand_matmul(rng, cfg, *, m_rows=None, k_chunks=None, n_blocks=None, out_window=None,
                accumulate=None, a_mem=None, a_window=None):
    dim = cfg.dim
    f = {
        "accumulate": rng.randrange(2) if accumulate is None else accumulate,
        "transpose_w": rng.randrange(2),
        "a_mem": rng.choice([Mem.SPAD, Mem.ACC]) if a_mem is None else a_mem,
        "m_rows": m_rows or rng.randint(1, 3 * dim),
        "k_chunks": k_chunks or rng.randint(1, 3),
        "n_blocks": n_blocks or rng.randint(1, 3),
    }
    m, k, n = f["m_rows"], f["k_chunks"], f["n_blocks"]
    # Strides may be 0 or overlap; the fields stay within the checker's ranges.
    f["a_kstride"] = rng.choice([0, m, rng.randrange(0, 2 * m + dim)])
    a_rows = cfg.spad_rows if f["a_mem"] == Mem.SPAD else cfg.acc_rows
    hi = a_rows - (k - 1) * f["a_kstride"] - m + 1
    f["a_addr"] = rng.randrange(min(hi, a_window) if a_window else hi)
    f["w_kstride"] = rng.choice([0, dim, rng.randrange(0, 3 * dim)])
    f["w_nstride"] = rng.choice([0, dim, k * dim, rng.randrange(0, 3 * dim)])
    f["w_addr"] = rng.randrange(cfg.spad_rows - (k - 1) * f["w_kstride"] - (n - 1) * f["w_nstride"] - dim + 1)
    f["out_nstride"] = rng.choice([m, m, rng.randrange(0, 2 * m + 2)])
    hi = cfg.acc_rows - (n - 1) * f["out_nstride"] - m + 1
    while True:
        f["out_addr"] = rng.randrange(min(hi, out_window) if out_window else hi)
        if not reads_own_tile_writes(f, dim):
            return f


def reads_own_tile_writes(f, dim):
    """A tile whose A row i (from the accumulator) is its own output row i' < i - 2*dim - 1.

    The unit writes row i' before it reads A row i then, whereas the architecture reads the
    whole tile first (docs/matrix_unit.md, "A from the accumulator"); tests avoid such programs.
    """
    if f["a_mem"] != Mem.ACC:
        return False
    for nb in range(f["n_blocks"]):
        out = f["out_addr"] + nb * f["out_nstride"]
        for kc in range(f["k_chunks"]):
            a0 = f["a_addr"] + kc * f["a_kstride"]
            for i in range(f["m_rows"]):
                i_out = a0 + i - out
                if 0 <= i_out < i - 2 * dim - 1:
                    return True
    return False


# ------------------------------------------------------------------ runner
def run(cfg, instrs, *, seed=0, offers=None, max_cycles=20000):
    """Run ``instrs`` (field dicts) through the unit; check data, cycles and flags."""
    dim = cfg.dim
    rng = np.random.default_rng(seed)
    spad = rng.integers(-128, 128, size=(cfg.spad_rows, dim), dtype=np.int64)
    acc0 = rng.integers(-(1 << 31), 1 << 31, size=(cfg.acc_rows, dim), dtype=np.int64)
    # Half the rows near the 12-bit A range, so that A from the accumulator is not all saturated.
    small = rng.random(cfg.acc_rows) < 0.5
    acc0[small] = rng.integers(-2100, 2100, size=(int(small.sum()), dim))
    offers = offers or [None] * len(instrs)
    words = [encode(Opcode.MATMUL, **f) for f in instrs]
    h = Harness(cfg)
    u = h.mu.unit
    log = {"accept": [], "done": [], "active": [], "busy": []}
    final = {}

    def bank_get(ctx, sram, row):
        b, i = sram.locate(row)
        return ctx.get(sram.banks[b].data[i])

    async def tb(ctx):
        for r in range(cfg.spad_rows):
            b, i = h.spad.locate(r)
            ctx.set(h.spad.banks[b].data[i], sum((int(v) & 0xFF) << (8 * j) for j, v in enumerate(spad[r])))
        for r in range(cfg.acc_rows):
            b, i = h.acc.locate(r)
            ctx.set(h.acc.banks[b].data[i],
                    sum((int(v) & 0xFFFFFFFF) << (32 * j) for j, v in enumerate(acc0[r])))
        idx, offer_at = 0, offers[0] or 0
        for cycle in range(max_cycles):
            if idx < len(words) and cycle >= offer_at:
                ctx.set(u.instr.valid, 1)
                ctx.set(u.instr.payload.as_value(), words[idx])
            else:
                ctx.set(u.instr.valid, 0)
                ctx.set(u.instr.payload.as_value(), int(rng.integers(0, 1 << 62)))
            assert ctx.get(u.error) == 0
            if ctx.get(u.instr.valid) and ctx.get(u.instr.ready):
                log["accept"].append(cycle)
                idx += 1
                if idx < len(words):
                    offer_at = offers[idx] if offers[idx] is not None else cycle + 1
            if ctx.get(u.done):
                log["done"].append(cycle)
            if ctx.get(h.mu.array_active):
                log["active"].append(cycle)
            if ctx.get(u.busy):
                log["busy"].append(cycle)
            if idx == len(words) and len(log["done"]) == len(words) and not ctx.get(u.busy):
                break
            await ctx.tick()
        else:
            raise AssertionError(f"not finished after {max_cycles} cycles: {log['accept']} {log['done']}")
        for _ in range(3):       # nothing more happens
            await ctx.tick()
            assert not ctx.get(u.done) and not ctx.get(u.busy) and not ctx.get(h.mu.acc_wr.en)
        final["acc"] = np.array([[((w >> (32 * j)) & 0xFFFFFFFF) for j in range(dim)]
                                 for w in (bank_get(ctx, h.acc, r) for r in range(cfg.acc_rows))],
                                dtype=np.int64)

    sim = Simulator(h)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()

    # Data: the literal loop, and the golden model.
    want = acc0.copy()
    for f in instrs:
        ref_matmul(spad, want, f, dim)
    got = wrap32(final["acc"])
    np.testing.assert_array_equal(got, want)
    g = GoldenNPU(cfg)
    g.spad[:] = spad.astype(np.int8)
    g.acc[:] = acc0
    for w in words:
        g.execute(w)
    np.testing.assert_array_equal(got, g.acc)

    # Cycles.
    model = cycle_model(dim, instrs, offers)
    assert log["accept"] == [a for a, _, _, _ in model]
    assert log["done"] == [d for _, d, _, _ in model]
    assert log["active"] == sorted(c for _, _, act, _ in model for c in act)
    busy = sorted({c for a, d, _, _ in model for c in range(a + 1, d + 1)})
    assert log["busy"] == busy
    log["waited"] = [w for *_, w in model]
    return log


# ------------------------------------------------------------------- tests
@pytest.mark.parametrize("seed", range(4))
def test_tiny_random_back_to_back(seed):
    rng = random.Random(seed)
    # A narrow output window makes consecutive instructions hit the same rows.
    instrs = [rand_matmul(rng, TINY, out_window=3 * TINY.dim) for _ in range(8)]
    run(TINY, instrs, seed=seed)


@pytest.mark.parametrize("m_rows", [1, 2, 3, 4, 5])
def test_tiny_rmw_spacing(m_rows):
    # Each accumulating instruction starts on the last row the previous one
    # wrote. That row comes out again dim-m_rows+1 cycles later when m_rows <
    # dim (tiny: 4, 3 and 2 cycles for m_rows 1, 2, 3) and the very next cycle
    # when m_rows >= dim: the SRAM read cannot see the last two writes, so
    # spacings 1 and 2 are served only by forwarding. Several k-chunks re-read
    # each row max(m_rows, dim) cycles after its write.
    rng = random.Random(m_rows)
    instrs, out = [], 20
    for j in range(6):
        f = rand_matmul(rng, TINY, m_rows=m_rows, k_chunks=rng.randint(1, 3), n_blocks=rng.randint(1, 2),
                        accumulate=1)
        f["out_nstride"] = m_rows
        f["out_addr"] = out
        out += f["n_blocks"] * m_rows - 1
        instrs.append(f)
    run(TINY, instrs, seed=10 + m_rows)


def test_tiny_long_rows_rmw():
    # m_rows > dim, output blocks m_rows-1 apart: block nb+1's first row is
    # block nb's last row, the next cycle (forwarded); non-accumulating ones
    # overwrite it on their first k-chunk.
    rng = random.Random(5)
    dim = TINY.dim
    instrs = []
    for j in range(4):
        f = rand_matmul(rng, TINY, m_rows=2 * dim + 1, k_chunks=2, n_blocks=2, accumulate=j % 2)
        f["out_nstride"] = 2 * dim
        f["out_addr"] = 100 + j * 4 * dim
        instrs.append(f)
    run(TINY, instrs, seed=5)


def test_tiny_overlapping_output_blocks():
    # Output blocks one row apart: block nb+1 re-reads rows block nb just wrote.
    rng = random.Random(6)
    instrs = [rand_matmul(rng, TINY, m_rows=m, n_blocks=3, accumulate=a) for m, a in
              ((3, 0), (3, 1), (6, 1), (1, 0))]
    for f in instrs:
        f["out_nstride"] = 1
        f["out_addr"] = 7
    run(TINY, instrs, seed=6)


def test_tiny_idle_gaps():
    # Instructions offered late: the unit goes idle and takes them at once.
    rng = random.Random(8)
    instrs = [rand_matmul(rng, TINY) for _ in range(4)]
    offers = [3, 90, 91, 400]
    run(TINY, instrs, seed=8, offers=offers)


def test_tiny_single_cycle_counts():
    # One MATMUL alone, over the shapes that matter for the formula.
    dim = TINY.dim
    rng = random.Random(9)
    for m_rows in (1, dim - 1, dim, dim + 1, 3 * dim):
        for k, n in ((1, 1), (3, 2)):
            f = rand_matmul(rng, TINY, m_rows=m_rows, k_chunks=k, n_blocks=n)
            log = run(TINY, [f], seed=m_rows)
            t_len = max(m_rows, dim)
            assert log["done"][0] - log["accept"][0] == (k * n - 1) * t_len + m_rows + 2 * dim + 2


@pytest.mark.parametrize("cfg, kn", [(TINY, 2), (DEFAULT, 1)], ids=["tiny", "default"])
def test_throughput(cfg, kn):
    # 8 back-to-back MATMULs of 4*dim rows: an A row enters the array in every
    # cycle from the first to the last.
    dim = cfg.dim
    rng = random.Random(12)
    instrs = [rand_matmul(rng, cfg, m_rows=4 * dim, k_chunks=rng.randint(1, kn),
                          n_blocks=rng.randint(1, kn)) for _ in range(8)]
    log = run(cfg, instrs, seed=12)
    span = log["active"][-1] - log["active"][0] + 1
    assert len(log["active"]) / span >= 0.95
    assert len(log["active"]) == span     # in fact, no bubble at all


def test_default_back_to_back():
    rng = random.Random(13)
    dim = DEFAULT.dim
    shapes = ((dim + 3, 2, 2), (2, 1, 3), (dim, 3, 1), (1, 2, 1))
    instrs = [rand_matmul(rng, DEFAULT, m_rows=m, k_chunks=k, n_blocks=n, out_window=2 * dim)
              for m, k, n in shapes]
    run(DEFAULT, instrs, seed=13)


# ------------------------------------------------------- A from the accumulator
def test_tiny_acc_a_waits_for_inflight_rows():
    # Each MATMUL reads as A (a_mem = ACC) rows that the previous one is still writing: the
    # tile waits until the last of them is written, and reads the new values.
    dim = TINY.dim
    rng = random.Random(21)
    instrs = []
    for j in range(6):
        m = rng.choice([1, dim - 1, dim, dim + 2, 2 * dim + 1])
        f = rand_matmul(rng, TINY, m_rows=m, k_chunks=rng.randint(1, 2), n_blocks=1, a_mem=Mem.ACC)
        f["out_addr"] = 50 + 8 * dim * (j % 2)
        f["out_nstride"] = m
        f["a_kstride"] = 0
        prev = instrs[-1] if instrs else None
        f["a_addr"] = (prev["out_addr"] + rng.randrange(prev["m_rows"])) if prev else 10
        instrs.append(f)
    log = run(TINY, instrs, seed=21)
    assert all(w > 0 for w in log["waited"][1:]), log["waited"]


def test_tiny_acc_a_reads_earlier_tiles():
    # One instruction whose later tiles read as A the rows its earlier tiles wrote
    # (k-chunk 1 reads the rows of output block 0, written by k-chunk 0 just before).
    dim = TINY.dim
    rng = random.Random(22)
    instrs = []
    for m in (dim, dim + 1, 3):
        f = rand_matmul(rng, TINY, m_rows=m, k_chunks=2, n_blocks=2, a_mem=Mem.ACC, accumulate=0)
        f.update(out_addr=200, out_nstride=m, a_addr=200 - m, a_kstride=m)
        instrs.append(f)
    log = run(TINY, instrs, seed=22)
    assert all(w > 0 for w in log["waited"]), log["waited"]


@pytest.mark.parametrize("cfg", [TINY, DEFAULT], ids=["tiny", "default"])
def test_ping_pong_from_accumulator_never_waits(cfg):
    # The attention pattern: QK_{g+1} (A from the scratchpad) writes S[(g+1)%2] while
    # PV_g reads P from S[g%2] (a_mem = ACC): no wait, no bubble.
    dim = cfg.dim
    rng = random.Random(23)
    m, nbc, S = 2 * dim, 2, [0, 4 * dim]
    instrs = []
    for g in range(5):
        instrs.append(rand_matmul(rng, cfg, m_rows=m, k_chunks=1, n_blocks=nbc, a_mem=Mem.SPAD, accumulate=0))
        instrs[-1].update(out_addr=S[(g + 1) % 2], out_nstride=m)
        instrs.append(rand_matmul(rng, cfg, m_rows=m, k_chunks=nbc, n_blocks=1, a_mem=Mem.ACC, accumulate=1))
        instrs[-1].update(a_addr=S[g % 2], a_kstride=m, out_addr=8 * dim, out_nstride=m)
    log = run(cfg, instrs, seed=23)
    assert log["waited"] == [0] * len(instrs)
    assert len(log["active"]) == log["active"][-1] - log["active"][0] + 1
