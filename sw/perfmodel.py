"""The performance model: the cycles of a program on the NPU, without the RTL.

It models the microarchitecture of ``hw/`` event by event (the rules, with the
measurements behind them, are in ``docs/performance.md``): the sequencer's
instruction fetch through the DMA engine (``fetch_depth`` words in flight, one
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
from itertools import accumulate

from flashnpu.sw.asm import decode_word
from flashnpu.spec.config import NPUConfig, load_config
from flashnpu.sw.golden import check_fields, check_window
from flashnpu.spec.isa import INSTR_BYTES, ErrorCode, Mem, Opcode, Queue, VectorFunct
from flashnpu.spec.memory_timing import MemoryTiming, memory_timing_for
from flashnpu.spec.regmap import COUNTERS
from flashnpu.spec.timing import Timing, timing

__all__ = ["clear_cache", "plan_bursts", "burst_beats", "fetch_beats", "LoadModel", "StoreModel", "MatrixModel",
           "VectorModel", "vector_cycles", "scale_stall_cycles", "PerfResult", "predict"]


# ----------------------------------------------------------------------- DMA
def _segments(config: NPUConfig, f: dict) -> tuple[int, int, int, int]:
    """The DRAM segments of a LOAD/STORE: ``(addr, stride, count, beats)``, ``count`` segments of
    ``beats`` beats, the first at byte ``addr``, each ``stride`` bytes after the previous.

    Contiguous rows (``dram_stride == chunks * row_bytes``) form one segment,
    otherwise each DRAM row is one.
    """
    row_bytes = f["chunks"] * (config.spad_row_bytes if f["mem"] == _SPAD else config.acc_row_bytes)
    beat = config.dma_beat_bytes
    if f["dram_stride"] == row_bytes:
        return f["dram_addr"], 0, 1, f["rows"] * row_bytes // beat
    return f["dram_addr"], f["dram_stride"], f["rows"], row_bytes // beat


def _pages(config: NPUConfig, addr: int, left: int):
    """How the DMA cuts one segment of ``left`` beats from byte ``addr`` into bursts, page by page:
    ``(addr, full, rest)`` per 4 KiB page it touches, ``full`` bursts of ``dma_burst_len`` beats
    and then a burst of ``rest`` beats if ``rest`` (a burst never exceeds ``dma_burst_len`` beats nor
    crosses 4 KiB)."""
    beat, blen = config.dma_beat_bytes, config.dma_burst_len
    while left:
        n = (4096 - addr % 4096) // beat
        if n > left:
            n = left
        yield addr, n // blen, n % blen
        addr += n * beat
        left -= n


def _cut(config: NPUConfig, addr: int, left: int) -> list[tuple[int, int]]:
    """(addr, beats) of the bursts of one segment (:func:`_pages`)."""
    step = config.dma_burst_len * config.dma_beat_bytes
    out = []
    for a, full, rest in _pages(config, addr, left):
        out += [((a + i * step) % (1 << 32), config.dma_burst_len) for i in range(full)]
        if rest:
            out.append(((a + full * step) % (1 << 32), rest))
    return out


def _cut_beats(config: NPUConfig, addr: int, left: int) -> list[int]:
    """The beats of each burst of :func:`_cut`, without the addresses (faster)."""
    out = []
    for _, full, rest in _pages(config, addr, left):
        out += [config.dma_burst_len] * full
        if rest:
            out.append(rest)
    return out


def plan_bursts(config: NPUConfig, f: dict) -> list[tuple[int, int]]:
    """(addr, beats) of every AXI burst of a LOAD/STORE, as the DMA engine cuts them.

    Contiguous rows (``dram_stride == chunks * row_bytes``) form one segment,
    otherwise each DRAM row is one; a burst never exceeds ``dma_burst_len``
    beats nor crosses 4 KiB.
    """
    addr, stride, count, beats = _segments(config, f)
    return [b for r in range(count) for b in _cut(config, addr + r * stride, beats)]


def burst_beats(config: NPUConfig, f: dict) -> tuple[int, ...]:
    """The beats of each burst of :func:`plan_bursts`, without the addresses (faster: rows that
    start at the same offset in their 4 KiB page are cut alike)."""
    addr, stride, count, beats = _segments(config, f)
    row_bytes = beats * config.dma_beat_bytes
    if count > 1 and 4096 % row_bytes == 0 and addr % row_bytes == 0 and stride % row_bytes == 0:
        # Every row starts on a multiple of its size, which divides the page: all are cut alike.
        return tuple(_cut_beats(config, addr, beats)) * count
    memo = {}
    out = []
    for r in range(count):
        a = addr + r * stride
        lens = memo.get(a % 4096)
        if lens is None:
            lens = memo[a % 4096] = _cut_beats(config, a, beats)
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
    """R beats of one instruction fetch (``spec.timing``: one beat if a beat holds a whole 32-byte word)."""
    return timing(config).fetch_beats


class LoadModel:
    """The DMA engine's read side (docs/dma.md, "Cycle model"): LOAD bursts and the shared AXI read channel.

    Every read burst, LOAD or instruction fetch, is decided into the AR
    register in some cycle *a* (at most one per cycle, a fetch first); its
    first R beat comes in ``a + ar_to_first_beat + lat`` (``spec.timing``) or when the R
    channel has sent every earlier burst, then one beat per cycle. LOAD bursts use
    ``read_slots`` read slots round robin; a slot frees the cycle after its last beat is retired.

    ``issue(offered, f)`` is the model without fetch traffic (``tests/test_dma_engine.py``,
    ``tests/test_axi_memory.py``): it returns ``(accept, done)``, the cycle
    the LOAD is taken (offered, or the cycle after the previous LOAD's last
    burst) and the cycle of its ``done`` pulse. :func:`predict` drives the
    same state through ``start``/``run``/``fetch`` to interleave the fetches.
    """

    def __init__(self, config: NPUConfig, lat: int, *, closed_form: bool = True, r_gap_every: int = 0):
        self.cfg, self.lat = config, lat
        self.closed_form = closed_form  # jump over steady-state bursts (False: one by one, for tests)
        # With R gaps (spec/memory_timing.py) a burst holds R for r_cycles(beats) cycles; everything
        # below counts a burst's R cycles, which are its beats without gaps.
        self.r_cycles = MemoryTiming(lat=lat, r_gap_every=r_gap_every).r_cycles if r_gap_every else None
        t = timing(config)
        self.n_slots = t.read_slots
        self.ar_lat = t.ar_to_first_beat + lat         # AR decision -> first R beat, at the earliest
        self.take_to_ar = t.load_take_to_first_ar
        self.last_to_done = t.load_last_beat_to_done
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
        # Its first burst can be decided take_to_ar after accept, once a read slot is free (knowing
        # the slot here spares :func:`predict` a call to ``run`` that could place nothing before a fetch).
        slot = self.free[len(self.free) - self.n_slots] + 1
        first = accept + self.take_to_ar
        if self.r_cycles is not None:
            if run_end is None:
                run_end = equal_runs(bursts)       # (equal beats, equal R cycles)
            bursts = tuple(map(self.r_cycles, bursts))
        self.bursts, self.next, self.cand = bursts, 0, first if first > slot else slot
        self.run_end = equal_runs(bursts) if run_end is None else run_end

    def fetch(self, cycle: int, beats: int) -> int:
        """A fetch request decided in ``cycle``; returns the cycle of its first R beat."""
        s = cycle + self.ar_lat
        if s < self.r_free:
            s = self.r_free
        self.r_free = s + (beats if self.r_cycles is None else self.r_cycles(beats))
        self.last_fetch = cycle
        self.fetch_count = self.count
        if self.cand == cycle:
            self.cand = cycle + 1               # the next burst cannot be decided in this cycle
        return s

    def run(self, limit: int) -> int | None:
        """Decide the current LOAD's bursts that can go before cycle ``limit``; its ``done`` cycle once all have."""
        bursts, free, dec, n_slots = self.bursts, self.free, self.dec, self.n_slots
        i, a, r_free, lat2 = self.next, self.cand, self.r_free, self.ar_lat
        n = len(bursts)
        placed = i
        last_fetch, run_end, back, h = self.last_fetch, self.run_end, -n_slots, 2 * n_slots
        # The burst index from which a closed form is tried (``retry`` counts the bursts of all LOADs).
        try_at = self.retry - self.count + placed if self.closed_form else n
        while i < n:
            f = free[back] + 1                 # wait for the read slot of the burst n_slots back
            if a < f:
                a = f
            if a == last_fetch:                # the fetch request took the AR register in this cycle
                a += 1
            if a >= limit:
                break
            # A closed form pays off with more than n_slots equal bursts left; it needs R busy up to the
            # last burst and the last n_slots bursts back to back (slot-bound) or 2*n_slots bursts of
            # this run placed (periodic). (These tests only spare calls that would find nothing.)
            if i >= try_at and run_end[i] - i > n_slots and r_free + 1 == free[-1] and (
                    free[-1] - free[back] == (n_slots - 1) * bursts[i]
                    or i >= h and run_end[i - h] == run_end[i]):
                k = self._jump(i, a, f, bursts[i], run_end[i] - i, limit, r_free, lat2, self.count + i - placed)
                if k:
                    free, dec = self.free, self.dec
                    r_free = free[-1] - 1
                    a = dec[-1] + 1
                    i += k
                    continue
                try_at = i + n_slots           # not yet: look again later
            s = a + lat2
            if s < r_free:
                s = r_free                     # the R channel is still sending earlier bursts
            r_free = s + bursts[i]
            free.append(r_free + 1)
            dec.append(a)
            a += 1
            i += 1
        if self.closed_form:
            self.retry = try_at + self.count - placed
        if i > placed:
            self.ready = a                     # the planner is free the cycle after its last burst
            self.count += i - placed
        if len(free) > 4096:
            free = self.free = free[-2 * n_slots:]
            self.dec = dec[-2 * n_slots:]
        self.next, self.cand, self.r_free = i, a, r_free
        if i < n:
            return None
        return r_free + self.last_to_done      # done: its last beat is written to SRAM

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
        Of the bursts jumped over, only the last ``2 * n_slots`` are appended to ``free`` and ``dec``
        (nothing reads further back).
        """
        free, dec, n_slots = self.free, self.dec, self.n_slots
        h = 2 * n_slots
        top = r_free + 1
        if a == f and (n_slots - 1) * beats >= lat2 + 2 and \
                free[-n_slots:] == list(range(top - (n_slots - 1) * beats, top + 1, beats)):
            # Slot-bound and back to back on R: burst i + m is decided in a + m*beats and its
            # first beat follows the previous burst's last.
            k = (limit - a - 1) // beats + 1
            if k > left:
                k = left
            m0 = k - h if k > h else 0         # (only the last h bursts are kept)
            free.extend(range(top + (m0 + 1) * beats, top + (k + 1) * beats, beats))
            dec.extend(range(a + m0 * beats, a + k * beats, beats))
            return k
        if i < h or self.run_end[i - h] != self.run_end[i] or len(free) < h or top != free[-1] \
                or self.fetch_count > count - n_slots - 1:
            return 0
        period = dec[-1] - dec[-1 - n_slots]
        if a != dec[-n_slots] + period:
            return 0
        for j in range(-n_slots, 0):
            if free[j] - free[j - n_slots] != period:
                return 0
        # Periodic: burst i + p*n_slots + j is decided in dec0[j] + (p + 1)*period.
        dec0, free0 = dec[-n_slots:], free[-n_slots:]
        k = 0
        for d in dec0:
            if limit - 1 - d >= period:
                k += (limit - 1 - d) // period
        if k > left:
            k = left
        for m in range(k - h if k > h else 0, k):
            p, j = divmod(m, n_slots)
            dec.append(dec0[j] + (p + 1) * period)
            free.append(free0[j] + (p + 1) * period)
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
    STORE from its first AW to its last B, ``store_count_depth`` entries) has
    room: STORE *k* no earlier than the ``done`` cycle of STORE *k - store_count_depth*
    (``spec.timing``; 6 by default).
    """

    def __init__(self, config: NPUConfig, lat: int, *, closed_form: bool = True):
        self.cfg, self.lat = config, lat
        t = timing(config)
        self.wlen_depth = t.store_burst_fifo_depth       # burst-length FIFO
        self.nb_depth = t.store_count_depth              # STOREs between first AW and last B
        self.w_to_b = t.store_w_to_b + lat               # last W beat -> B
        self.b_to_done = t.store_b_to_done
        self.take_to_aw = t.store_take_to_first_aw
        self.closed_form = closed_form  # the bursts after a STORE's first in closed form (False: one by one, for tests)
        self.pop = []               # per burst: the cycle its last W beat is produced
        self.done = []              # per STORE: its done cycle
        self.p_prev = -(1 << 40)    # last W beat of the latest burst
        self.b_prev = -(1 << 40)    # B of the latest burst
        self.ready = 0              # first cycle a new STORE can be taken (AW planner idle)

    def issue(self, offered: int, f: dict) -> tuple[int, int]:
        """(take, done) of a STORE offered in cycle ``offered``."""
        return self.issue_bursts(offered, burst_beats(self.cfg, f))

    def issue_bursts(self, offered: int, bursts) -> tuple[int, int]:
        """:meth:`issue` for a STORE whose bursts have ``bursts`` beats each.

        Burst by burst: its AW goes a cycle after the previous one, once the
        burst-length FIFO has room (the burst ``store_burst_fifo_depth`` back has produced
        its last W beat); the W producer starts it after its AW and after the
        previous burst's beats; its B comes ``lat + store_w_to_b`` cycles after its last
        W beat, one B per cycle. After the first burst of a STORE the producer
        never waits for an AW again: the next AW is the cycle after this AW or
        after an earlier burst's last beat, both before this burst's last beat.
        So the rest follow in closed form: their last beats are running sums,
        and as the last beats rise by at least 1 per burst, after ``m`` more
        bursts the AW is ``max(a + m, pop[last - store_burst_fifo_depth] + 1)`` and the B
        ``max(p + lat + store_w_to_b, b + m)``.
        """
        accept = self.ready if self.ready > offered else offered
        k = len(self.done)
        if k >= self.nb_depth and self.done[k - self.nb_depth] > accept:
            accept = self.done[k - self.nb_depth]
        pop, lat4, depth = self.pop, self.w_to_b, self.wlen_depth
        g = len(pop)
        a = accept + self.take_to_aw - 1   # (each burst adds 1: the first AW is take_to_aw after accept)
        p, b = self.p_prev, self.b_prev
        for j, n in enumerate(bursts):
            if j == 1 and self.closed_form:
                m = len(bursts) - 1
                sums = accumulate(bursts[1:], initial=p)
                next(sums)
                pop.extend(sums)
                g = len(pop) - 1
                p = pop[g]
                a = a + m if g < depth or pop[g - depth] < a + m else pop[g - depth] + 1
                b = p + lat4 if p + lat4 > b + m else b + m
                break
            a += 1                                      # one AW per cycle
            if g >= depth and pop[g - depth] >= a:
                a = pop[g - depth] + 1                  # room in the burst-length FIFO
            p = (p if p > a else a) + n                 # W beats: after AW and the previous burst
            pop.append(p)
            b = p + lat4 if p + lat4 > b else b + 1     # B: lat after the last W, one per cycle
            g += 1
        self.p_prev, self.b_prev = p, b
        self.ready = a + 1
        self.done.append(b + self.b_to_done)
        return accept, b + self.b_to_done


