"""Sequencer in Amaranth's simulator with Python models of the fetch path and the four units.

The unit models take instructions with random delays and complete them in
order after random durations; the fetch model answers in order after a random
latency. The checks: program order per queue, no instruction starts before
the tokens it waits for were pushed, HALT drain, TOKENS_LEFT, TOKEN_OVERFLOW,
DEADLOCK, fetch errors (and one past HALT, ignored), unit errors with their
pc, checker errors in program order, a restart, and the dispatch timing.
"""

import random

import pytest
from amaranth import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from flashnpu.hw.dma_engine import DmaEngine
from flashnpu.hw.sequencer import UNIT_NAMES, Sequencer
from flashnpu.sw.asm import decode_word, encode_word
from flashnpu.spec.config import load_config
from flashnpu.sw.golden import GoldenNPU, NpuError
from flashnpu.spec.isa import INSTR_BYTES, OPCODE_QUEUE, ErrorCode, Opcode, Queue, VectorFunct
from flashnpu.sw.tokens import TokenError, check_tokens

import numpy as np

TINY = load_config("tiny")
PROG = 0x400
OP_OF_QUEUE = {q: op for op, q in OPCODE_QUEUE.items()}


def instr(q, pc, wait=0, signal=0):
    """A legal instruction of queue ``q`` that carries ``pc`` in a field without effect on checks."""
    op = OP_OF_QUEUE[q]
    if op in (Opcode.LOAD, Opcode.STORE):
        return encode_word(op, wait, signal, dram_addr=pc * TINY.dma_beat_bytes, rows=1, chunks=1)
    if op == Opcode.MATMUL:
        return encode_word(op, wait, signal, m_rows=1, k_chunks=1, n_blocks=1, a_kstride=pc)
    return encode_word(op, wait, signal, funct=VectorFunct.INIT, rows=1, blocks=1, kv_valid=pc)


HALT = encode_word(Opcode.HALT)


class FetchModel:
    """In-order instruction memory: up to ``depth`` requests outstanding, random latency."""

    def __init__(self, words, rng, *, lat=(1, 6), p_ready=0.8, depth=4, err_pcs=(), base=PROG,
                 one_per_cycle=False):
        self.mem = {base + INSTR_BYTES * k: w for k, w in enumerate(words)}
        self.err = {base + INSTR_BYTES * k for k in err_pcs}
        self.rng, self.lat, self.p_ready, self.depth = rng, lat, p_ready, depth
        self.pending = []     # [ready cycle, word, error]
        self.one_per_cycle = one_per_cycle
        self.requests = []

    def step(self, ctx, dut, now):
        fe = dut.fetch
        head = self.pending[0] if self.pending and self.pending[0][0] <= now else None
        ctx.set(fe.resp.valid, head is not None)
        if head is not None:
            ctx.set(fe.resp.payload.word, head[1])
            ctx.set(fe.resp.payload.error, head[2])
        ready = len(self.pending) < self.depth and self.rng.random() < self.p_ready
        ctx.set(fe.req.ready, ready)
        if head is not None and ctx.get(fe.resp.ready):
            self.pending.pop(0)
        if ready and ctx.get(fe.req.valid):
            a = ctx.get(fe.req.payload.addr)
            self.requests.append((now, a))
            word = self.mem.get(a, 0)     # beyond the program: all-zero (illegal) words
            t = now + 1 + self.rng.randint(*self.lat)
            if self.one_per_cycle and self.pending:
                t = max(t, self.pending[-1][0] + 1)
            self.pending.append([t, word, int(a in self.err)])


