"""The performance model: cycles of a program on the NPU, without the RTL.

It models the microarchitecture of ``hw/`` (see ``docs/performance.md``):
the sequencer's fetch and in-order dispatch into queues of
``config.queue_depth``, the dependency tokens, and each unit's own pipeline
(DMA bursts and outstanding reads, the array's tile stream, the vector unit's
rows). The AXI memory is the "ideal slave" of ``docs/dma.md`` with latency
``lat`` (cocotbext-axi's ``AxiRam`` behaves as ``lat = 1``).

Why one pass is enough: every quantity an instruction waits for belongs to an
instruction earlier in program order. Its dispatch waits for the dispatch of
the previous instruction and for a free slot in its queue (freed when the
instruction ``queue_depth`` places ahead in the same queue starts); its start
waits for the previous instruction of its unit and, for each ``wait`` bit, for
the completion of the instruction whose push it pops (counters are FIFO in
count: the k-th pop of ``src -> dst`` takes the k-th push, and a program that
passes ``sw/tokens.py`` pushes it earlier in program order). So the model
walks the program once, in order, and is exact wherever each unit model is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flashnpu.sw.config import NPUConfig, load_config
from flashnpu.sw.isa import INSTR_BYTES, Mem, Opcode, Queue, VectorFunct, decode

__all__ = ["plan_bursts", "LoadModel", "StoreModel", "MatrixModel", "VectorModel",
           "SequencerTiming", "PerfResult", "predict"]


# ----------------------------------------------------------------------- DMA
def plan_bursts(config: NPUConfig, f: dict) -> list[tuple[int, int]]:
    """(addr, beats) of every AXI burst of a LOAD/STORE, as the DMA engine cuts them.

    Contiguous rows (``dram_stride == chunks * row_bytes``) form one segment,
    otherwise each DRAM row is one; a burst never exceeds ``dma_burst_len``
    beats nor crosses 4 KiB.
    """
    rb = config.spad_row_bytes if f["mem"] == Mem.SPAD else config.acc_row_bytes
    beat = config.dma_beat_bytes
    row_bytes = f["chunks"] * rb
    if f["dram_stride"] == row_bytes:
        segs = [(f["dram_addr"], f["rows"] * row_bytes // beat)]
    else:
        segs = [(f["dram_addr"] + r * f["dram_stride"], row_bytes // beat) for r in range(f["rows"])]
    out = []
    for addr, left in segs:
        while left:
            n = min(left, config.dma_burst_len, (4096 - addr % 4096) // beat)
            out.append((addr % (1 << 32), n))
            addr += n * beat
            left -= n
    return out


class LoadModel:
    """The DMA engine's LOAD side (docs/dma.md, "Cycle model"): exact for the ideal slave.

    ``issue(offered, f)`` returns ``(accept, done)``: the cycle the LOAD is
    taken (offered, or the cycle after the previous LOAD's last burst) and
    the cycle of its ``done`` pulse. Bursts of all LOADs share the read slots
    and the R channel in order.
    """

    def __init__(self, config: NPUConfig, lat: int):
        self.cfg, self.lat = config, lat
        self.free = []              # per burst: cycle its slot frees
        self.a_prev = self.s_prev = None
        self.len_prev = 0
        self.ready = 0              # first cycle a new LOAD can be taken

    def issue(self, offered: int, f: dict) -> tuple[int, int]:
        n_slots = self.cfg.dma_max_outstanding
        accept = max(self.ready, offered)
        for i, (_, n) in enumerate(plan_bursts(self.cfg, f)):
            a = accept + 2 if i == 0 else self.a_prev + 1
            g = len(self.free)
            if g >= n_slots:
                a = max(a, self.free[g - n_slots] + 1)
            s = a + 2 + self.lat if self.s_prev is None else max(a + 2 + self.lat,
                                                                 self.s_prev + self.len_prev)
            self.free.append(s + n + 1)
            self.a_prev, self.s_prev, self.len_prev = a, s, n
        self.ready = self.a_prev + 1
        return accept, self.s_prev + self.len_prev + 3


class StoreModel:
    """The DMA engine's STORE side (docs/dma.md, "Cycle model"): exact for the ideal slave."""

    WLEN_DEPTH = 4

    def __init__(self, config: NPUConfig, lat: int):
        self.cfg, self.lat = config, lat
        self.aw, self.pop, self.b = [], [], []
        self.p_prev = None
        self.ready = 0

    def issue(self, offered: int, f: dict) -> tuple[int, int]:
        accept = max(self.ready, offered)
        for i, (_, n) in enumerate(plan_bursts(self.cfg, f)):
            a = accept + 2 if i == 0 else self.aw[-1] + 1
            g = len(self.aw)
            if g >= self.WLEN_DEPTH:
                a = max(a, self.pop[g - self.WLEN_DEPTH] + 1)
            self.aw.append(a)
            p_first = a + 1 if self.p_prev is None else max(self.p_prev + 1, a + 1)
            self.p_prev = p_first + n - 1
            self.pop.append(self.p_prev)
            b = self.p_prev + 4 + self.lat
            if self.b:
                b = max(b, self.b[-1] + 1)
            self.b.append(b)
        self.ready = self.aw[-1] + 1
        return accept, self.b[-1] + 3


# ------------------------------------------------------------- matrix, vector
class MatrixModel:
    """The matrix unit (docs/matrix_unit.md): tiles of ``max(m_rows, dim)`` cycles, pipelined."""

    def __init__(self, config: NPUConfig, timing: "SequencerTiming"):
        self.cfg, self.t = config, timing
        self.ready = 0

    def tile_cycles(self, f: dict) -> int:
        return f["n_blocks"] * f["k_chunks"] * max(f["m_rows"], self.cfg.dim)

    def issue(self, offered: int, f: dict) -> tuple[int, int]:
        accept = max(self.ready, offered)
        stream = self.tile_cycles(f)
        self.ready = accept + stream + self.t.matrix_gap
        return accept, accept + stream + self.t.matrix_latency


class VectorModel:
    """The vector unit (docs/vector_unit.md): one accumulator row per cycle, drained per instruction."""

    def __init__(self, config: NPUConfig, timing: "SequencerTiming"):
        self.cfg, self.t = config, timing
        self.ready = 0

    def busy_cycles(self, f: dict) -> int:
        funct = VectorFunct(f["funct"])
        if funct == VectorFunct.INIT:
            return f["rows"]
        if funct == VectorFunct.RECIP:
            return f["rows"] * self.t.recip_cycles_per_row
        return f["rows"] * f["blocks"]

    def issue(self, offered: int, f: dict) -> tuple[int, int]:
        accept = max(self.ready, offered)
        done = accept + self.busy_cycles(f) + self.t.vector_latency[VectorFunct(f["funct"])]
        self.ready = done + self.t.vector_gap
        return accept, done


# ------------------------------------------------------------------ sequencer
@dataclass(frozen=True)
class SequencerTiming:
    """Fixed latencies of the control path and the units, measured on the RTL.

    Each is a cycle count between two events named in docs/performance.md;
    ``tests/test_perfmodel.py`` checks them against the Amaranth simulation.
    """
    #: start pulse -> first fetch request; request -> word at the dispatcher is the DMA's fetch latency.
    start_to_fetch: int = 1
    #: words the fetch path keeps in flight (DmaEngine fetch_depth).
    fetch_depth: int = 4
    #: dispatcher -> instruction at its queue's head (FIFO latency).
    dispatch_to_head: int = 1
    #: queue head with its tokens -> offered to the unit.
    head_to_offer: int = 0
    #: unit done -> the token is visible to a waiting queue head.
    done_to_token: int = 1
    #: last unit done -> done in STATUS after HALT.
    halt_to_done: int = 2
    matrix_gap: int = 0
    matrix_latency: int = 0
    vector_gap: int = 0
    vector_latency: dict = field(default_factory=lambda: {f: 0 for f in VectorFunct})
    recip_cycles_per_row: int = 1


@dataclass
class PerfResult:
    """What the model predicts for one program."""
    cycles: int
    instructions: int
    busy: dict            # unit -> cycles with an instruction in flight ("load", "store", "matrix", "vector")
    stall: dict           # queue -> cycles its head waited for a token
    array_active: int     # cycles an A row entered the array
    bytes_read: int
    bytes_written: int
    timeline: list        # (queue, pc, accept, done) per instruction, for traces
    counters: dict = field(default_factory=dict)   # the same numbers under sw/regmap.COUNTERS names


def _union_length(intervals):
    total, end = 0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def _fetch_latency(config: NPUConfig, lat: int) -> int:
    """Request -> word on fetch.resp (docs/dma.md, "Instruction fetch")."""
    return lat + max(1, INSTR_BYTES // config.dma_beat_bytes) + 3


def predict(config, words, *, lat: int = 1, timing: SequencerTiming | None = None) -> PerfResult:
    """Predict the cycles of ``words`` (a program ending in HALT) on ``config``.

    Cycle 0 is the cycle START takes effect; ``cycles`` is the CYCLES counter
    at done. ``lat`` is the AXI memory latency of the ideal slave.
    """
    cfg = load_config(config)
    t = timing or DEFAULT_TIMING
    units = {
        Queue.LOAD: LoadModel(cfg, lat),
        Queue.STORE: StoreModel(cfg, lat),
        Queue.MATRIX: MatrixModel(cfg, t),
        Queue.VECTOR: VectorModel(cfg, t),
    }
    from flashnpu.sw.isa import OPCODE_QUEUE
    fetch_lat = _fetch_latency(cfg, lat)
    pushes = {}                     # (src, dst) -> list of token-visible cycles
    pops = {}                       # (src, dst) -> pops so far
    accepts = {q: [] for q in Queue}
    prev_accept = {q: -1 for q in Queue}
    intervals = {q: [] for q in Queue}
    stall = {q: 0 for q in Queue}
    timeline = []
    array_active = bytes_read = bytes_written = 0
    fetched = []                    # cycle word k is at the dispatcher
    dispatch = -1
    halt_pc = None
    last_done = 0
    n = 0
    for pc, word in enumerate(words):
        # Fetch: requests in order, at most fetch_depth words requested and not yet dispatched.
        req = t.start_to_fetch if pc == 0 else fetched_req + 1
        if pc >= t.fetch_depth:
            req = max(req, dispatched_at[pc - t.fetch_depth])
        fetched_req = req
        arrive = req + fetch_lat
        if pc == 0:
            dispatched_at = []
        d = decode(word)
        op = d["opcode"]
        n += 1
        if op == Opcode.HALT:
            dispatch = max(dispatch + 1, arrive)
            dispatched_at.append(dispatch)
            halt_pc = pc
            break
        q = OPCODE_QUEUE[op]
        # Dispatch: in order, one per cycle, into a queue with room.
        slot_free = -1
        if len(accepts[q]) >= cfg.queue_depth:
            slot_free = accepts[q][-cfg.queue_depth] + 1
        dispatch = max(dispatch + 1, arrive, slot_free)
        dispatched_at.append(dispatch)
        head = max(dispatch + t.dispatch_to_head, prev_accept[q] + 1)
        ready = head
        for src in Queue:
            if d["wait"] >> src & 1:
                k = pops.get((src, q), 0)
                pops[(src, q)] = k + 1
                ready = max(ready, pushes[(src, q)][k])
        stall[q] += ready - head
        accept, done = units[q].issue(ready + t.head_to_offer, d)
        accepts[q].append(accept)
        prev_accept[q] = accept
        intervals[q].append((accept + 1, done + 1))
        for dst in Queue:
            if d["signal"] >> dst & 1:
                pushes.setdefault((q, dst), []).append(done + t.done_to_token)
        timeline.append((q.name.lower(), pc, accept, done))
        last_done = max(last_done, done)
        if op == Opcode.MATMUL:
            array_active += d["n_blocks"] * d["k_chunks"] * d["m_rows"]
        elif op in (Opcode.LOAD, Opcode.STORE):
            rb = cfg.spad_row_bytes if d["mem"] == Mem.SPAD else cfg.acc_row_bytes
            nbytes = d["rows"] * d["chunks"] * rb
            if op == Opcode.LOAD:
                bytes_read += nbytes
            else:
                bytes_written += nbytes
    cycles = max(last_done, dispatch) + t.halt_to_done
    if halt_pc is not None:
        timeline.append(("sequencer", halt_pc, dispatch, cycles))
    busy = {q.name.lower(): _union_length(intervals[q]) for q in Queue}
    res = PerfResult(cycles=cycles, instructions=n, busy=busy,
                     stall={q.name.lower(): stall[q] for q in Queue},
                     array_active=array_active, bytes_read=bytes_read,
                     bytes_written=bytes_written, timeline=timeline)
    res.counters = {
        "CYCLES": cycles, "MATRIX_BUSY": busy["matrix"], "ARRAY_ACTIVE": array_active,
        "VECTOR_BUSY": busy["vector"], "LOAD_BUSY": busy["load"], "STORE_BUSY": busy["store"],
        "LOAD_STALL": res.stall["load"], "STORE_STALL": res.stall["store"],
        "MATRIX_STALL": res.stall["matrix"], "VECTOR_STALL": res.stall["vector"],
        "BYTES_READ": bytes_read, "BYTES_WRITTEN": bytes_written, "INSTRUCTIONS": n,
    }
    return res


DEFAULT_TIMING = SequencerTiming()
