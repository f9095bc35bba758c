"""The microarchitecture of one config: every stage count, latency and depth that the RTL and the
performance model share, with one home.

``timing(config)`` derives a :class:`Timing` from an :class:`~flashnpu.spec.config.NPUConfig`.
``hw/`` builds its pipelines and FIFOs from it; ``sw/perfmodel.py`` reads it; the tables in
``docs/timing.md`` are generated from it (``python -m flashnpu.sw.docgen``).

Two kinds of numbers live here, and each field says which it is:

- **parameters**: the RTL is built from the number (a FIFO's depth, a pipeline's length, the
  divider's radix). Changing it changes the hardware, and the model follows.
- **structural latencies**: the number of register stages on a path that the RTL's structure
  fixes (for example "a word's last R beat -> offered to the sequencer: 2", through the R
  register and the response FIFO). They are stated here so that the model reads them instead of
  restating them; the cycle-exact tests (tests/test_perfmodel.py) check them against the RTL.

Cycle 0 is the cycle START takes effect.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache

from flashnpu.spec.isa import INSTR_BYTES
from flashnpu.spec.numerics import RECIP_MULT_LIMIT, RECIP_SHIFT

__all__ = ["Timing", "timing", "division_cycles", "DIVIDER_QUOTIENT_BITS", "EXP_LATENCY", "PARAMETERS"]

#: Quotient bits of one RECIP division: a 16-bit multiplier shifted by RECIP_SHIFT, plus one bit.
DIVIDER_QUOTIENT_BITS = (RECIP_MULT_LIMIT - 1).bit_length() + RECIP_SHIFT + 1


def division_cycles(bits_per_cycle: int) -> int:
    """Cycles of one RECIP division at ``bits_per_cycle`` quotient bits per cycle (``recip_row_cycles``)."""
    return -(-DIVIDER_QUOTIENT_BITS // bits_per_cycle)

#: Register stages of one exp2 lane (table look-up, interpolation, rounding; hw/exp2_lane.py).
EXP_LATENCY = 6


@dataclass(frozen=True)
class Timing:
    """The timing of one config (see the module docstring for the two kinds of field)."""

    # ---------------------------------------------------------------- sequencer
    #: [parameter] instruction fetch requests in flight: the sequencer's limit and the DMA's
    #: fetch response FIFO depth (config ``fetch_depth``).
    fetch_depth: int
    #: [parameter] instructions a unit may have taken and not completed: the sequencer's
    #: per-unit in-flight FIFO depth (config ``inflight_depth``).
    inflight_depth: int
    #: [parameter] instructions each unit's queue holds (config ``queue_depth``).
    queue_depth: int
    #: [parameter] cycles with no progress while instructions wait before DEADLOCK (a safety net).
    deadlock_cycles: int
    #: [structural] START -> the first fetch request.
    start_to_fetch: int
    #: [structural] a word's last R beat -> the word offered to the sequencer (R register, FIFO).
    beat_to_word: int
    #: [structural] word taken into the check stage (F) -> written into its queue, at the earliest.
    check_to_dispatch: int
    #: [structural] written into the queue -> at the queue's head (FIFO latency).
    dispatch_to_head: int
    #: [structural] queue head with its tokens -> offered to the unit.
    head_to_offer: int
    #: [structural] unit ``done`` -> its token is seen by a waiting queue head.
    done_to_token: int

    # ---------------------------------------------------------------------- DMA
    #: [parameter] R beats of one 32-byte instruction fetch.
    fetch_beats: int
    #: [parameter] read bursts in flight (config ``dma_max_outstanding``).
    read_slots: int
    #: [structural] a read burst decided into the AR register in cycle a: first R beat no
    #: earlier than ``a + ar_to_first_beat + lat``.
    ar_to_first_beat: int
    #: [structural] a LOAD taken in cycle t: its first burst decided no earlier than this after t.
    load_take_to_first_ar: int
    #: [structural] last R beat of a LOAD retired -> its ``done`` pulse (SRAM write).
    load_last_beat_to_done: int
    #: [parameter] burst lengths the STORE write path holds between AW and its last W beat.
    store_burst_fifo_depth: int
    #: [parameter] STOREs with bursts between their first AW and their last B (count FIFO).
    store_count_depth: int
    #: [parameter] W beats buffered between the SRAM read pipeline and the W channel.
    store_w_buffer_depth: int
    #: [structural] a STORE taken in cycle t: its first AW register load in cycle t + this.
    store_take_to_first_aw: int
    #: [structural] the SRAM-read stage handles a burst's last beat -> its B, beyond the slave's
    #: latency ``lat`` (the W handshake is 3 cycles after that stage, the B 1 + lat after it).
    store_w_to_b: int
    #: [structural] last B of a STORE -> its ``done`` pulse.
    store_b_to_done: int

    # ------------------------------------------------------------------- matrix
    #: [parameter] array pipeline: an A row in cycle c comes out in ``c + array_latency``.
    array_latency: int
    #: [structural] the constant of ``done = take + (tiles - 1)*T + m_rows + array_latency + this``
    #: (the A read before the array, the accumulator read and write after it).
    matmul_fixed_latency: int

    # ------------------------------------------------------------------- vector
    #: [parameter] register stages of one exp2 lane.
    exp_latency: int
    #: [parameter] issue -> SCALE's accumulator write, OUTPUT/REQUANT's scratchpad write.
    vector_out_write: int
    #: [parameter] issue -> EXP's write of p over the row it read.
    vector_exp_write: int
    #: [parameter] issue -> ROWMAX/EXP's row-state write.
    vector_state_write: int
    #: [parameter] quotient bits the RECIP divider retires per cycle (config ``divider_bits_per_cycle``).
    divider_bits_per_cycle: int
    #: [parameter] cycles of one division: ``ceil(DIVIDER_QUOTIENT_BITS / divider_bits_per_cycle)``.
    recip_row_cycles: int
    #: [parameter] dividers RECIP deals successive rows to, round robin (config ``recip_dividers``).
    recip_dividers: int
    #: [parameter] cycles between the starts of successive rows' divisions:
    #: ``ceil(recip_row_cycles / recip_dividers)``, so a divider is free again when its turn comes.
    recip_row_interval: int
    #: [structural] RECIP: take -> the first division starts (reads L of row 0).
    recip_start: int

    def rows(self) -> list[tuple[str, int, str, str]]:
        """``(field, value, kind, what)`` per field, for the generated docs."""
        out = []
        for f in fields(self):
            doc = _FIELD_DOCS[f.name]
            kind, what = doc[1:].split("] ", 1)
            out.append((f.name, getattr(self, f.name), kind, what))
        return out


def _field_docs() -> dict[str, str]:
    """The ``#:`` comment above each field of :class:`Timing`, read from this file's source."""
    import inspect
    docs, pending = {}, []
    for line in inspect.getsource(Timing).splitlines():
        s = line.strip()
        if s.startswith("#:"):
            pending.append(s[2:].strip())
        elif pending and ":" in s and not s.startswith(("def", "#", '"')):
            docs[s.split(":")[0]] = " ".join(pending)
            pending = []
        elif not s.startswith("#:"):
            pending = []
    return docs