class UnitModel:
    """Takes instructions (at most ``cap`` in flight), completes them in order after random durations."""

    def __init__(self, q, rng, *, dur=(1, 8), p_ready=0.7, cap=2, fail=None):
        self.q, self.rng, self.dur, self.p_ready, self.cap = q, rng, dur, p_ready, cap
        self.fail = fail          # (pc, ErrorCode): raise the error that many cycles after taking it
        self.inflight = []        # [pc, end cycle]
        self.error = 0
        self.starts, self.dones = [], []   # (pc, cycle)

    def step(self, ctx, port, pc_of, now):
        done = bool(self.inflight) and self.inflight[0][1] <= now and not self.error
        ctx.set(port.done, done)
        # A unit with an error drains and goes idle (as the DmaEngine does); its instruction never completes.
        ctx.set(port.busy, bool(self.inflight) and not self.error)
        if self.fail and any(pc == self.fail[0] for pc, _ in self.inflight):
            self.error = self.fail[1]
        ctx.set(port.error, self.error)
        ready = len(self.inflight) < self.cap and not self.error and self.rng.random() < self.p_ready
        ctx.set(port.instr.ready, ready)
        if done:
            pc, _ = self.inflight.pop(0)
            self.dones.append((pc, now))
        if ready and ctx.get(port.instr.valid):
            pc = pc_of[ctx.get(port.instr.payload.as_value())]
            end = now + self.rng.randint(*self.dur)
            if self.inflight:
                end = max(end, self.inflight[-1][1] + 1)
            if self.fail and self.fail[0] == pc:
                end = 1 << 30      # never completes
            self.inflight.append([pc, end])
            self.starts.append((pc, now))


def _grant(ctx, seq, n_words):
    """The host's grant: the words as the code window, all of DRAM as DMA window 0."""
    ctx.set(seq.grant.prog_addr, PROG)
    ctx.set(seq.grant.prog_end, PROG + INSTR_BYTES * n_words)
    ctx.set(seq.grant.windows[0].base, 0)
    ctx.set(seq.grant.windows[0].limit, 0xFFFF_FFFF)


def run(words, *, seed=1, fetch=None, units=None, max_cycles=6000, cfg=TINY, starts=1, **fetch_kw):
    """Run ``words`` from PROG; return a result dict with the models and the outcome."""
    rng = random.Random(seed)
    dut = Sequencer(cfg)
    fetch = fetch or FetchModel(words, rng, **fetch_kw)
    units = units or {q: UnitModel(q, rng) for q in Queue}
    pc_of = {w: pc for pc, w in enumerate(words)}
    res = {"fetch": fetch, "units": units, "dispatched": 0, "stall": [0] * 4, "dispatch_stall": 0,
           "runs": []}

    async def tb(ctx):
        _grant(ctx, dut, len(words))
        clk = 0                          # cycles since the beginning (the models' time)
        for r in range(starts):
            ctx.set(dut.start, 1)
            for now in range(max_cycles):
                fetch.step(ctx, dut, clk)
                for q, u in units.items():
                    u.step(ctx, getattr(dut, UNIT_NAMES[q]), pc_of, clk)
                res["dispatched"] += ctx.get(dut.dispatched)
                res["dispatch_stall"] += ctx.get(dut.dispatch_stall)
                st = ctx.get(dut.stall)
                for q in Queue:
                    res["stall"][q] += st >> q & 1
                if now == 1:
                    assert ctx.get(dut.busy) and not ctx.get(dut.done) and not ctx.get(dut.error_code)
                if now > 0 and not ctx.get(dut.busy):
                    res["runs"].append(dict(done=ctx.get(dut.done), code=ErrorCode(ctx.get(dut.error_code)),
                                            pc=ctx.get(dut.error_pc), cycles=now, start=clk - now))
                    break
                await ctx.tick()
                clk += 1
                ctx.set(dut.start, 0)
            else:
                raise AssertionError(f"hang: still busy after {max_cycles} cycles")
            # A few idle cycles: nothing may be issued once the sequencer stopped.
            for k in range(6):
                await ctx.tick()
                clk += 1
                for q, u in units.items():
                    port = getattr(dut, UNIT_NAMES[q])
                    assert not ctx.get(port.instr.valid)
                    u.step(ctx, port, pc_of, clk)
                fetch.step(ctx, dut, clk)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    res.update(res["runs"][-1])
    return res


