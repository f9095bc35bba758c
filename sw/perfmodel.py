"""The performance model: the cycles of a program on the NPU, without the RTL.

It models the microarchitecture of ``hw/`` event by event (the rules, with the
measurements behind them, are in ``docs/performance.md``): the sequencer's
instruction fetch through the DMA engine (``max_fetch`` words in flight, one
32-byte word per ``32/beat`` R beats), the in-order check/dispatch stage into
queues of ``config.queue_depth``, the dependency tokens, each unit's pipeline
(LOAD bursts in up to ``dma_max_outstanding`` read slots, STORE bursts, the
array's tile stream, the vector unit's elements) and the end of the run after
HALT. The AXI memory is the "ideal slave" of ``docs/dma.md`` with latency
``lat``: ``cosim/axi_memory.py`` exactly, and cocotbext-axi's ``AxiRam``
behaves as ``lat = 1``.

How it runs fast: every time in the machine is a max/plus function of earlier
times, so the model computes each one as soon as its inputs are known (a
dataflow over the program: fetch -> dispatch -> queue head -> take -> done ->
tokens). Only one resource needs the events in time order: the AXI read
channel, which instruction fetch and LOAD bursts share (a fetch request wins
the AR register in its cycle; the R beats follow the AR order). The model
merges the two streams of AR decisions by cycle; between two fetch requests
the bursts of a LOAD are placed in a tight loop. See ``docs/performance.md``
for why no value can be needed before it is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flashnpu.sw.asm import decode_word
from flashnpu.sw.config import NPUConfig, load_config
from flashnpu.sw.golden import check_fields
from flashnpu.sw.isa import INSTR_BYTES, OPCODE_QUEUE, ErrorCode, Mem, Opcode, Queue, VectorFunct
from flashnpu.sw.regmap import COUNTERS

__all__ = ["plan_bursts", "burst_beats", "fetch_beats", "LoadModel", "StoreModel", "MatrixModel", "VectorModel",
           "vector_cycles", "scale_stall_cycles", "SequencerTiming", "DEFAULT_TIMING",
           "PerfResult", "predict"]


# ----------------------------------------------------------------------- DMA
def _segments(config: NPUConfig, f: dict):
    """(first byte address, beats) of each DRAM segment of a LOAD/STORE.

    Contiguous rows (``dram_stride == chunks * row_bytes``) form one segment,
    otherwise each DRAM row is one.
    """
    rb = config.spad_row_bytes if f["mem"] == Mem.SPAD else config.acc_row_bytes
    row_bytes = f["chunks"] * rb
    beat = config.dma_beat_bytes
    if f["dram_stride"] == row_bytes:
        return [(f["dram_addr"], f["rows"] * row_bytes // beat)]
    return [(f["dram_addr"] + r * f["dram_stride"], row_bytes // beat) for r in range(f["rows"])]


def _cut(config: NPUConfig, addr: int, left: int) -> list[tuple[int, int]]:
    """(addr, beats) of the bursts of one segment: at most ``dma_burst_len`` beats, never across 4 KiB."""
    beat, blen = config.dma_beat_bytes, config.dma_burst_len
    out = []
    while left:
        n = (4096 - addr % 4096) // beat
        if n > blen:
            n = blen
        if n > left:
            n = left
        out.append((addr % (1 << 32), n))
        addr += n * beat
        left -= n
    return out


def plan_bursts(config: NPUConfig, f: dict) -> list[tuple[int, int]]:
    """(addr, beats) of every AXI burst of a LOAD/STORE, as the DMA engine cuts them.

    Contiguous rows (``dram_stride == chunks * row_bytes``) form one segment,
    otherwise each DRAM row is one; a burst never exceeds ``dma_burst_len``
    beats nor crosses 4 KiB.
    """
    return [b for addr, beats in _segments(config, f) for b in _cut(config, addr, beats)]


def burst_beats(config: NPUConfig, f: dict) -> tuple[int, ...]:
    """The beats of each burst of :func:`plan_bursts`, without the addresses (faster: rows that
    start at the same offset in their 4 KiB page are cut alike)."""
    segs = _segments(config, f)
    addr, beats = segs[0]
    row_bytes = beats * config.dma_beat_bytes
    if len(segs) > 1 and 4096 % row_bytes == 0 and addr % row_bytes == 0 \
            and f["dram_stride"] % row_bytes == 0:
        # Every row starts on a multiple of its size, which divides the page: all are cut alike.
        return tuple(n for _, n in _cut(config, addr, beats)) * len(segs)
    memo = {}
    out = []
    for addr, beats in segs:
        key = addr % 4096
        lens = memo.get(key)
        if lens is None:
            lens = memo[key] = [n for _, n in _cut(config, addr, beats)]
        out += lens
    return tuple(out)


def equal_runs(bursts) -> tuple[int, ...]:
    """For each burst, the index just after the run of equal bursts that holds it."""
    n = len(bursts)
    if n and bursts.count(bursts[0]) == n:
        return (n,) * n
    out = [0] * n
    end = n
    for i in range(n - 1, -1, -1):
        if i + 1 < n and bursts[i + 1] != bursts[i]:
            end = i + 1
        out[i] = end
    return tuple(out)


def fetch_beats(config: NPUConfig) -> int:
    """R beats of one instruction fetch (one beat if a beat holds a whole 32-byte word)."""
    return max(1, INSTR_BYTES // config.dma_beat_bytes)


class LoadModel:
    """The DMA engine's read side (docs/dma.md, "Cycle model"): LOAD bursts and the shared AXI read channel.

    Every read burst, LOAD or instruction fetch, is decided into the AR
    register in some cycle *a* (at most one per cycle, a fetch first); its
    first R beat comes in ``a + 2 + lat`` or when the R channel has sent every
    earlier burst, then one beat per cycle. LOAD bursts use
    ``dma_max_outstanding`` read slots round robin; a slot frees the cycle
    after its last beat is retired.

    ``issue(offered, f)`` is the model without fetch traffic (``tests/test_dma_engine.py``,
    ``tests/test_axi_memory.py``): it returns ``(accept, done)``, the cycle
    the LOAD is taken (offered, or the cycle after the previous LOAD's last
    burst) and the cycle of its ``done`` pulse. :func:`predict` drives the
    same state through ``start``/``run``/``fetch`` to interleave the fetches.
    """

    def __init__(self, config: NPUConfig, lat: int, *, closed_form: bool = True):
        self.cfg, self.lat = config, lat
        self.closed_form = closed_form  # jump over steady-state bursts (False: one by one, for tests)
        self.n_slots = config.dma_max_outstanding
        # Per LOAD burst, the cycle its read slot frees (after n_slots that are free from the start),
        # and the cycle it was decided into the AR register.
        self.free = [-(1 << 40)] * self.n_slots
        self.dec = [-(1 << 40)] * self.n_slots
        self.r_free = 0             # first cycle the R channel has no earlier burst to send
        self.last_fetch = -1        # cycle of the latest fetch AR decision
        self.count = 0              # LOAD bursts decided so far
        self.fetch_count = -1       # LOAD bursts decided before the latest fetch
        self.retry = 0              # burst count from which a closed form is tried again
        self.ready = 0              # first cycle a new LOAD can be taken (burst planner idle)
        self.bursts = ()            # beats of each burst of the LOAD being planned
        self.next = 0               # its next burst
        self.cand = 0               # earliest cycle that burst can be decided

    def start(self, accept: int, bursts, run_end=None) -> None:
        """The LOAD whose bursts have ``bursts`` beats each is taken in cycle ``accept``.

        ``run_end[i]`` (from :func:`equal_runs`, computed if not given) is the end of the run
        of equal bursts that holds burst ``i``.
        """
        self.bursts, self.next, self.cand = bursts, 0, accept + 2
        self.run_end = equal_runs(bursts) if run_end is None else run_end

    def fetch(self, cycle: int, beats: int) -> int:
        """A fetch request decided in ``cycle``; returns the cycle of its first R beat."""
        s = cycle + 2 + self.lat
        if s < self.r_free:
            s = self.r_free
        self.r_free = s + beats
        self.last_fetch = cycle
        self.fetch_count = self.count
        return s

    def run(self, limit: int) -> int | None:
        """Decide the current LOAD's bursts that can go before cycle ``limit``; its ``done`` cycle once all have."""
        bursts, free, dec, n_slots = self.bursts, self.free, self.dec, self.n_slots
        i, a, r_free, lat2 = self.next, self.cand, self.r_free, 2 + self.lat
        n = len(bursts)
        g = len(free) - n_slots               # free[g] is the slot of the burst n_slots back
        placed = i
        while i < n:
            f = free[g] + 1                    # wait for its read slot
            if a < f:
                a = f
            if a == self.last_fetch:          # the fetch request took the AR register in this cycle
                a += 1
            if a >= limit:
                break
            beats = bursts[i]
            left = self.run_end[i] - i         # bursts of ``beats`` from here on
            if left > 2 * n_slots and r_free + 1 == free[-1] and self.closed_form \
                    and self.count + i - placed >= self.retry:
                k = self._jump(i, a, f, beats, left, limit, r_free, lat2, self.count + i - placed)
                if k:
                    free, dec = self.free, self.dec
                    g = len(free) - n_slots
                    r_free = free[-1] - 1
                    a = dec[-1] + 1
                    i += k
                    continue
                self.retry = self.count + i - placed + n_slots    # not yet: look again later
            s = a + lat2
            if s < r_free:
                s = r_free                     # the R channel is still sending earlier bursts
            r_free = s + beats
            free.append(r_free + 1)
            dec.append(a)
            g += 1
            a += 1
            i += 1
        if i > placed:
            self.ready = a                     # the planner is free the cycle after its last burst
            self.count += i - placed
        if len(free) > 4096:
            free = self.free = free[-2 * n_slots:]
            self.dec = dec[-2 * n_slots:]
        self.next, self.cand, self.r_free = i, a, r_free
        if i < n:
            return None
        return r_free + 3                      # done: its last beat is written to SRAM

    def _jump(self, i, a, f, beats, left, limit, r_free, lat2, count) -> int:
        """Place many bursts of ``beats`` at once if the read side is in a periodic state; how many.

        The state after a burst is (its decision cycle, the first R beats of the
        last ``n_slots`` bursts): the next burst depends on nothing else while no
        fetch intervenes. If it equals the state ``n_slots`` bursts earlier plus
        ``P`` cycles, every further burst of the same length repeats the one
        ``n_slots`` back, ``P`` cycles later. Two cases are checked: the slots
        bind and R runs back to back (``P = n_slots * beats``, found after
        ``n_slots`` bursts), and any periodic state (found after ``2 * n_slots``,
        if no fetch came between the last ``n_slots`` bursts: they are the template).
        """
        free, dec, n_slots = self.free, self.dec, self.n_slots
        h = 2 * n_slots
        top = r_free + 1
        if a == f and (n_slots - 1) * beats >= lat2 + 2 and \
                all(free[j - n_slots] == top - (n_slots - 1 - j) * beats for j in range(n_slots)):
            # Slot-bound and back to back on R: burst i + m is decided in a + m*beats and its
            # first beat follows the previous burst's last.
            k = min(left, (limit - a - 1) // beats + 1)
            ms = range(max(0, k - h), k)
            self.free = (free[-h:] + [top + (m + 1) * beats for m in ms])[-h:]
            self.dec = (dec[-h:] + [a + m * beats for m in ms])[-h:]
            return k
        if i < h or self.run_end[i - h] != self.run_end[i] or len(free) < h or top != free[-1] \
                or self.fetch_count > count - n_slots - 1:
            return 0
        period = dec[-1] - dec[-1 - n_slots]
        if a != dec[-n_slots] + period or \
                any(free[-j] - free[-j - n_slots] != period for j in range(1, n_slots + 1)):
            return 0
        # Periodic: burst i + p*n_slots + j is decided in dec0[j] + (p + 1)*period.
        dec0, free0 = dec[-n_slots:], free[-n_slots:]
        k = min(left, sum(max(0, (limit - 1 - d) // period) for d in dec0))
        ms = range(max(0, k - h), k)
        self.dec = (dec[-h:] + [dec0[m % n_slots] + (m // n_slots + 1) * period for m in ms])[-h:]
        self.free = (free[-h:] + [free0[m % n_slots] + (m // n_slots + 1) * period for m in ms])[-h:]
        return k

    def issue(self, offered: int, f: dict) -> tuple[int, int]:
        """(take, done) of a LOAD offered in cycle ``offered``, with no fetch traffic."""
        accept = max(self.ready, offered)
        self.start(accept, burst_beats(self.cfg, f))
        return accept, self.run(1 << 62)


class StoreModel:
    """The DMA engine's STORE side (docs/dma.md, "Cycle model"): exact for the ideal slave.

    The write channels are the STORE's own, so nothing else in the NPU
    delays it; ``issue`` is used as is by :func:`predict`. A STORE is taken
    when the write planner is idle and the FIFO of burst counts (one entry per
    STORE from its last AW to its last B, ``WLEN_DEPTH + 2`` entries) has
    room: STORE *k* no earlier than the ``done`` cycle of STORE *k - 6*.
    """

    WLEN_DEPTH = 4
    NB_DEPTH = WLEN_DEPTH + 2

    def __init__(self, config: NPUConfig, lat: int):
        self.cfg, self.lat = config, lat
        self.pop = []               # per burst: the cycle its last W beat is produced
        self.done = []              # per STORE: its done cycle
        self.p_prev = -(1 << 40)    # last W beat of the latest burst
        self.b_prev = -(1 << 40)    # B of the latest burst
        self.ready = 0              # first cycle a new STORE can be taken (AW planner idle)

    def issue(self, offered: int, f: dict) -> tuple[int, int]:
        """(take, done) of a STORE offered in cycle ``offered``."""
        return self.issue_bursts(offered, burst_beats(self.cfg, f))

    def issue_bursts(self, offered: int, bursts) -> tuple[int, int]:
        """:meth:`issue` for a STORE whose bursts have ``bursts`` beats each."""
        accept = self.ready if self.ready > offered else offered
        k = len(self.done)
        if k >= self.NB_DEPTH and self.done[k - self.NB_DEPTH] > accept:
            accept = self.done[k - self.NB_DEPTH]
        pop, lat4 = self.pop, 4 + self.lat
        g = len(pop)
        a = accept + 1                     # the first AW register load is accept + 2
        p, b = self.p_prev, self.b_prev
        for n in bursts:
            a += 1                                      # one AW per cycle
            if g >= self.WLEN_DEPTH and pop[g - self.WLEN_DEPTH] >= a:
                a = pop[g - self.WLEN_DEPTH] + 1        # room in the burst-length FIFO
            p = (p if p > a else a) + n                 # W beats: after AW and the previous burst
            pop.append(p)
            b = p + lat4 if p + lat4 > b else b + 1     # B: lat after the last W, one per cycle
            g += 1
        self.p_prev, self.b_prev = p, b
        self.ready = a + 1
        self.done.append(b + 3)
        return accept, b + 3


# ------------------------------------------------------------- matrix, vector
class MatrixModel:
    """The matrix unit (docs/matrix_unit.md, "Cycle model"): tiles of ``max(m_rows, dim)`` cycles, pipelined.

    A MATMUL taken in cycle *T* is done in ``T + latency(f)``; the next one
    can be taken in ``T + tile_cycles(f)`` (when this one's last tile is in
    its last issue cycle). :func:`predict` applies these two numbers.
    """

    #: The constant of ``done = take + (tiles - 1)*T + m_rows + 2*dim + 2``.
    FIXED_LATENCY = 2

    def __init__(self, config: NPUConfig, timing: "SequencerTiming" = None):
        self.cfg = config           # (``timing`` is accepted for callers that pass one; unused)

    def tile_cycles(self, f: dict) -> int:
        """Cycles the MATMUL holds the issue stage (the next one is taken after them)."""
        return f["n_blocks"] * f["k_chunks"] * max(f["m_rows"], self.cfg.dim)

    def latency(self, f: dict) -> int:
        """Cycles from take to done."""
        dim = self.cfg.dim
        t = max(f["m_rows"], dim)
        return (f["n_blocks"] * f["k_chunks"] - 1) * t + f["m_rows"] + 2 * dim + self.FIXED_LATENCY


#: Vector unit, cycles from an element's issue to the instruction's last write (docs/vector_unit.md):
#: ROWMAX and EXP write the row state last, SCALE/OUTPUT/REQUANT write their row 4 cycles after issue,
#: EXP its p over the row 8 cycles after issue.
VECTOR_STATE_WRITE = 9
VECTOR_OUT_WRITE = 4
VECTOR_EXP_WRITE = 8
#: RECIP: read L of row 0 and start the divider, then one division per row.
RECIP_START = 2
#: Cycles of one division (48 quotient bits, 2 per cycle).
RECIP_ROW_CYCLES = 24


def vector_cycles(funct, rows: int, blocks: int, *, recip_row_cycles: int = RECIP_ROW_CYCLES) -> int:
    """Cycles from taking a VECTOR instruction to its ``done`` (docs/vector_unit.md, "Cycle model").

    A SCALE (EXP) whose rows overlap within ``VECTOR_OUT_WRITE``
    (``VECTOR_EXP_WRITE``) elements takes :func:`scale_stall_cycles` more.
    """
    funct = VectorFunct(funct)
    if funct == VectorFunct.INIT:
        return rows
    if funct == VectorFunct.RECIP:
        return RECIP_START + rows * recip_row_cycles
    if funct in (VectorFunct.ROWMAX, VectorFunct.EXP):
        return rows * blocks + VECTOR_STATE_WRITE
    return rows * blocks + VECTOR_OUT_WRITE


def scale_stall_cycles(rows: int, blocks: int, acc_addr: int, acc_block_stride: int,
                       funct=VectorFunct.SCALE) -> int:
    """Issue cycles a SCALE (or EXP) loses when an element reads an accumulator row still being written.

    An element waits until the write of the latest earlier element with the
    same row has landed (``VECTOR_OUT_WRITE`` cycles after that element's
    issue for SCALE, ``VECTOR_EXP_WRITE`` for EXP, which writes p over the
    scores). Elements go row outer, block inner. Blocks that cannot overlap
    (``acc_block_stride >= rows``) and the other functs cost nothing.
    """
    write = {VectorFunct.SCALE: VECTOR_OUT_WRITE, VectorFunct.EXP: VECTOR_EXP_WRITE}.get(VectorFunct(funct))
    if write is None or acc_block_stride >= rows:
        return 0
    t, last_issue, lost = 0, {}, 0
    for i in range(rows):
        for b in range(blocks):
            a = acc_addr + b * acc_block_stride + i
            ready = last_issue.get(a, -write - 1) + write + 1
            if ready > t:
                lost += ready - t
                t = ready
            last_issue[a] = t
            t += 1
    return lost


class VectorModel:
    """The vector unit: one instruction at a time. Taken in cycle *T*, it is done in
    ``T + busy_cycles(f)``, and the next one can be taken in that same cycle
    (:func:`predict` applies this)."""

    def __init__(self, config: NPUConfig, timing: "SequencerTiming" = None):
        self.cfg = config           # (``timing`` is accepted for callers that pass one; unused)

    def busy_cycles(self, f: dict) -> int:
        """Cycles from take to done (:func:`vector_cycles`, SCALE and EXP stalls included)."""
        return vector_cycles(f["funct"], f["rows"], f["blocks"]) + scale_stall_cycles(
            f["rows"], f["blocks"], f["acc_addr"], f["acc_block_stride"], funct=f["funct"])


# ------------------------------------------------------------------ sequencer
@dataclass(frozen=True)
class SequencerTiming:
    """Fixed latencies of the control path (docs/sequencer.md, "Cycle model"; docs/performance.md).

    Cycle 0 is the cycle START takes effect. ``tests/test_perfmodel.py``
    checks the whole model, and so these numbers, against the RTL.
    """
    #: cycle of the first fetch request.
    start_to_fetch: int = 1
    #: fetch requests in flight (sequencer ``max_fetch`` = the DMA engine's ``fetch_depth``).
    max_fetch: int = 8
    #: a word's last R beat -> the word offered to the sequencer (R register, response FIFO).
    beat_to_word: int = 2
    #: word taken into the check stage (F) -> written into its queue, at the earliest.
    check_to_dispatch: int = 1
    #: written into the queue -> at the queue's head (FIFO latency).
    dispatch_to_head: int = 1
    #: queue head with its tokens -> offered to the unit.
    head_to_offer: int = 0
    #: unit ``done`` -> its token is seen by a waiting queue head.
    done_to_token: int = 1
    #: instructions a unit may have taken and not completed (sequencer in-flight FIFO).
    inflight_depth: int = 8


DEFAULT_TIMING = SequencerTiming()


@dataclass
class PerfResult:
    """What the model predicts for one program.

    ``busy`` and ``stall`` are defined as the RTL's counters (``sw/regmap.COUNTERS``):
    ``busy[unit]`` counts the cycles the unit reports ``busy`` (LOAD/STORE:
    from the cycle after take to the cycle before ``done``; matrix, vector:
    to the ``done`` cycle), ``stall[queue]`` the cycles the queue's head waits
    for a token. ``counters`` holds every counter under its register name.
    """
    cycles: int
    instructions: int
    busy: dict            # unit -> cycles ("load", "store", "matrix", "vector")
    stall: dict           # queue -> cycles its head waited for a token
    array_active: int     # cycles an A row entered the array
    bytes_read: int
    bytes_written: int
    timeline: list        # (queue, pc, accept, done) per instruction, for traces
    counters: dict = field(default_factory=dict)   # the same numbers under sw/regmap.COUNTERS names
    dispatch_stall: int = 0
    # The sequencer per pc, HALT included (sw/trace.py draws them; docs/performance.md):
    fetched: list = field(default_factory=list)     # cycle the fetched word is offered to the check stage
    checked: list = field(default_factory=list)     # cycle it enters the check stage
    dispatched: list = field(default_factory=list)  # cycle it is written into its queue (HALT: leaves the stage)
    head: list = field(default_factory=list)        # cycle it is at its queue's head (HALT: None)
    tokens: list = field(default_factory=list)      # cycle its last token is visible, >= head (HALT: None)
    producers: list = field(default_factory=list)   # the pcs whose tokens its ``wait`` pops
    timing: "SequencerTiming" = None                # the control-path latencies the model used


#: The queues named by each 4-bit wait/signal mask.
_MASK_QUEUES = tuple(tuple(q for q in range(4) if mask >> q & 1) for mask in range(16))


class _Instr:
    """What the model needs of one instruction word, computed once per distinct word."""
    __slots__ = ("queue", "waits", "signals", "bursts", "runs", "tiles", "latency", "active", "cycles",
                 "nbytes", "f")

    def __init__(self, cfg: NPUConfig, word: int, plans: dict, units):
        f = decode_word(word)
        code, reason = check_fields(f, cfg)
        if code != ErrorCode.NONE:
            # The NPU would stop with this error; the model times legal programs only.
            raise ValueError(f"illegal instruction {word:#x}: {code.name}: {reason}")
        op = f["opcode"]
        self.f = f
        self.queue = OPCODE_QUEUE[op] if op != Opcode.HALT else -1
        self.waits = _MASK_QUEUES[f["wait"]]
        self.signals = _MASK_QUEUES[f["signal"]]
        self.bursts = self.runs = self.tiles = self.latency = self.active = self.cycles = None
        self.nbytes = 0
        if op in (Opcode.LOAD, Opcode.STORE):
            # The bursts depend on the address only through its offset in the 4 KiB page.
            key = (f["mem"], f["dram_addr"] % 4096, f["dram_stride"], f["rows"], f["chunks"])
            plan = plans.get(key)
            if plan is None:
                bursts = burst_beats(cfg, f)
                plan = plans[key] = (bursts, equal_runs(bursts))
            self.bursts, self.runs = plan
            rb = cfg.spad_row_bytes if f["mem"] == Mem.SPAD else cfg.acc_row_bytes
            self.nbytes = f["rows"] * f["chunks"] * rb
        elif op == Opcode.MATMUL:
            mm = units[0]
            self.tiles = mm.tile_cycles(f)
            self.latency = mm.latency(f)
            self.active = f["n_blocks"] * f["k_chunks"] * f["m_rows"]
        elif op == Opcode.VECTOR:
            self.cycles = units[1].busy_cycles(f)


def _producers(info) -> list[tuple[int, ...]]:
    """For each instruction, the instructions whose tokens its ``wait`` pops (the k-th pop takes the k-th push)."""
    pushes = [[[] for _ in range(4)] for _ in range(4)]      # [src][dst] -> pushing pcs, in order
    pops = [[0] * 4 for _ in range(4)]
    out = []
    for pc, ins in enumerate(info):
        q = ins.queue
        if q == -1:
            out.append(())
            break
        prod = ()
        for src in ins.waits:
            k = pops[src][q]
            lst = pushes[src][q]
            if k >= len(lst):
                raise ValueError(f"pc {pc}: waits on a {Queue(src).name} token that no earlier "
                                 "instruction signals (TOKEN_UNDERFLOW)")
            pops[src][q] = k + 1
            prod += (lst[k],)
        for dst in ins.signals:
            pushes[q][dst].append(pc)
        out.append(prod)
    return out


def _busy_union(spans) -> int:
    """Cycles covered by inclusive spans (first, last) given in order of first cycle."""
    total, end = 0, -1
    for a, b in spans:
        if b < a:
            continue
        if a > end:
            total += b - a + 1
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


_INFO_CACHE: dict = {}


def _program_info(cfg: NPUConfig, words):
    """The :class:`_Instr` of each word up to the first HALT (cached per config and word)."""
    entry = _INFO_CACHE.get(cfg)
    if entry is None:
        entry = _INFO_CACHE[cfg] = ({}, {}, (MatrixModel(cfg), VectorModel(cfg)))
    cache, plans, units = entry
    if len(cache) > 100_000:
        cache.clear()
        plans.clear()
    info = []
    for w in words:
        w = int(w)
        ins = cache.get(w)
        if ins is None:
            ins = cache[w] = _Instr(cfg, w, plans, units)
        info.append(ins)
        if ins.queue == -1:
            return info
    raise ValueError("the program has no HALT")


def predict(config, words, *, lat: int = 1, timing: SequencerTiming | None = None) -> PerfResult:
    """Predict the cycles and counters of ``words`` (a legal program ending in HALT) on ``config``.

    Cycle 0 is the cycle START takes effect; ``cycles`` is the CYCLES counter
    at done. ``lat`` is the latency of the ideal AXI slave (``>= 1``).
    """
    cfg = load_config(config)
    t = timing or DEFAULT_TIMING
    if lat < 1:
        raise ValueError(f"lat = {lat}: the ideal slave's latency must be at least 1")
    info = _program_info(cfg, words)
    n = len(info)                      # instructions up to and including HALT
    halt = n - 1
    producers = _producers(info)
    depth = cfg.queue_depth
    fb = fetch_beats(cfg)
    max_fetch = t.max_fetch
    word_delay = fb + t.beat_to_word - 1      # first R beat -> word offered
    chk = t.check_to_dispatch
    to_head = t.dispatch_to_head + t.head_to_offer
    tok_delay = t.done_to_token
    infl_depth = t.inflight_depth

    # Per queue, its instructions in order: (pc, producers, queues waiting on it, what its unit needs).
    LOAD, STORE, MATRIX, VECTOR = Queue.LOAD, Queue.STORE, Queue.MATRIX, Queue.VECTOR
    waiters = [set() for _ in range(n)]
    for pc in range(halt):
        for p in producers[pc]:
            waiters[p].add(info[pc].queue)
    qlist = [[], [], [], []]
    queue_of = [ins.queue for ins in info]
    room_pc = [None] * n    # the instruction whose take frees this one's queue slot
    for pc in range(halt):
        ins = info[pc]
        q = ins.queue
        lst = qlist[q]
        if len(lst) >= depth:
            room_pc[pc] = lst[len(lst) - depth][0]
        work = (ins.bursts, ins.runs) if q == LOAD else ins.bursts if q == STORE else \
            (ins.tiles, ins.latency) if q == MATRIX else ins.cycles
        lst.append((pc, producers[pc], tuple(waiters[pc]), work))
    qlen = [len(lst) for lst in qlist]

    loads = LoadModel(cfg, lat)
    stores = StoreModel(cfg, lat)
    D = [None] * n          # cycle each word is written into its queue (HALT: leaves the check stage)
    H = [0] * n             # cycle each word enters the check stage
    take = [None] * n
    done = [None] * n
    at_head = [None] * n    # cycle each instruction is at its queue's head
    at_tokens = [None] * n  # cycle its last token is visible (>= its head cycle)
    R = [t.start_to_fetch + k for k in range(max_fetch)]   # fetch request cycles, known so far
    V = []                  # cycle each fetched word is offered to the sequencer
    fe = 0                  # next word to be written into its queue
    hc = 0                  # next word to enter the check stage (fe or fe + 1)
    qc = [0, 0, 0, 0]       # next instruction of each queue to be taken
    prev_take = [-1 << 40] * 4
    unit_ready = [0, 0, 0, 0]    # MATRIX, VECTOR: first cycle the unit can take the next instruction
    stall = [0, 0, 0, 0]
    dispatch_stall = 0
    load_pc = None          # the LOAD whose bursts are being placed
    halt_d = None
    kp = 0                  # next fetch request to place on the read channel
    far = 1 << 62
    fe_moves = True         # the dispatcher may move on
    mark = [False] * 4      # queues whose head may be taken now

    while True:
        # ---- every time whose inputs are known (dataflow), until nothing moves.
        while fe_moves:
            # Fetched words through the check stage into their queues, in program order.
            while fe < kp and fe < n:
                if hc == fe:
                    # The word enters the check stage when the previous one leaves it;
                    # its fetch slot is free again: the next request.
                    h = V[fe]
                    if fe and D[fe - 1] > h:
                        h = D[fe - 1]
                    H[fe] = h
                    hc += 1
                    r = R[-1] + 1
                    R.append(h + 1 if h + 1 > r else r)
                d = H[fe] + chk
                m = room_pc[fe]
                if m is not None:
                    tk = take[m]
                    if tk is None:
                        break                       # its queue is full
                    if tk + 1 > d:
                        dispatch_stall += tk + 1 - d
                        d = tk + 1
                D[fe] = d
                if fe == halt:
                    halt_d = d
                else:
                    mark[queue_of[fe]] = True
                fe += 1
            fe_moves = False
            # Queue heads to their units; a take or a done can release other heads.
            while True:
                if mark[0]:
                    q = 0
                elif mark[1]:
                    q = 1
                elif mark[2]:
                    q = 2
                elif mark[3]:
                    q = 3
                else:
                    break
                mark[q] = False
                lst = qlist[q]
                while qc[q] < qlen[q]:
                    i = qc[q]
                    pc, prods, released, work = lst[i]
                    d = D[pc]
                    if d is None:
                        break
                    head = d + to_head
                    if prev_take[q] >= head:
                        head = prev_take[q] + 1
                    tok = head
                    for p in prods:
                        dn = done[p]
                        if dn is None:
                            tok = None
                            break
                        if dn + tok_delay > tok:
                            tok = dn + tok_delay
                    if tok is None:
                        break
                    offer = tok
                    if i >= infl_depth:
                        dn = done[lst[i - infl_depth][0]]
                        if dn is None:
                            break
                        if dn >= offer:
                            offer = dn + 1
                    if q == LOAD:
                        if load_pc is not None:
                            break                   # the planner still cuts the previous LOAD
                        a = loads.ready if loads.ready > offer else offer
                        loads.start(a, *work)
                        load_pc = pc
                    else:
                        if q == STORE:
                            a, done[pc] = stores.issue_bursts(offer, work)
                        elif q == MATRIX:
                            a = unit_ready[q] if unit_ready[q] > offer else offer
                            unit_ready[q] = a + work[0]
                            done[pc] = a + work[1]
                        else:
                            a = unit_ready[q] if unit_ready[q] > offer else offer
                            unit_ready[q] = done[pc] = a + work
                        for w in released:
                            mark[w] = True
                    take[pc] = a
                    prev_take[q] = a
                    at_head[pc] = head
                    at_tokens[pc] = tok
                    stall[q] += tok - head
                    qc[q] = i + 1
                    if fe < kp and fe < n and room_pc[fe] == pc:
                        fe_moves = True             # the slot the dispatcher waits for is free

        # ---- the next AR decision: a fetch request (first in its cycle) or a LOAD burst.
        tf = R[kp] if kp < len(R) and (halt_d is None or R[kp] <= halt_d) else None
        if load_pc is not None and (tf is None or loads.cand < tf):
            dn = loads.run(far if tf is None else tf)
            if dn is not None:
                done[load_pc] = dn
                mark[LOAD] = True
                for w in qlist[LOAD][qc[LOAD] - 1][2]:
                    mark[w] = True
                load_pc = None
                fe_moves = True
            continue
        if tf is None:
            break
        V.append(loads.fetch(tf, fb) + word_delay)
        fe_moves = fe == kp         # the word the dispatcher waits for
        kp += 1

    if any(d is None for d in done[:halt]):
        pc = done.index(None)
        raise ValueError(f"pc {pc}: never completes (its tokens are never pushed: the program deadlocks)")

    last_done = max(done[:halt], default=0)
    cycles = max(last_done, halt_d) + 1

    names = [q.name.lower() for q in Queue]
    spans = [[], [], [], []]
    timeline = []
    array_active = bytes_read = bytes_written = 0
    for pc in range(halt):
        ins = info[pc]
        q = queue_of[pc]
        a, d = take[pc], done[pc]
        # LOAD/STORE busy ends the cycle before done; the matrix and vector units include it.
        spans[q].append((a + 1, d - 1 if q == LOAD or q == STORE else d))
        timeline.append((names[q], pc, a, d))
        if q == MATRIX:
            array_active += ins.active
        elif q == LOAD:
            bytes_read += ins.nbytes
        elif q == STORE:
            bytes_written += ins.nbytes
    timeline.append(("sequencer", halt, halt_d, cycles))
    busy = {names[q]: _busy_union(spans[q]) for q in range(4)}
    stalls = {names[q]: stall[q] for q in range(4)}
    res = PerfResult(cycles=cycles, instructions=n, busy=busy, stall=stalls,
                     array_active=array_active, bytes_read=bytes_read,
                     bytes_written=bytes_written, timeline=timeline, dispatch_stall=dispatch_stall,
                     fetched=V[:n], checked=H, dispatched=D, head=at_head, tokens=at_tokens,
                     producers=producers, timing=t)
    values = {
        "CYCLES": cycles, "MATRIX_BUSY": busy["matrix"], "ARRAY_ACTIVE": array_active,
        "VECTOR_BUSY": busy["vector"], "LOAD_BUSY": busy["load"], "STORE_BUSY": busy["store"],
        "LOAD_STALL": stalls["load"], "STORE_STALL": stalls["store"],
        "MATRIX_STALL": stalls["matrix"], "VECTOR_STALL": stalls["vector"],
        "DISPATCH_STALL": dispatch_stall,
        "BYTES_READ": bytes_read, "BYTES_WRITTEN": bytes_written, "INSTRUCTIONS": n,
    }
    res.counters = {name: values[name] for name, _ in COUNTERS}
    return res