# ------------------------------------------------------------- matrix, vector
class MatrixModel:
    """The matrix unit (docs/matrix_unit.md, "Cycle model"): tiles of ``max(m_rows, dim)`` cycles, pipelined.

    A MATMUL taken in cycle *T* is done in ``T + latency(f)``; the next one
    can be taken in ``T + tile_cycles(f)`` (when this one's last tile is in
    its last issue cycle). :func:`predict` applies these two numbers.
    """

    def __init__(self, config: NPUConfig):
        self.cfg = config
        # done = take + (tiles - 1)*T + m_rows + array_latency + matmul_fixed_latency (spec.timing)
        t = timing(config)
        self.fixed_latency = t.array_latency + t.matmul_fixed_latency

    def tile_cycles(self, f: dict) -> int:
        """Cycles the MATMUL holds the issue stage (the next one is taken after them)."""
        return f["n_blocks"] * f["k_chunks"] * max(f["m_rows"], self.cfg.dim)

    def latency(self, f: dict) -> int:
        """Cycles from take to done."""
        t = max(f["m_rows"], self.cfg.dim)
        return (f["n_blocks"] * f["k_chunks"] - 1) * t + f["m_rows"] + self.fixed_latency


_VECTOR_FUNCTS = {int(f): f for f in VectorFunct}
# Enum members as module constants where they are compared per word: reading an attribute of an
# Enum class costs about 50 ns, and the model handles every distinct word of a program.
_INIT, _RECIP, _STATE_WRITERS = VectorFunct.INIT, VectorFunct.RECIP, (VectorFunct.ROWMAX, VectorFunct.EXP)