def check_order_and_tokens(words, res, upto):
    """Program order per queue and token causality, for instructions ``pc < upto`` that started."""
    starts = {pc: t for u in res["units"].values() for pc, t in u.starts}
    dones = {pc: t for u in res["units"].values() for pc, t in u.dones}
    for q, u in res["units"].items():
        pcs = [pc for pc, _ in u.starts]
        assert pcs == sorted(pcs), (q, pcs)
        want = [pc for pc in range(upto) if OPCODE_QUEUE.get(decode_word(words[pc])["opcode"]) == q]
        assert pcs == want[:len(pcs)], (q, pcs, want)
    # k-th pop of counter s->d needs k pushes done strictly before it starts.
    pushes = {}
    pops = {}
    for pc in range(upto):
        f = decode_word(words[pc])
        if f["opcode"] == Opcode.HALT:
            break
        q = OPCODE_QUEUE[f["opcode"]]
        for s in Queue:
            if f["wait"] >> s & 1:
                pops.setdefault((s, q), []).append(pc)
            if f["signal"] >> s & 1:
                pushes.setdefault((q, s), []).append(pc)
    for key, pop_pcs in pops.items():
        push_done = sorted(dones[pc] for pc in pushes.get(key, []) if pc in dones)
        for k, pc in enumerate(pop_pcs, 1):
            if pc not in starts:
                continue
            before = sum(t < starts[pc] for t in push_done)
            assert before >= k, f"pc {pc} started at {starts[pc]} with {before} of {k} tokens {key}"


def random_program(rng, n, *, max_pending=3):
    """A random program with tokens that pass ``check_tokens`` (no deadlock, no overflow)."""
    while True:
        count = {(s, d): 0 for s in Queue for d in Queue if s != d}
        words = []
        for pc in range(n):
            q = rng.choice(list(Queue))
            wait = signal = 0
            for s in Queue:
                if s != q and count[(s, q)] and rng.random() < 0.5:
                    wait |= 1 << s
                    count[(s, q)] -= 1
                if s != q and count[(q, s)] < max_pending and rng.random() < 0.3:
                    signal |= 1 << s
                    count[(q, s)] += 1
            words.append(instr(q, pc, wait, signal))
        # Consume what is left, so that HALT finds every counter at zero.
        for (s, d), c in count.items():
            for _ in range(c):
                words.append(instr(d, len(words), wait=1 << s))
        words.append(HALT)
        try:
            check_tokens(words, TINY)
        except TokenError:
            continue
        return words


# --------------------------------------------------------------------- tests
@pytest.mark.parametrize("seed", range(6))
def test_random_programs_drain_in_order(seed):
    rng = random.Random(100 + seed)
    words = random_program(rng, 40)
    halt = len(words) - 1
    # Words past HALT are illegal and must never matter.
    junk = [0, encode_word(Opcode.LOAD, rows=0), (1 << 256) - 1]
    res = run(words + junk, seed=seed, lat=(0, 10 if seed % 2 else 2), p_ready=0.5 + 0.1 * seed)
    assert (res["done"], res["code"]) == (1, ErrorCode.NONE), res["runs"]
    assert res["dispatched"] == halt + 1
    check_order_and_tokens(words, res, halt)
    started = sorted(pc for u in res["units"].values() for pc, _ in u.starts)
    assert started == list(range(halt))
    assert all(not u.inflight for u in res["units"].values())
    assert sum(res["stall"]) > 0      # tokens made some head wait


def test_queue_order_under_back_pressure():
    """Slow units: queues fill, the dispatcher stalls, nothing is lost or reordered."""
    rng = random.Random(5)
    words = [instr(rng.choice(list(Queue)), pc) for pc in range(48)] + [HALT]
    units = {q: UnitModel(q, rng, dur=(6, 14), p_ready=0.3, cap=1) for q in Queue}
    res = run(words, units=units, lat=(0, 1), p_ready=1.0)
    assert res["done"] and res["dispatched"] == 49
    assert res["dispatch_stall"] > 0
    check_order_and_tokens(words, res, 48)


