"""The DRAM's timing, one description for the HDL memory and the performance model.

``cosim/axi_memory.py`` (the HDL DRAM of ``run_program(..., memory="fast")``)
is built from a :class:`MemoryTiming`, and ``sw/perfmodel.predict(...,
memory_timing=...)`` reads the same object, so every timing the description can
express is modelled exactly (``tests/test_perfmodel.py``). See docs/dma.md,
"Memory timing".
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MemoryTiming", "MemoryTimingError", "memory_timing_for"]


class MemoryTimingError(ValueError):
    """A memory-timing description that cannot work, or that the model cannot time exactly."""


@dataclass(frozen=True)
class MemoryTiming:
    """How the DRAM answers.

    ``lat``: an AR handshake in cycle ``h`` has its first R beat in ``h + 1 +
    lat`` at the earliest, a burst's last W beat in cycle ``w`` its B in
    ``w + 1 + lat``. ``queue_depth``: read (and write) bursts the memory holds;
    its AR (AW) ready is low while they are that many (``None``: the least
    that never fills on the config, at least 16; :meth:`for_config`). ``r_gap_every``: 0 sends
    a burst's R beats back to back; ``k >= 2`` leaves one cycle without a beat
    after every ``k - 1`` beats of a burst (a memory delivering ``(k-1)/k`` of
    the bus's bandwidth inside a burst), so a burst of ``b`` beats holds the R
    channel for :meth:`r_cycles` ``(b) = b + (b - 1) // (k - 1)`` cycles.
    """
    lat: int = 1
    queue_depth: int | None = None
    r_gap_every: int = 0

    def __post_init__(self):
        for name in ("lat", "queue_depth", "r_gap_every"):
            v = getattr(self, name)
            if v is None and name == "queue_depth":
                continue
            if isinstance(v, bool) or not isinstance(v, int):
                raise MemoryTimingError(f"field '{name}' = {v!r}: must be an integer")
        if not 1 <= self.lat <= 1000:
            raise MemoryTimingError(f"field 'lat' = {self.lat}: must be between 1 and 1000 cycles")
        if self.queue_depth is not None and not 2 <= self.queue_depth <= 256:
            raise MemoryTimingError(f"field 'queue_depth' = {self.queue_depth}: must be between 2 and 256")
        if self.r_gap_every == 1 or not 0 <= self.r_gap_every <= 256:
            raise MemoryTimingError(f"field 'r_gap_every' = {self.r_gap_every}: must be 0 (no gaps) or "
                                    f"between 2 and 256 (one idle cycle after every r_gap_every - 1 beats)")

    def r_cycles(self, beats: int) -> int:
        """Cycles a burst of ``beats`` holds the R channel, first beat to last."""
        k = self.r_gap_every
        return beats if k == 0 else beats + (beats - 1) // (k - 1)

    def for_config(self, config) -> "MemoryTiming":
        """This timing with ``queue_depth`` filled in for ``config``; raises unless the model times it
        exactly there, i.e. unless the queues cannot fill.

        The NPU keeps at most ``fetch_depth`` fetches and ``read_slots`` LOAD bursts
        in flight (``spec.timing``), and the model assumes AR is never refused.
        """
        from dataclasses import replace

        from flashnpu.spec.timing import timing
        t = timing(config)
        need = t.fetch_depth + t.read_slots
        if self.queue_depth is None:
            return replace(self, queue_depth=max(16, need))
        if self.queue_depth < need:
            raise MemoryTimingError(
                f"field 'queue_depth' = {self.queue_depth}: the model is exact only while the memory's "
                f"queue cannot fill: at least fetch_depth + read_slots = {need} on config '{config.name}'")
        return self


def memory_timing_for(config, lat=None, memory_timing=None) -> MemoryTiming:
    """The memory timing a caller asked for, as a latency ``lat`` alone (``None``: 1) or as a whole
    ``memory_timing``, filled in and checked for ``config`` (:meth:`MemoryTiming.for_config`)."""
    if lat is not None and memory_timing is not None:
        raise MemoryTimingError("give lat or memory_timing, not both")
    mt = MemoryTiming(lat=1 if lat is None else lat) if memory_timing is None else memory_timing
    return mt.for_config(config)