def _vector_funct(funct) -> VectorFunct:
    """``VectorFunct(funct)`` (and its error), without the enum call for plain values (faster)."""
    try:
        return _VECTOR_FUNCTS[funct]
    except (KeyError, TypeError):
        return VectorFunct(funct)


def vector_cycles(t: Timing, funct, rows: int, blocks: int) -> int:
    """Cycles from taking a VECTOR instruction to its ``done`` (docs/vector_unit.md, "Cycle model"),
    with the stage counts of ``t`` (``spec.timing``).

    A SCALE (EXP) whose rows overlap within ``vector_out_write``
    (``vector_exp_write``) elements takes :func:`scale_stall_cycles` more.
    """
    funct = _vector_funct(funct)
    if funct == _INIT:
        return rows
    if funct == _RECIP:
        return t.recip_start + (rows - 1) * t.recip_row_interval + t.recip_row_cycles
    if funct in _STATE_WRITERS:
        return rows * blocks + t.vector_state_write
    return rows * blocks + t.vector_out_write


#: The functs that read accumulator rows they write: the Timing field of the cycles from issue to that write.
_OVERLAP_WRITE = {VectorFunct.SCALE: "vector_out_write", VectorFunct.EXP: "vector_exp_write"}


def scale_stall_cycles(t: Timing, rows: int, blocks: int, acc_addr: int, acc_block_stride: int,
                       funct=VectorFunct.SCALE) -> int:
    """Issue cycles a SCALE (or EXP) loses when an element reads an accumulator row still being written.

    An element waits until the write of the latest earlier element with the
    same row has landed (``vector_out_write`` cycles after that element's
    issue for SCALE, ``vector_exp_write`` for EXP, which writes p over the
    scores). Elements go row outer, block inner. Blocks that cannot overlap
    (``acc_block_stride >= rows``) and the other functs cost nothing.
    """
    stage = _OVERLAP_WRITE.get(_vector_funct(funct))
    if stage is None or acc_block_stride >= rows:
        return 0
    write = getattr(t, stage)
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

    def __init__(self, config: NPUConfig):
        self.cfg = config
        self.timing = timing(config)

    def busy_cycles(self, f: dict) -> int:
        """Cycles from take to done (:func:`vector_cycles`, SCALE and EXP stalls included)."""
        funct, rows, t = f["funct"], f["rows"], self.timing
        cycles = vector_cycles(t, funct, rows, f["blocks"])
        if funct in _OVERLAP_WRITE and f["acc_block_stride"] < rows:      # (else no stall: skip the call)
            cycles += scale_stall_cycles(t, rows, f["blocks"], f["acc_addr"], f["acc_block_stride"], funct=funct)
        return cycles




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
    timing: Timing = None                           # the microarchitecture the model used (spec.timing)