def test_tokens_left():
    words = [instr(Queue.LOAD, 0, signal=1 << Queue.MATRIX), instr(Queue.MATRIX, 1), HALT]
    res = run(words)
    assert (res["done"], res["code"], res["pc"]) == (0, ErrorCode.TOKENS_LEFT, 2)
    with pytest.raises(NpuError) as e:
        GoldenNPU(TINY).run(_image(words), PROG)
    assert (e.value.code, e.value.pc) == (ErrorCode.TOKENS_LEFT, 2)


def test_token_overflow():
    """Sixteen pushes on LOAD->MATRIX with no consumer: the 16th LOAD's completion overflows (4-bit)."""
    words = [instr(Queue.LOAD, pc, signal=1 << Queue.MATRIX) for pc in range(17)] + [HALT]
    res = run(words)
    assert (res["done"], res["code"], res["pc"]) == (0, ErrorCode.TOKEN_OVERFLOW, 15)
    with pytest.raises(NpuError) as e:
        GoldenNPU(TINY).run(_image(words), PROG)
    assert (e.value.code, e.value.pc) == (ErrorCode.TOKEN_OVERFLOW, 15)


def test_counter_holds_full_range():
    """Fifteen tokens (2**token_bits - 1) are legal, then consumed one by one."""
    words = [instr(Queue.LOAD, pc, signal=1 << Queue.MATRIX) for pc in range(15)]
    words += [instr(Queue.MATRIX, 15 + k, wait=1 << Queue.LOAD) for k in range(15)] + [HALT]
    slow_matrix = {q: UnitModel(q, random.Random(q), cap=1) for q in Queue}
    slow_matrix[Queue.MATRIX].p_ready = 0.05
    res = run(words, units=slow_matrix)
    assert res["done"], res["runs"]
    check_order_and_tokens(words, res, 30)


@pytest.mark.parametrize("kind", ["cross_wait", "full_queue"])
def test_pop_before_push_is_token_underflow_at_dispatch(kind):
    """Programs that would deadlock stop at dispatch at the golden model's pc (they used to
    be reported as DEADLOCK, and in other shapes completed or named a later pc)."""
    L, M = Queue.LOAD, Queue.MATRIX
    if kind == "cross_wait":
        # Each waits for the other; the oldest blocked head (pc 0) is the first pop before its push.
        words = [instr(M, 0, wait=1 << L, signal=1 << L), instr(L, 1, wait=1 << M, signal=1 << M), HALT]
        want_pc = 0
    else:
        # The LOAD queue fills with instructions waiting for a MATRIX token that a MATRIX
        # behind them in program order would push: dispatch blocks on the full queue.
        n = TINY.queue_depth + 3
        words = [instr(Queue.STORE, 0)] + [instr(L, 1 + k, wait=1 << M) for k in range(n)]
        words += [instr(M, 1 + n + k, signal=1 << L) for k in range(n)] + [HALT]
        want_pc = 1
    res = run(words)
    assert (res["done"], res["code"], res["pc"]) == (0, ErrorCode.TOKEN_UNDERFLOW, want_pc)
    with pytest.raises(NpuError) as e:
        GoldenNPU(TINY).run(_image(words), PROG)
    assert (e.value.code, e.value.pc) == (ErrorCode.TOKEN_UNDERFLOW, want_pc)


def test_deadlock_detection_waits():
    """A head that waits long for a slow producer is not a deadlock (the producer is busy)."""
    words = [instr(Queue.LOAD, 0, signal=1 << Queue.MATRIX), instr(Queue.MATRIX, 1, wait=1 << Queue.LOAD),
             HALT]
    units = {q: UnitModel(q, random.Random(q), dur=(200, 200)) for q in Queue}
    res = run(words, units=units)
    assert res["done"], res["runs"]
    assert res["stall"][Queue.MATRIX] > 150


