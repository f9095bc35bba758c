"""The performance model (``sw/perfmodel.py``) against the hardware, to the cycle.

* Amaranth's simulator (no Verilator): the NPU with the HDL memory of
  ``cosim/axi_memory.py`` (the ideal slave). Every instruction's take and
  ``done`` cycle equals ``PerfResult.timeline``, and every counter of
  ``sw/regmap.COUNTERS`` (read from the register block) equals
  ``PerfResult.counters``, for small programs at two latencies.
* The Verilated NPU (marker ``rtl``, ``memory="fast"``): every counter equal
  for a single-tile GEMM and each single VECTOR op on the tiny config, at
  ``lat`` 1 and 4, and on the default config; and for multi-instruction
  programs (GEMMs over several tiles, attention plain/causal/GQA).
  The bound is exact (0 cycles) for all of them.
* The model alone: documented cycle numbers, words after HALT, programs it
  cannot time.
"""

import random

import numpy as np

from flashnpu.spec.regmap import DramGrant
import pytest
from amaranth.sim import Simulator

from support.axil import LiteHost

from flashnpu.cosim.axi_memory import SimTop
from flashnpu.sw.asm import assemble, encode_word
from flashnpu.sw.compiler import compile_workload
from flashnpu.spec.config import load_config
from flashnpu.spec.isa import INSTR_BYTES, Mem, Opcode, Queue, VectorFunct
from flashnpu.spec.memory_timing import MemoryTiming
from flashnpu.sw.perfmodel import LoadModel, StoreModel, fetch_beats, predict
from flashnpu.sw.reference import make_attention_tensors, make_gemm_tensors
from flashnpu.spec.regmap import COUNTERS, CONTROL_START, REG
from flashnpu.sw.tokens import check_tokens
from flashnpu.sw.workload import AttentionWorkload, GemmWorkload

TINY = load_config("tiny")
DEFAULT = load_config("default")
UNITS = {Queue.LOAD: "load", Queue.STORE: "store", Queue.MATRIX: "matrix", Queue.VECTOR: "vector"}

#: One VECTOR instruction per funct, sized for any config (rows <= 16, blocks of 16 rows apart).
VECTOR_OPS = {
    "init": "vector.init rows=16 blocks=1",
    "rowmax": "vector.rowmax rows=16 blocks=4 acc_block_stride=16 kv_valid=40 mult=3 shift=2",
    "exp": "vector.exp rows=16 blocks=4 acc_block_stride=16 spad_block_stride=16 kv_valid=64 mult=3 shift=2",
    "scale": "vector.scale rows=16 blocks=2 acc_block_stride=16",
    "scale-overlapping": "vector.scale rows=6 blocks=3 acc_block_stride=1",
    "recip": "vector.recip rows=5 blocks=1 mult=1000",
    "output": "vector.output rows=16 blocks=3 acc_block_stride=16 spad_block_stride=16 shift=5",
    "requant": "vector.requant rows=9 blocks=1 mult=7 shift=4",
}

GEMM_1TILE = {"tiny": GemmWorkload(M=4, N=4, K=4), "default": GemmWorkload(M=16, N=16, K=16)}


def _program(cfg, wl, seed=0):
    """(words, image, prog_addr) of a compiled workload with random inputs."""
    prog = compile_workload(wl, cfg)
    rng = np.random.default_rng(seed)
    t = make_attention_tensors(wl, rng) if isinstance(wl, AttentionWorkload) else make_gemm_tensors(wl, rng)
    return prog.words, prog.pack(t), prog.prog_addr


def _single(text):
    """One hand-written instruction and HALT, on a zero image."""
    return assemble(text + "\nhalt"), np.zeros(1 << 16, np.uint8), 0x8000