#: The queues named by each 4-bit wait/signal mask.
_MASK_QUEUES = tuple(tuple(q for q in range(4) if mask >> q & 1) for mask in range(16))

#: ``_word_info`` of HALT.
_HALT_INFO = (-1, (), (), None, 0)
# (Enum members as module constants: see _INIT.)
_HALT, _LOAD_OP, _MATMUL_OP, _VECTOR_OP = Opcode.HALT, Opcode.LOAD, Opcode.MATMUL, Opcode.VECTOR
_LOAD_Q, _STORE_Q, _MATRIX_Q, _VECTOR_Q = Queue.LOAD, Queue.STORE, Queue.MATRIX, Queue.VECTOR
_SPAD, _NONE = Mem.SPAD, ErrorCode.NONE
#: The units' names in ``PerfResult``, by queue.
_UNIT_NAMES = tuple(q.name.lower() for q in Queue)


def _word_info(cfg: NPUConfig, word: int, plans: dict, units) -> tuple:
    """What the model needs of one instruction word: ``(queue, waits, signals, work, amount)``.

    ``queue`` is -1 for HALT; ``waits``/``signals`` the queues of its masks; ``work`` what its unit's
    timing needs (LOAD: the beats of its bursts and their runs, STORE: the beats, MATMUL: (tile
    cycles, latency), VECTOR: its cycles); ``amount`` the bytes of a LOAD/STORE, the A rows of a MATMUL.
    """
    f = decode_word(word)
    code, reason = check_fields(f, cfg)
    if code != _NONE:
        # The NPU would stop with this error; the model times legal programs only.
        raise ValueError(f"illegal instruction {word:#x}: {code.name}: {reason}")
    op = f["opcode"]
    if op == _HALT:
        return _HALT_INFO
    waits, signals = _MASK_QUEUES[f["wait"]], _MASK_QUEUES[f["signal"]]
    if op == _VECTOR_OP:
        return _VECTOR_Q, waits, signals, units[1].busy_cycles(f), 0
    if op == _MATMUL_OP:
        mm = units[0]
        return (_MATRIX_Q, waits, signals, (mm.tile_cycles(f), mm.latency(f)),
                f["n_blocks"] * f["k_chunks"] * f["m_rows"])
    # The bursts depend on the address only through its offset in the 4 KiB page.
    key = (f["mem"], f["dram_addr"] % 4096, f["dram_stride"], f["rows"], f["chunks"])
    plan = plans.get(key)
    if plan is None:
        bursts = burst_beats(cfg, f)
        plan = plans[key] = (bursts, equal_runs(bursts))
    nbytes = f["rows"] * f["chunks"] * (cfg.spad_row_bytes if f["mem"] == _SPAD else cfg.acc_row_bytes)
    if op == _LOAD_OP:
        return _LOAD_Q, waits, signals, plan, nbytes
    return _STORE_Q, waits, signals, plan[0], nbytes


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