def test_fetch_error():
    words = [instr(Queue.LOAD, 0), instr(Queue.STORE, 1), instr(Queue.VECTOR, 2), HALT]
    res = run(words, err_pcs=[2])
    assert (res["done"], res["code"], res["pc"]) == (0, ErrorCode.FETCH_ERROR, 2)
    # Precise: the instructions before it ran to completion, the failing one never started.
    assert sorted(pc for u in res["units"].values() for pc, _ in u.dones) == [0, 1]


def test_fetch_error_past_halt_ignored():
    words = [instr(Queue.LOAD, 0), HALT, instr(Queue.STORE, 2)]
    res = run(words, err_pcs=[2, 3, 4], lat=(0, 0), p_ready=1.0)
    assert res["fetch"].requests and len(res["fetch"].requests) > 2   # it did prefetch past HALT
    assert (res["done"], res["code"]) == (1, ErrorCode.NONE)
    assert [pc for u in res["units"].values() for pc, _ in u.starts] == [0]


@pytest.mark.parametrize("code", [ErrorCode.AXI_SLVERR, ErrorCode.AXI_DECERR])
def test_unit_error_reports_oldest_in_flight(code):
    rng = random.Random(3)
    words = [instr(Queue.LOAD, 0), instr(Queue.MATRIX, 1), instr(Queue.LOAD, 2),
             instr(Queue.LOAD, 3), instr(Queue.STORE, 4, wait=1 << Queue.LOAD), HALT]
    units = {q: UnitModel(q, rng, dur=(1, 2), cap=1) for q in Queue}
    units[Queue.LOAD] = UnitModel(Queue.LOAD, rng, dur=(1, 2), cap=1, fail=(2, code))
    res = run(words, units=units)
    assert (res["done"], res["code"], res["pc"]) == (0, code, 2)
    assert not units[Queue.STORE].starts    # its token never came; nothing issued after the error


def test_unit_error_pipelined_unit():
    """With two in flight, the failing unit's oldest in-flight instruction is reported."""
    words = [instr(Queue.VECTOR, 0), instr(Queue.VECTOR, 1), HALT]
    rng = random.Random(1)
    units = {q: UnitModel(q, rng, cap=2, p_ready=1.0) for q in Queue}
    units[Queue.VECTOR] = UnitModel(Queue.VECTOR, rng, dur=(30, 30), cap=2, p_ready=1.0,
                                    fail=(1, ErrorCode.AXI_SLVERR))
    res = run(words, units=units, lat=(0, 0), p_ready=1.0)
    assert [pc for pc, _ in units[Queue.VECTOR].starts] == [0, 1]
    assert (res["code"], res["pc"]) == (ErrorCode.AXI_SLVERR, 0)


@pytest.mark.parametrize("bad,code", [
    (0, ErrorCode.ILLEGAL_OPCODE),
    (encode_word(Opcode.VECTOR, funct=9, rows=1, blocks=1), ErrorCode.ILLEGAL_FUNCT),
    (encode_word(Opcode.HALT, wait=1), ErrorCode.BAD_TOKEN_MASK),
    (encode_word(Opcode.LOAD, rows=1, chunks=1, sram_addr=TINY.spad_rows), ErrorCode.SPAD_RANGE),
])
def test_checker_error_in_program_order(bad, code):
    words = [instr(Queue.LOAD, 0, signal=1 << Queue.STORE), instr(Queue.STORE, 1, wait=1 << Queue.LOAD),
             bad, instr(Queue.MATRIX, 3), HALT]
    res = run(words)
    assert (res["done"], res["code"], res["pc"]) == (0, code, 2)
    assert sorted(pc for u in res["units"].values() for pc, _ in u.dones) == [0, 1]
    assert res["dispatched"] == 2