# ------------------------------------------------------- Amaranth simulation
def simulate(cfg, words, image, prog_addr, *, lat=None, memory_timing=None, mem_bytes=1 << 16,
             max_cycles=20_000):
    """Run on NPU + AxiMemory (latency ``lat``, or timing ``memory_timing``) in Amaranth's simulator.

    Returns ``(events, counters)``: per unit name the ``(take, done)`` cycles
    of its instructions in order, with cycle 0 the cycle ``start`` is high,
    and the register block's counters after the run.
    """
    top = SimTop(cfg, mem_bytes=mem_bytes, lat=lat, memory_timing=memory_timing, storage="memory")
    npu, seq = top.npu, top.npu.seq
    beat = cfg.dma_beat_bytes
    img = bytearray(np.asarray(image, dtype=np.uint8).tobytes())
    img += bytes(mem_bytes - len(img))
    code = b"".join(int(w).to_bytes(INSTR_BYTES, "little") for w in words)
    img[prog_addr:prog_addr + len(code)] = code
    takes = {name: [] for name in UNITS.values()}
    dones = {name: [] for name in UNITS.values()}
    counters = {}

    async def tb(ctx):
        data = top.dram.memory_data
        for i in range(mem_bytes // beat):
            v = int.from_bytes(img[i * beat:(i + 1) * beat], "little")
            if v:
                ctx.set(data[i], v)
        host = LiteHost()
        grant = DramGrant.for_program(prog_addr, len(words), mem_bytes)
        host.ops += [("w", REG[k], v) for k, v in grant.registers().items()]
        host.ops.append(("w", REG["CONTROL"], CONTROL_START))
        t0 = None
        for cyc in range(max_cycles):
            host.step(ctx, top.s_axil)
            if t0 is None and ctx.get(seq.start):
                t0 = cyc
            if t0 is not None:
                t = cyc - t0
                for name, port in ((n, getattr(seq, n)) for n in UNITS.values()):
                    if ctx.get(port.instr.valid) and ctx.get(port.instr.ready):
                        takes[name].append(t)
                    if ctx.get(port.done):
                        dones[name].append(t)
                if t > 0 and not ctx.get(seq.busy):
                    break
            await ctx.tick()
        else:
            raise AssertionError("the NPU did not finish")
        assert ctx.get(seq.done) and ctx.get(seq.error_code) == 0
        await ctx.tick()
        for name, _ in COUNTERS:
            counters[name] = ctx.get(npu.csr.counters[name])

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return {u: list(zip(takes[u], dones[u])) for u in takes}, counters


def _model_events(perf):
    out = {name: [] for name in UNITS.values()}
    for unit, _pc, accept, done in perf.timeline:
        if unit in out:
            out[unit].append((accept, done))
    return out


def _short_stores(cfg, count=14):
    """One-row STOREs back to back: at a high latency the DMA's burst-count FIFO holds them up."""
    text = "".join(f"store mem=spad dram_addr={0x1000 + 64 * i} dram_stride={cfg.spad_row_bytes} "
                   f"rows=1 chunks=1 sram_addr={i}\n" for i in range(count))
    return assemble(text + "halt"), np.zeros(1 << 16, np.uint8), 0x8000


SIM_CASES = [
    ("gemm-1tile", lambda: _program(TINY, GEMM_1TILE["tiny"]), 1),
    ("gemm-1tile", lambda: _program(TINY, GEMM_1TILE["tiny"]), 4),
    ("exp", lambda: _single(VECTOR_OPS["exp"]), 2),
    ("attention-causal", lambda: _program(TINY, AttentionWorkload(
        batch=1, heads=1, kv_heads=1, seq_q=8, seq_k=12, head_dim=8, causal=True)), 1),
    ("gemm-3x2x2", lambda: _program(TINY, GemmWorkload(M=12, N=8, K=8)), 3),
    ("short-stores", lambda: _short_stores(TINY), 60),
]


@pytest.mark.parametrize("name, make, lat", SIM_CASES, ids=[f"{c[0]}-lat{c[2]}" for c in SIM_CASES])
def test_every_take_and_done_cycle_in_amaranth_sim(name, make, lat):
    words, image, prog_addr = make()
    events, counters = simulate(TINY, words, image, prog_addr, lat=lat)
    perf = predict(TINY, words, lat=lat)
    assert _model_events(perf) == events
    assert perf.counters == counters


def _loads_one_row(count=12):
    """One-row LOADs back to back: with few in-flight slots the LOAD queue waits for their dones."""
    text = "".join(f"load mem=spad dram_addr={0x1000 + 64 * i} dram_stride=4 rows=1 chunks=1 sram_addr={i}\n"
                   for i in range(count))
    return assemble(text + "halt"), np.zeros(1 << 16, np.uint8), 0x8000


_ATTN16 = AttentionWorkload(batch=1, heads=1, kv_heads=1, seq_q=16, seq_k=16, head_dim=8)
_GQA = AttentionWorkload(batch=1, heads=2, kv_heads=1, seq_q=8, seq_k=24, head_dim=8)

#: Each knob of spec/timing moved off its default, with a program (and latency) whose cycles it
#: changes: (knob, value, program, lat). The RTL is built from the knob and the model reads it.
KNOB_CASES = [
    ("fetch_depth", 3, lambda cfg: _program(cfg, _ATTN16), 1),
    ("fetch_depth", 2, lambda cfg: _loads_one_row(), 10),
    ("inflight_depth", 2, lambda cfg: _loads_one_row(), 10),
    ("divider_bits_per_cycle", 5, lambda cfg: _program(cfg, _ATTN16), 1),
    ("recip_dividers", 1, lambda cfg: _program(cfg, _ATTN16), 1),
    ("recip_dividers", 5, lambda cfg: _program(cfg, _GQA), 1),
    ("queue_depth", 2, lambda cfg: _program(cfg, _GQA), 4),
    # STOREs issue one at a time (docs/dma.md), so this depth moves AWs but no take or done:
    ("store_burst_fifo_depth", 2, lambda cfg: _short_stores(cfg), 30),
]


@pytest.mark.parametrize("knob, value, make, lat", KNOB_CASES, ids=[f"{k}{v}-lat{lat}" for k, v, _, lat in KNOB_CASES])
def test_changed_knob_model_matches_amaranth_sim(knob, value, make, lat):
    """Issue 12: change a microarchitecture value in the config, and the model still matches the RTL
    on every take and done cycle and every counter."""
    cfg = TINY.replace(name=f"tiny-{knob}{value}", **{knob: value})
    words, image, prog_addr = make(cfg)
    perf = predict(cfg, words, lat=lat)
    base = predict(TINY, words, lat=lat)
    if knob == "store_burst_fifo_depth":
        assert perf.cycles == base.cycles
    else:
        assert _model_events(perf) != _model_events(base), "the case must exercise the knob"
    events, counters = simulate(cfg, words, image, prog_addr, lat=lat, max_cycles=100_000)
    assert _model_events(perf) == events
    assert perf.counters == counters


def random_program(cfg, rng: random.Random, n=30, p_dep=0.5):
    """``n`` random legal instructions of every kind and HALT, with tokens that pass ``check_tokens``.

    DMA transfers contiguous or strided (1..3-beat to 16-beat bursts, some
    across 4 KiB), MATMULs with ``m_rows`` below, at and above ``dim``,
    every VECTOR funct (overlapping SCALEs included). A dependency
    ``s -> d`` is added only from an instruction after the pair's previous
    pusher, so the k-th pop always takes the k-th push.
    """
    dim, beat = cfg.dim, cfg.dma_beat_bytes
    srb, arb = cfg.spad_row_bytes, cfg.acc_row_bytes
    instrs = []   # [opcode, fields, wait set, signal set]
    for _ in range(n):
        kind = rng.choice(["load", "load", "store", "matmul", "matmul", "vector", "vector", "vector"])
        if kind in ("load", "store"):
            mem = rng.choice([Mem.SPAD, Mem.ACC])
            rb = srb if mem == Mem.SPAD else arb
            rows = rng.choice([1, 2, 3, 4, 8, 16, 33])
            chunks = rng.choice([1, 1, 2, 3])
            contiguous = rng.random() < 0.6
            stride = chunks * rb if contiguous else chunks * rb + beat * rng.choice([1, 4, 64])
            dram = beat * rng.randrange(0, 1500)
            if rng.random() < 0.2:
                dram = 4096 * rng.randrange(1, 5) - beat * rng.randrange(1, 4)   # across 4 KiB
            f = dict(mem=mem, dram_addr=dram, dram_stride=stride, rows=rows, chunks=chunks,
                     sram_addr=rng.randrange(0, 64), sram_chunk_stride=rng.choice([rows, 40]))
            op = Opcode.LOAD if kind == "load" else Opcode.STORE
        elif kind == "matmul":
            f = dict(m_rows=rng.choice([1, 2, dim - 1, dim, dim + 3, 3 * dim]), k_chunks=rng.choice([1, 2, 3]),
                     n_blocks=rng.choice([1, 2]), a_addr=rng.randrange(0, 50), a_kstride=40,
                     w_addr=200, w_kstride=dim, w_nstride=3 * dim, out_addr=rng.randrange(0, 40),
                     out_nstride=rng.choice([60, 0, 1]), accumulate=rng.randrange(2), transpose_w=rng.randrange(2))
            op = Opcode.MATMUL
        else:
            funct = rng.choice(list(VectorFunct))
            rows = rng.choice([1, 2, 5, dim, 2 * dim])
            f = dict(funct=funct, rows=rows, blocks=rng.choice([1, 2, 3]), acc_addr=rng.randrange(0, 40),
                     acc_block_stride=rng.choice([rows, rows + 2, 0, 1]), spad_addr=300,
                     spad_block_stride=rows, state_addr=rng.randrange(0, cfg.vector_state_rows - rows),
                     kv_valid=rng.randrange(1, 100), mult=rng.randrange(1, 1000), shift=rng.randrange(1, 20))
            op = Opcode.VECTOR
        instrs.append([op, f, set(), set()])
    queue = {Opcode.LOAD: Queue.LOAD, Opcode.STORE: Queue.STORE, Opcode.MATMUL: Queue.MATRIX,
             Opcode.VECTOR: Queue.VECTOR}
    last_push = {}   # (s, d) -> pc of the latest pusher
    for i, ins in enumerate(instrs):
        d = queue[ins[0]]
        for s in Queue:
            if s == d or rng.random() > p_dep / 2:
                continue
            cands = [j for j in range(last_push.get((s, d), -1) + 1, i) if queue[instrs[j][0]] == s]
            if not cands:
                continue
            j = rng.choice(cands[-4:])
            instrs[j][3].add(d)
            ins[2].add(s)
            last_push[(s, d)] = j
    words = []
    for op, f, w, sg in instrs:
        words.append(encode_word(op, wait=sum(1 << q for q in w), signal=sum(1 << q for q in sg), **f))
    words.append(encode_word(Opcode.HALT))
    check_tokens(words, cfg)
    return words


@pytest.mark.parametrize("seed", range(6))
def test_random_programs_in_amaranth_sim(seed):
    """Random legal programs (every unit, tokens between all queues) at random latencies: every
    take and done cycle and every counter."""
    rng = random.Random(seed)
    lat = rng.choice([1, 2, 3, 6, 13])
    words = random_program(TINY, rng, n=rng.choice([10, 25, 40]))
    events, counters = simulate(TINY, words, np.zeros(1 << 16, np.uint8), 0xC000, lat=lat,
                                max_cycles=100_000)
    perf = predict(TINY, words, lat=lat)
    assert _model_events(perf) == events
    assert perf.counters == counters


#: Memory timings beyond a plain latency (spec/memory_timing.py): R gaps every k-th cycle of a burst.
GAP_CASES = [
    ("gemm-1tile", lambda: _program(TINY, GEMM_1TILE["tiny"]), MemoryTiming(lat=1, r_gap_every=2)),
    ("gemm-3x2x2", lambda: _program(TINY, GemmWorkload(M=12, N=8, K=8)), MemoryTiming(lat=3, r_gap_every=3)),
    ("attention-causal", lambda: _program(TINY, AttentionWorkload(
        batch=1, heads=1, kv_heads=1, seq_q=8, seq_k=12, head_dim=8, causal=True)), MemoryTiming(lat=2, r_gap_every=5)),
    ("loads-one-row", lambda: _loads_one_row(), MemoryTiming(lat=1, r_gap_every=2)),
]


@pytest.mark.parametrize("name, make, mt", GAP_CASES,
                         ids=[f"{c[0]}-lat{c[2].lat}-gap{c[2].r_gap_every}" for c in GAP_CASES])
def test_memory_timing_with_r_gaps_in_amaranth_sim(name, make, mt):
    """The HDL memory and the model read one description: with R gaps, every take and done cycle
    and every counter equal, and the gaps cost cycles (the model of the plain latency is wrong)."""
    words, image, prog_addr = make()
    events, counters = simulate(TINY, words, image, prog_addr, memory_timing=mt, max_cycles=100_000)
    perf = predict(TINY, words, memory_timing=mt)
    assert _model_events(perf) == events
    assert perf.counters == counters
    assert predict(TINY, words, lat=mt.lat).cycles < perf.cycles


@pytest.mark.parametrize("seed", range(4))
def test_random_programs_with_r_gaps_in_amaranth_sim(seed):
    """Random legal programs at random latencies and R gaps: every take/done cycle and counter."""
    rng = random.Random(100 + seed)
    mt = MemoryTiming(lat=rng.choice([1, 2, 5]), r_gap_every=rng.choice([2, 3, 4, 7]))
    words = random_program(TINY, rng, n=rng.choice([10, 25]))
    events, counters = simulate(TINY, words, np.zeros(1 << 16, np.uint8), 0xC000, memory_timing=mt,
                                max_cycles=100_000)
    perf = predict(TINY, words, memory_timing=mt)
    assert _model_events(perf) == events
    assert perf.counters == counters


def test_memory_timing_rejections():
    """A description that cannot work, or that the model cannot time exactly, names its field."""
    with pytest.raises(ValueError, match="'r_gap_every' = 1"):
        MemoryTiming(r_gap_every=1)
    with pytest.raises(ValueError, match="'lat' = 0"):
        MemoryTiming(lat=0)
    with pytest.raises(ValueError, match=r"'queue_depth' = 8: .*fetch_depth \+ read_slots"):
        predict(TINY, assemble("halt"), memory_timing=MemoryTiming(queue_depth=8))
    with pytest.raises(ValueError, match="lat or memory_timing"):
        predict(TINY, assemble("halt"), lat=2, memory_timing=MemoryTiming())


# --------------------------------------------------------- Verilated NPU
def _rtl_counters(cfg, words, image, prog_addr, lat, memory_timing=None):
    from types import SimpleNamespace

    from flashnpu.cosim.rtl_backend import run_program
    timing_opt = {"lat": lat} if memory_timing is None else {"memory_timing": memory_timing}
    rtl = run_program(SimpleNamespace(words=words, prog_addr=prog_addr), image, config=cfg, memory="fast",
                      **timing_opt)
    assert rtl.done, (rtl.error_code, rtl.error_pc)
    return rtl.counters


def _check_rtl(cfg, case, lat):
    words, image, prog_addr = case
    perf = predict(cfg, words, lat=lat)
    got = _rtl_counters(cfg, words, image, prog_addr, lat)
    assert perf.counters == got      # every counter, CYCLES first: exact


SINGLE = ["gemm-1tile", *VECTOR_OPS]


@pytest.mark.rtl
def test_rtl_memory_timing_with_r_gaps():
    """The Verilated NPU on an HDL memory with latency 2 and an R gap every 3rd cycle of a burst:
    every counter is the model's for the same description."""
    mt = MemoryTiming(lat=2, r_gap_every=3)
    words, image, prog_addr = _program(TINY, _GQA, seed=2)
    perf = predict(TINY, words, memory_timing=mt)
    assert perf.counters == _rtl_counters(TINY, words, image, prog_addr, None, memory_timing=mt)
    assert predict(TINY, words, lat=2).cycles < perf.cycles


def _single_case(cfg, name):
    if name == "gemm-1tile":
        return _program(cfg, GEMM_1TILE[cfg.name])
    return _single(VECTOR_OPS[name])


@pytest.mark.rtl
@pytest.mark.parametrize("name", SINGLE)
def test_rtl_single_instruction_tiny(name):
    _check_rtl(TINY, _single_case(TINY, name), lat=1)


@pytest.mark.rtl
@pytest.mark.parametrize("name", ["gemm-1tile", "rowmax", "recip", "output"])
def test_rtl_single_instruction_tiny_lat4(name):
    _check_rtl(TINY, _single_case(TINY, name), lat=4)


@pytest.mark.rtl
@pytest.mark.parametrize("name", ["gemm-1tile", "exp", "scale", "recip"])
def test_rtl_single_instruction_default(name):
    _check_rtl(DEFAULT, _single_case(DEFAULT, name), lat=1)


MULTI = [
    ("tiny", GemmWorkload(M=8, N=12, K=20), 1),
    ("tiny", AttentionWorkload(batch=1, heads=1, kv_heads=1, seq_q=16, seq_k=16, head_dim=8), 1),
    ("tiny", AttentionWorkload(batch=1, heads=4, kv_heads=2, seq_q=8, seq_k=8, head_dim=4, causal=True), 1),
    ("tiny", AttentionWorkload(batch=1, heads=1, kv_heads=1, seq_q=7, seq_k=13, head_dim=6, causal=True), 4),
    ("default", GemmWorkload(M=64, N=48, K=80), 1),
    ("default", AttentionWorkload(batch=1, heads=1, kv_heads=1, seq_q=32, seq_k=48, head_dim=32, causal=True), 1),
]


@pytest.mark.rtl
def test_rtl_with_changed_knobs_matches_the_model():
    """The Verilated NPU built with fetch_depth 3 and a radix-32 divider: cycle for cycle the model's."""
    cfg = TINY.replace(name="tiny-fetch3-div5", fetch_depth=3, divider_bits_per_cycle=5)
    words, image, prog_addr = _program(cfg, _ATTN16, seed=1)
    assert predict(cfg, words).cycles != predict(TINY, words).cycles
    _check_rtl(cfg, (words, image, prog_addr), 1)


@pytest.mark.rtl
@pytest.mark.parametrize("config, wl, lat", MULTI, ids=[f"{c}-{w}-lat{lat}" for c, w, lat in MULTI])
def test_rtl_multi_instruction_programs(config, wl, lat):
    cfg = load_config(config)
    _check_rtl(cfg, _program(cfg, wl, seed=1), lat)


# ------------------------------------------------------------ model only
@pytest.mark.parametrize("config", ["tiny", "default", "large"])
@pytest.mark.parametrize("lat", [1, 7])
def test_first_instruction_reaches_its_unit_at_lat_plus_fb_plus_6(config, lat):
    """docs/sequencer.md: through the DmaEngine the first instruction is at its unit in cycle lat + fb + 6."""
    cfg = load_config(config)
    perf = predict(cfg, assemble("vector.init rows=3 blocks=1\nhalt"), lat=lat)
    (_, pc, accept, done), _halt = perf.timeline
    assert (pc, accept, done) == (0, lat + fetch_beats(cfg) + 6, lat + fetch_beats(cfg) + 6 + 3)
    assert perf.busy["vector"] == 3


def test_dispatch_rate_is_one_word_per_fetch_beats():
    """A stream of independent INITs: the vector unit takes one each ``fb`` cycles (the R channel) when
    each lasts fewer cycles than that."""
    for cfg in (TINY, DEFAULT):
        fb = fetch_beats(cfg)
        words = assemble("vector.init rows=1 blocks=1\n" * 40 + "halt")
        takes = [a for u, _, a, _ in predict(cfg, words).timeline if u == "vector"]
        gaps = {b - a for a, b in zip(takes[10:], takes[11:])}
        assert gaps == {fb}


def test_words_after_halt_outside_the_code_window_do_not_change_the_result():
    words, _, prog_addr = _program(TINY, GemmWorkload(M=8, N=4, K=8))
    junk = [encode_word(Opcode.LOAD, rows=0, chunks=0), 0, 12345]     # illegal, but never dispatched
    grant = DramGrant.for_program(prog_addr, len(words), 1 << 16)
    a, b = predict(TINY, words), predict(TINY, list(words) + junk, grant=grant)
    assert a == b


def test_a_refused_dma_is_named():
    words, _, prog_addr = _program(TINY, GemmWorkload(M=8, N=4, K=8))
    with pytest.raises(ValueError, match="DMA_WINDOW"):
        predict(TINY, words, grant=DramGrant(prog_addr, prog_addr + 32 * len(words), ((0, 64),)))


def test_programs_it_cannot_time_are_rejected():
    with pytest.raises(ValueError, match="BAD_FIELD"):
        predict(TINY, assemble("vector.init rows=0 blocks=1\nhalt"))
    with pytest.raises(ValueError, match="no HALT"):
        predict(TINY, assemble("vector.init rows=1 blocks=1"))
    with pytest.raises(ValueError, match="TOKEN_UNDERFLOW"):
        predict(TINY, assemble("vector.init wait=matrix rows=1 blocks=1\nhalt"))
    with pytest.raises(ValueError, match="lat"):
        predict(TINY, assemble("halt"), lat=0)


def test_counters_cover_the_register_map():
    perf = predict(TINY, _program(TINY, GemmWorkload(M=8, N=4, K=8))[0])
    assert list(perf.counters) == [name for name, _ in COUNTERS]


def test_thousand_instruction_program_predicts_the_same_twice():
    """The s1024 attention program (929 instructions); its speed target is a bench row
    (bench.TOOL_SPEED), here only that the decode cache changes nothing."""
    wl = AttentionWorkload(batch=1, heads=1, kv_heads=1, seq_q=1024, seq_k=1024, head_dim=64)
    words = compile_workload(wl, DEFAULT).words
    first = predict(DEFAULT, words)
    perf = predict(DEFAULT, words)
    assert perf.instructions == len(words) and perf.cycles == first.cycles
    assert perf.counters == first.counters


def _drive_loads(lm, loads, fetches, fb):
    """Interleave LOADs ``(offered, bursts)`` and fetch requests (cycles) as ``predict`` does:
    the AR decisions in cycle order, a fetch first. Returns every accept/done and fetch first beat."""
    out, kp, k, busy = [], 0, 0, False
    while True:
        if not busy and k < len(loads):
            offered, bursts = loads[k]
            accept = max(lm.ready, offered)
            lm.start(accept, bursts)
            busy, k = True, k + 1
        tf = fetches[kp] if kp < len(fetches) else None
        if busy and (tf is None or lm.cand < tf):
            dn = lm.run(1 << 62 if tf is None else tf)
            if dn is not None:
                out.append(("load", accept, dn))
                busy = False
            continue
        if tf is None:
            return out
        out.append(("fetch", tf, lm.fetch(tf, fb)))
        kp += 1


@pytest.mark.parametrize("config", ["tiny", "default", "large"])
def test_load_closed_form_equals_burst_by_burst(config):
    """The closed forms of ``LoadModel.run`` (slot-bound steady state, periodic state) give the same
    cycles as placing every burst, with fetch requests falling anywhere, short and long bursts, at
    latencies that do and do not keep the slots the bottleneck."""
    cfg = load_config(config)
    rng = random.Random(5)
    blen = cfg.dma_burst_len
    jumped = 0
    for trial in range(80):
        lat = rng.choice([1, 2, 3, 5, 8, 12, 20, 40, 100])
        loads, t = [], 0
        for _ in range(rng.randrange(1, 6)):
            t += rng.randrange(0, 300)
            runs = [(rng.choice([blen, blen, 1, 2, 3, 4, blen // 2]), rng.randrange(1, 120))
                    for _ in range(rng.randrange(1, 4))]
            loads.append((t, tuple(b for n, c in runs for b in [n] * c)))
        fetches = sorted(rng.sample(range(1, 8000), rng.randrange(0, 80)))
        fb = fetch_beats(cfg)
        fast = LoadModel(cfg, lat)
        slow = LoadModel(cfg, lat, closed_form=False)
        assert _drive_loads(fast, loads, fetches, fb) == _drive_loads(slow, loads, fetches, fb)
        assert (fast.ready, fast.r_free, fast.free[-cfg.dma_max_outstanding:]) == \
            (slow.ready, slow.r_free, slow.free[-cfg.dma_max_outstanding:])
        jumped += len(fast.free) < len(slow.free)
    assert jumped >= 10            # the closed form did run, in many of the trials


@pytest.mark.parametrize("config", ["tiny", "default", "large"])
def test_store_closed_form_equals_burst_by_burst(config):
    """``StoreModel`` places the bursts after a STORE's first in closed form: the same take and
    done cycles and the same state as burst by burst, for STOREs back to back or apart, bursts of
    1 beat to a full burst, B backlogs from the previous STORE, latencies 1 to 100."""
    cfg = load_config(config)
    rng = random.Random(9)
    for trial in range(150):
        lat = rng.choice([1, 2, 3, 5, 10, 40, 100])
        fast, slow = StoreModel(cfg, lat), StoreModel(cfg, lat, closed_form=False)
        t = 0
        for _ in range(rng.randrange(1, 10)):
            t += rng.choice([0, 0, rng.randrange(1, 300)])
            bursts = tuple(rng.choice([1, 1, 2, 3, 4, cfg.dma_burst_len]) for _ in range(rng.randrange(1, 40)))
            assert fast.issue_bursts(t, bursts) == slow.issue_bursts(t, bursts)
        assert (fast.pop, fast.p_prev, fast.b_prev, fast.ready, fast.done) == \
            (slow.pop, slow.p_prev, slow.b_prev, slow.ready, slow.done)