def clear_cache() -> None:
    """Forget every decoded word, so that the next :func:`predict` costs what a new program's first does."""
    _INFO_CACHE.clear()


def _program_info(cfg: NPUConfig, words) -> list[tuple]:
    """The :func:`_word_info` of each word up to the first HALT (cached per config and word)."""
    entry = _INFO_CACHE.get(cfg)
    if entry is None:
        entry = _INFO_CACHE[cfg] = ({}, {}, (MatrixModel(cfg), VectorModel(cfg)))
    cache, plans, units = entry
    if len(cache) > 100_000:
        cache.clear()
        plans.clear()
    info = []
    append = info.append
    for w in words:
        ins = cache.get(w)
        if ins is None:
            w = int(w)
            ins = cache[w] = _word_info(cfg, w, plans, units)
        append(ins)
        if ins[0] < 0:
            return info
    raise ValueError("the program has no HALT")


def _check_grant(cfg: NPUConfig, words, grant) -> None:
    """Raise ``ValueError`` naming the first LOAD/STORE that the grant refuses (as the NPU would)."""
    for pc, w in enumerate(words):
        f = decode_word(int(w))
        if f["opcode"] in (Opcode.LOAD, Opcode.STORE):
            code, reason = check_window(f, cfg, grant)
            if code != _NONE:
                raise ValueError(f"pc {pc}: {code.name}: {reason}")