def test_earlier_unit_error_beats_later_checker_error():
    """A STORE that fails after a later word failed its checks: the STORE's error is reported."""
    rng = random.Random(2)
    words = [instr(Queue.STORE, 0), 0, HALT]
    units = {q: UnitModel(q, rng) for q in Queue}
    units[Queue.STORE] = UnitModel(Queue.STORE, rng, p_ready=1.0, fail=(0, ErrorCode.AXI_SLVERR))
    res = run(words, units=units, lat=(0, 0), p_ready=1.0)
    assert (res["code"], res["pc"]) == (ErrorCode.AXI_SLVERR, 0)


def test_restart_drops_stale_prefetch():
    """Start twice on a slow fetch path: the words prefetched past HALT in run 1 never reach run 2."""
    words = [instr(Queue.LOAD, 0), instr(Queue.MATRIX, 1, signal=1 << Queue.VECTOR),
             instr(Queue.VECTOR, 2, wait=1 << Queue.MATRIX), HALT, 0, 0, 0, 0]
    res = run(words, starts=3, lat=(20, 30), p_ready=1.0, depth=8)
    assert [r["done"] for r in res["runs"]] == [1, 1, 1], res["runs"]
    for q, u in res["units"].items():
        mine = [pc for pc in range(4) if OPCODE_QUEUE.get(decode_word(words[pc])["opcode"]) == q]
        assert [pc for pc, _ in u.starts] == mine * 3
    assert res["dispatched"] == 12


def _image(words):
    img = np.zeros(PROG + INSTR_BYTES * (len(words) + 8), dtype=np.uint8)
    for k, w in enumerate(words):
        img[PROG + INSTR_BYTES * k:PROG + INSTR_BYTES * (k + 1)] = np.frombuffer(
            w.to_bytes(INSTR_BYTES, "little"), dtype=np.uint8)
    return img


# ------------------------------------------------------------------- timing
def model_takes(n, lat, max_fetch=8):
    """The cycle each of ``n`` instructions reaches its unit (docs/sequencer.md, "Cycle model").

    Start in cycle 0; request k is made in ``R_k`` (the first in cycle 1, then
    one per cycle, but at most ``max_fetch`` outstanding: request k waits for
    the cycle after response k - max_fetch was taken); its word comes back in
    ``R_k + 1 + lat`` and is at its unit two cycles later.
    """
    req, resp = [], []
    for k in range(n):
        r = 1 if k == 0 else req[-1] + 1
        if k >= max_fetch:
            r = max(r, resp[k - max_fetch] + 1)
        req.append(r)
        resp.append(r + 1 + lat)
    return [t + 2 for t in resp]


@pytest.mark.parametrize("lat", [0, 3, 6, 10, 20])
def test_dispatch_timing(lat):
    """Exact take cycles against the model: one per cycle while max_fetch covers the latency."""
    # No STOREs: a STORE waits for every older LOAD (an ordering rule, tested on its own).
    queues = (Queue.LOAD, Queue.MATRIX, Queue.VECTOR, Queue.MATRIX)
    words = [instr(queues[pc % 4], pc) for pc in range(32)] + [HALT]
    rng = random.Random(0)
    units = {q: UnitModel(q, rng, dur=(1, 1), p_ready=1.0, cap=8) for q in Queue}
    res = run(words, units=units, lat=(lat, lat), p_ready=1.0, depth=64, one_per_cycle=True)
    assert res["done"]
    takes = sorted(t for u in units.values() for _, t in u.starts)
    *want, halt = model_takes(33, lat)     # the HALT's "take" is when it would reach a unit
    assert takes == want
    assert takes[0] == 4 + lat
    if lat <= 6:
        assert takes[-1] - takes[0] == 31          # one instruction per cycle
    # busy falls 2 cycles after the last completion (take + 1), or 1 after HALT "reaches a unit".
    assert res["cycles"] == max(takes[-1] + 3, halt + 1)