_FIELD_DOCS = _field_docs()

#: The Timing fields the RTL is built from (the rest are structural latencies).
PARAMETERS = tuple(name for name, doc in _FIELD_DOCS.items() if doc.startswith("[parameter]"))


@lru_cache(maxsize=64)
def timing(config) -> Timing:
    """The :class:`Timing` of a config (cached: configs are frozen)."""
    bits = config.divider_bits_per_cycle
    division = division_cycles(bits)
    wlen = config.store_burst_fifo_depth
    return Timing(
        fetch_depth=config.fetch_depth,
        inflight_depth=config.inflight_depth,
        queue_depth=config.queue_depth,
        deadlock_cycles=16,
        start_to_fetch=1,
        beat_to_word=2,
        check_to_dispatch=1,
        dispatch_to_head=1,
        head_to_offer=0,
        done_to_token=1,
        fetch_beats=max(1, INSTR_BYTES // config.dma_beat_bytes),
        read_slots=config.dma_max_outstanding,
        ar_to_first_beat=2,
        load_take_to_first_ar=2,
        load_last_beat_to_done=3,
        store_burst_fifo_depth=wlen,
        store_count_depth=wlen + 2,
        store_w_buffer_depth=4,
        store_take_to_first_aw=2,
        store_w_to_b=4,
        store_b_to_done=3,
        array_latency=2 * config.dim - 1,
        matmul_fixed_latency=3,
        exp_latency=EXP_LATENCY,
        vector_out_write=4,
        vector_exp_write=2 + EXP_LATENCY,
        vector_state_write=3 + EXP_LATENCY,
        divider_bits_per_cycle=bits,
        recip_row_cycles=division,
        recip_dividers=config.recip_dividers,
        recip_row_interval=-(-division // config.recip_dividers),
        recip_start=2,
    )