# ------------------------------------------------------ the program's graph
@dataclass
class _Graph:
    """The static structure of a program (up to HALT): each queue's instructions in order, the token
    pairs (the k-th pop of src -> dst takes the k-th push), the STORE ordering rule and the
    instruction whose take frees each queue slot."""
    queue_of: list        # pc -> queue (HALT: -1)
    qidx: list            # pc -> place in its queue
    qpcs: tuple           # queue -> its pcs in order
    producers: list       # pc -> the pcs whose tokens its wait pops
    consumers: list       # pc -> the pcs that pop its tokens
    room_pc: list         # pc -> the pc whose take frees a slot of its queue (None: room from the start)
    order_deps: list      # STORE pc -> the older LOAD and STORE it waits for (issued only after them)
    waiters: list         # pc -> the STOREs that wait for it
    works: list           # pc -> its unit's work (_word_info)
    amounts: list         # bytes read, bytes written, A rows into the array


def _graph(info, depth: int, tok_max: int) -> _Graph:
    """The :class:`_Graph` of a program's ``_program_info``; raises ValueError on TOKEN_UNDERFLOW or
    TOKEN_OVERFLOW (program order, as the sequencer's counters check them)."""
    n = len(info)
    qidx = [0] * n
    qpcs = ([], [], [], [])
    producers = [()] * n
    consumers = [()] * n
    room_pc = [None] * (n + 1)         # (one more: the dispatcher's index once all are in)
    pushes = [[] for _ in range(16)]   # [src*4 + dst] -> pushing pcs, in order
    pops = [0] * 16
    amounts = [0, 0, 0, 0]
    pc = 0
    for q, waits, signals, _work, amount in info:
        if q < 0:
            break
        amounts[q] += amount
        lst = qpcs[q]
        k = len(lst)
        qidx[pc] = k
        if k >= depth:
            room_pc[pc] = lst[k - depth]
        lst.append(pc)
        if waits:
            prod = ()
            for src in waits:
                c = src * 4 + q
                k = pops[c]
                if k >= len(pushes[c]):
                    raise ValueError(f"pc {pc}: waits on a {Queue(src).name} token that no earlier "
                                     "instruction signals (TOKEN_UNDERFLOW)")
                pops[c] = k + 1
                p = pushes[c][k]
                prod += (p,)
                consumers[p] += (pc,)
            producers[pc] = prod
        for dst in signals:
            c = q * 4 + dst
            pushes[c].append(pc)
            if len(pushes[c]) - pops[c] > tok_max:
                raise ValueError(f"pc {pc}: pushes a {Queue(q).name}->{Queue(dst).name} token past "
                                 f"{tok_max} in program order (TOKEN_OVERFLOW)")
        pc += 1
    queue_of = [ins[0] for ins in info]
    # A STORE is issued only once the previous STORE and every older LOAD (LOADs complete
    # in order: the latest one) are done, so that an error leaves no younger STORE issued.
    order_deps = [()] * n
    waiters = [()] * n
    last_load = last_store = None
    for pc in range(n - 1):
        q = queue_of[pc]
        if q == _LOAD_Q:
            last_load = pc
        elif q == _STORE_Q:
            deps = tuple(p for p in (last_load, last_store) if p is not None)
            order_deps[pc] = deps
            for p in deps:
                waiters[p] += (pc,)
            last_store = pc
    return _Graph(queue_of, qidx, qpcs, producers, consumers, room_pc, order_deps, waiters,
                  [ins[3] for ins in info], amounts)