# --------------------------------------------------- with the real fetch path
class _SeqDma(Elaboratable):
    """The Sequencer fetching through a DmaEngine (LOAD/STORE ports joined as in the top)."""

    def __init__(self, cfg):
        self.seq = Sequencer(cfg)
        self.dma = DmaEngine(cfg, fetch_depth=self.seq.max_fetch)   # as in the NPU top
        self.m_axi = self.dma.m_axi

    def elaborate(self, platform):
        m = Module()
        m.submodules.seq, m.submodules.dma = self.seq, self.dma
        for name in ("fetch", "load", "store"):
            wiring.connect(m, getattr(self.seq, name), getattr(self.dma, name))
        return m


def dma_fetch_takes(cfg, n, lat):
    """Run ``n`` MATMUL/VECTOR instructions fetched by the DmaEngine from the AXI slave model.

    Units always ready, 1-cycle instructions. Returns the take cycles (start in cycle 0).
    """
    from support.axi_slave import Slave
    top = _SeqDma(cfg)
    words = [instr(Queue.MATRIX if pc % 2 else Queue.VECTOR, pc) for pc in range(n)] + [HALT]
    slave = Slave(cfg, lat=(lat, lat))
    slave.mem[PROG:PROG + INSTR_BYTES * len(words)] = b"".join(
        w.to_bytes(INSTR_BYTES, "little") for w in words)
    rng = random.Random(0)
    units = {q: UnitModel(q, rng, dur=(1, 1), p_ready=1.0, cap=8) for q in (Queue.MATRIX, Queue.VECTOR)}
    pc_of = {w: pc for pc, w in enumerate(words)}
    out = {}

    async def tb(ctx):
        seq = top.seq
        _grant(ctx, seq, len(words))
        ctx.set(seq.start, 1)
        for now in range(3000):
            await slave.step(ctx, top, now)
            for q, u in units.items():
                u.step(ctx, getattr(seq, UNIT_NAMES[q]), pc_of, now)
            if now > 0 and not ctx.get(seq.busy):
                out["done"] = ctx.get(seq.done)
                out["end"] = now
                return
            await ctx.tick()
            ctx.set(seq.start, 0)
        raise AssertionError("hang")

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert out["done"] and slave.errors == []
    return sorted(t for u in units.values() for _, t in u.starts)


@pytest.mark.parametrize("name,lat", [("tiny", 1), ("tiny", 8), ("default", 1), ("default", 8)])
def test_dispatch_timing_through_dma(name, lat):
    """Start to first take is lat + 32/beat + 6; then one instruction per 32/beat cycles (R-bound)."""
    cfg = load_config(name)
    fb = max(1, INSTR_BYTES // cfg.dma_beat_bytes)
    takes = dma_fetch_takes(cfg, 24, lat)
    assert takes[0] == lat + fb + 6
    assert [b - a for a, b in zip(takes, takes[1:])] == [fb] * 23


def test_a_store_waits_for_older_loads_and_the_previous_store():
    """STORE issue order: after every older LOAD's done and the previous STORE's done, never before
    (so that an error of either leaves no younger STORE issued); younger LOADs do not hold it."""
    L, S = Queue.LOAD, Queue.STORE
    words = [instr(L, 0), instr(S, 1), instr(S, 2), instr(L, 3), instr(S, 4), instr(L, 5), HALT]
    rng = random.Random(4)
    units = {q: UnitModel(q, rng, dur=(5, 40), p_ready=1.0, cap=4) for q in Queue}
    res = run(words, units=units)
    assert res["done"]
    start = {pc: t for u in units.values() for pc, t in u.starts}
    done = {pc: t for u in units.values() for pc, t in u.dones}
    for s_pc, after in ((1, (0,)), (2, (0, 1)), (4, (0, 2, 3))):
        assert all(start[s_pc] > done[p] for p in after), (s_pc, start, done)
    assert start[4] < done[5] or start[5] < start[4]   # LOAD 5 is younger: it does not hold STORE 4