# ------------------------------------------------------------------ events
class _Events:
    """The machine's times, computed as soon as their inputs are known (module docstring).

    Three parts, each a method: :meth:`dispatch` (fetched words through the check stage into
    their queues), :meth:`take_heads` (a queue's heads to its unit, once their tokens, the
    STORE order and the in-flight limit allow) and :meth:`read_channel` (the next AR decision,
    a fetch request or a LOAD burst). The hot loops copy attributes into locals.
    """

    def __init__(self, cfg: NPUConfig, t: Timing, g: _Graph, n_code: int, mem: MemoryTiming):
        n = len(g.queue_of)
        self.g, self.n, self.halt, self.n_code = g, n, n - 1, n_code
        self.fb = t.fetch_beats
        self.word_delay = mem.r_cycles(t.fetch_beats) + t.beat_to_word - 1   # first R beat -> word offered
        self.chk = t.check_to_dispatch
        self.to_head = t.dispatch_to_head + t.head_to_offer
        self.tok_delay = t.done_to_token
        self.infl_depth = t.inflight_depth
        self.loads = LoadModel(cfg, mem.lat, r_gap_every=mem.r_gap_every)
        self.stores = StoreModel(cfg, mem.lat)
        self.D = [None] * n          # cycle each word is written into its queue (HALT: leaves the check stage)
        self.H = [0] * n             # cycle each word enters the check stage
        self.take = [None] * n
        self.done = [None] * n
        self.at_head = [None] * n    # cycle each instruction is at its queue's head
        self.at_tokens = [None] * n  # cycle its last token is visible (>= its head cycle)
        self.R = [t.start_to_fetch + k for k in range(t.fetch_depth)]   # fetch request cycles, known so far
        self.V = []                  # cycle each fetched word is offered to the sequencer
        self.fe = 0                  # next word to be written into its queue
        self.hc = 0                  # next word to enter the check stage (fe or fe + 1)
        self.kp = 0                  # next fetch request to place on the read channel
        self.qc = [0, 0, 0, 0]       # place in its queue of each queue's head
        self.prev_take = [-1 << 40] * 4
        self.unit_ready = [0, 0, 0, 0]    # MATRIX, VECTOR: first cycle the unit can take the next instruction
        self.stall = [0, 0, 0, 0]
        self.dispatch_stall = 0
        self.load_pc = None          # the LOAD whose bursts are being placed
        self.halt_d = None
        self.fe_moves = True         # the dispatcher may move on
        self.todo = []               # queues whose head may be taken now

    def run(self) -> None:
        todo = self.todo
        while True:
            while True:
                if self.fe_moves:
                    self.dispatch()
                if not todo:
                    break
                self.take_heads(todo.pop())
            if not self.read_channel():
                return

    def dispatch(self) -> None:
        """Fetched words through the check stage into their queues, in program order."""
        g, V, D, H, R, take = self.g, self.V, self.D, self.H, self.R, self.take
        room_pc, queue_of, qidx, qc, chk = g.room_pc, g.queue_of, g.qidx, self.qc, self.chk
        fe, hc, n = self.fe, self.hc, self.n
        top = self.kp if self.kp < n else n
        while fe < top:
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
                    self.dispatch_stall += tk + 1 - d
                    d = tk + 1
            D[fe] = d
            if fe == self.halt:
                self.halt_d = d
            else:
                q = queue_of[fe]
                if qc[q] == qidx[fe]:
                    self.todo.append(q)         # it is its queue's head
            fe += 1
        self.fe, self.hc, self.fe_moves = fe, hc, False

    def _release(self, pc: int) -> None:
        """``pc`` is done: the heads waiting for its tokens or for it (STORE order) may move."""
        g, qc = self.g, self.qc
        for c in g.consumers[pc] + g.waiters[pc]:
            q = g.queue_of[c]
            if qc[q] == g.qidx[c]:
                self.todo.append(q)

    def take_heads(self, q: int) -> None:
        """Queue ``q``'s heads to its unit while their tokens, the STORE order and the in-flight
        limit allow (a LOAD: one, then the burst planner is busy)."""
        if q == _LOAD_Q and self.load_pc is not None:
            return                                  # the planner still cuts the previous LOAD
        g, D, done, take = self.g, self.D, self.done, self.take
        lst, producers, order_deps, works = g.qpcs[q], g.producers, g.order_deps, g.works
        to_head, tok_delay, infl_depth = self.to_head, self.tok_delay, self.infl_depth
        prev_take, unit_ready = self.prev_take, self.unit_ready
        i, last = self.qc[q], len(lst)
        while i < last:
            pc = lst[i]
            d = D[pc]
            if d is None:
                break                               # not dispatched yet
            head = d + to_head
            if prev_take[q] >= head:
                head = prev_take[q] + 1
            tok = head
            for p in producers[pc]:
                dn = done[p]
                if dn is None:
                    tok = None
                    break
                if dn + tok_delay > tok:
                    tok = dn + tok_delay
            if tok is None:
                break                               # a token is still to come
            offer = tok
            if q == _STORE_Q:
                for p in order_deps[pc]:
                    dn = done[p]
                    if dn is None:
                        offer = None
                        break
                    if dn + tok_delay > offer:
                        offer = dn + tok_delay
                if offer is None:
                    break                           # an older LOAD or STORE is still running
            if i >= infl_depth:
                dn = done[lst[i - infl_depth]]
                if dn is None:
                    break                           # inflight_depth instructions in flight
                if dn >= offer:
                    offer = dn + 1
            if q == _LOAD_Q:
                loads = self.loads
                a = loads.ready if loads.ready > offer else offer
                loads.start(a, *works[pc])
                self.load_pc = pc
            else:
                if q == _MATRIX_Q:
                    a = unit_ready[q] if unit_ready[q] > offer else offer
                    work = works[pc]
                    unit_ready[q] = a + work[0]
                    dn = a + work[1]
                elif q == _STORE_Q:
                    a, dn = self.stores.issue_bursts(offer, works[pc])
                else:
                    a = unit_ready[q] if unit_ready[q] > offer else offer
                    unit_ready[q] = dn = a + works[pc]
                done[pc] = dn
                self._release(pc)
            take[pc] = a
            prev_take[q] = a
            self.at_head[pc] = head
            self.at_tokens[pc] = tok
            self.stall[q] += tok - head
            i += 1
            if g.room_pc[self.fe] == pc:
                self.fe_moves = True                # the slot the dispatcher waits for is free
            if q == _LOAD_Q:
                break                               # the next LOAD waits for the planner
        self.qc[q] = i

    def read_channel(self) -> bool:
        """The next AR decision: a fetch request (first in its cycle) or the current LOAD's bursts
        up to it. False once there is nothing left to decide."""
        R, kp, halt_d, loads = self.R, self.kp, self.halt_d, self.loads
        tf = R[kp] if kp < len(R) and kp < self.n_code and (halt_d is None or R[kp] <= halt_d) else None
        if self.load_pc is not None and (tf is None or loads.cand < tf):
            dn = loads.run(1 << 62 if tf is None else tf)
            if dn is not None:
                self.done[self.load_pc] = dn
                self.todo.append(_LOAD_Q)
                self._release(self.load_pc)
                self.load_pc = None
            return True
        if tf is None:
            return False
        self.V.append(loads.fetch(tf, self.fb) + self.word_delay)
        if self.fe == kp:
            self.fe_moves = True                    # the word the dispatcher waits for
        self.kp = kp + 1
        return True


def _result(g: _Graph, ev: _Events, t: Timing) -> PerfResult:
    """The :class:`PerfResult` of a finished event run (the RTL's counters)."""
    done, take, halt = ev.done, ev.take, ev.halt
    if done.count(None) > 1:
        pc = done.index(None)
        raise ValueError(f"pc {pc}: never completes (its tokens are never pushed: the program deadlocks)")
    last_done = max(done[:halt], default=0)
    cycles = max(last_done, ev.halt_d) + 1
    names = _UNIT_NAMES
    busy = {}
    for q in range(4):
        # LOAD/STORE busy ends the cycle before done; the matrix and vector units include it.
        end = 1 if q == _LOAD_Q or q == _STORE_Q else 0
        busy[names[q]] = _busy_union([(take[pc] + 1, done[pc] - end) for pc in g.qpcs[q]])
    timeline = [(names[g.queue_of[pc]], pc, take[pc], done[pc]) for pc in range(halt)]
    timeline.append(("sequencer", halt, ev.halt_d, cycles))
    array_active, bytes_read, bytes_written = g.amounts[_MATRIX_Q], g.amounts[_LOAD_Q], g.amounts[_STORE_Q]
    stalls = {names[q]: ev.stall[q] for q in range(4)}
    res = PerfResult(cycles=cycles, instructions=ev.n, busy=busy, stall=stalls,
                     array_active=array_active, bytes_read=bytes_read,
                     bytes_written=bytes_written, timeline=timeline, dispatch_stall=ev.dispatch_stall,
                     fetched=ev.V[:ev.n], checked=ev.H, dispatched=ev.D, head=ev.at_head,
                     tokens=ev.at_tokens, producers=g.producers, timing=t)
    values = {
        "CYCLES": cycles, "MATRIX_BUSY": busy["matrix"], "ARRAY_ACTIVE": array_active,
        "VECTOR_BUSY": busy["vector"], "LOAD_BUSY": busy["load"], "STORE_BUSY": busy["store"],
        "LOAD_STALL": stalls["load"], "STORE_STALL": stalls["store"],
        "MATRIX_STALL": stalls["matrix"], "VECTOR_STALL": stalls["vector"],
        "DISPATCH_STALL": ev.dispatch_stall,
        "BYTES_READ": bytes_read, "BYTES_WRITTEN": bytes_written, "INSTRUCTIONS": ev.n,
    }
    res.counters = {name: values[name] for name, _ in COUNTERS}
    return res


def predict(config, words, *, lat: int | None = None, grant=None,
            memory_timing: MemoryTiming | None = None) -> PerfResult:
    """Predict the cycles and counters of ``words`` (a legal program ending in HALT) on ``config``.

    Cycle 0 is the cycle START takes effect; ``cycles`` is the CYCLES counter
    at done. ``lat`` is the latency of the ideal AXI slave (``>= 1``; ``None``: 1). The code
    window is ``words`` (the NPU fetches nothing past them), or ``grant``'s
    (``sw/regmap.DramGrant``); a LOAD/STORE that the grant refuses raises
    ``ValueError`` (the NPU would stop with ``DMA_WINDOW`` or ``CODE_WRITE``).
    With a code window longer than the program, the NPU prefetches words past
    HALT and ends only when their reads are in: that tail is not modelled.
    Every latency and depth comes from ``spec.timing.timing(config)``.
    ``memory_timing`` (``spec/memory_timing.py``) is the memory's whole timing instead of ``lat``:
    the description ``cosim/axi_memory.py`` is built from (latency, queue depth, R gaps).
    """
    cfg = load_config(config)
    t = timing(cfg)
    memory_timing = memory_timing_for(cfg, lat, memory_timing)
    info = _program_info(cfg, words)
    # Words in the code window [PROG_ADDR, PROG_END): the most the NPU fetches.
    n_code = len(words) if grant is None else (grant.prog_end - grant.prog_addr) // INSTR_BYTES
    if grant is not None:
        _check_grant(cfg, words[:len(info)], grant)
    g = _graph(info, t.queue_depth, (1 << cfg.token_bits) - 1)
    ev = _Events(cfg, t, g, n_code, memory_timing)
    ev.run()
    return _result(g, ev, t)
