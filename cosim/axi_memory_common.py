"""What the read and write sides of ``AxiMemory`` share: timestamps, beat addresses, error responses, ports.

See ``docs/axi_memory.md`` ("Design").
"""

from dataclasses import dataclass

from amaranth import *
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import Out

from flashnpu.hw.axi import RESP_DECERR, RESP_SLVERR

__all__ = ["STAMP_BITS", "log2", "later", "due", "Geometry", "burst_layout", "window_layout",
           "stamped_burst_queue", "StorageReadSignature", "StorageWriteSignature"]

#: Width of the free-running cycle counter and of the timestamps in the queues;
#: compared by signed difference, so only waits under 2**31 cycles are exact.
STAMP_BITS = 32


def log2(n):
    return (n - 1).bit_length()


def later(a, b):
    """Whether stamp ``a`` is after stamp ``b`` (signed difference, wraps safely)."""
    return (b - a)[STAMP_BITS - 1]


def due(ready, now):
    """Whether an event ready at stamp ``ready`` may be shown on the bus in cycle ``now + 1``."""
    return ~(now + 1 - ready)[STAMP_BITS - 1]


def burst_layout(geometry):
    """An AR or AW: the burst's ID, start byte address and ``len`` (beats - 1)."""
    return data.StructLayout({"id": geometry.id_width, "addr": geometry.addr_width, "len": 8})


def stamped_burst_queue(m, name, bursts, geometry, stamp, depth):
    """A FIFO ``m.submodules[name]`` of ``depth`` bursts taken on ``bursts`` (an AR or AW stream), each
    with the ``stamp`` of its handshake cycle; ``bursts.ready`` while it has room.

    Returns ``(head, queue)``: ``head.burst`` and ``head.stamp`` of the oldest entry (valid while
    ``queue.r_rdy``), and the FIFO, whose ``r_en`` the caller drives.
    """
    entry = data.StructLayout({"burst": burst_layout(geometry), "stamp": STAMP_BITS})
    queue = m.submodules[name] = fifo.SyncFIFO(width=entry.size, depth=depth)
    incoming, head = Signal(entry, name=f"{name}_in"), Signal(entry, name=f"{name}_head")
    m.d.comb += [incoming.burst.eq(bursts.payload), incoming.stamp.eq(stamp),
                 bursts.ready.eq(queue.w_rdy), queue.w_en.eq(bursts.valid), queue.w_data.eq(incoming),
                 head.eq(queue.r_data)]
    return head, queue


def window_layout(geometry):
    """The SLVERR window ``[base, base + size)`` (byte addresses)."""
    return data.StructLayout({"base": geometry.addr_width, "size": geometry.addr_width})


@dataclass(frozen=True)
class Geometry:
    """The bus widths and memory size of one ``AxiMemory``, and the address arithmetic on them."""

    addr_width: int
    data_width: int
    id_width: int
    size_bytes: int

    @property
    def beat(self):
        return self.data_width // 8

    @property
    def depth(self):
        """Memory words (beats)."""
        return self.size_bytes // self.beat

    @property
    def index_bits(self):
        return max(1, log2(self.depth))

    def beat_addr(self, base, k):
        """Byte address of beat ``k`` of a burst at ``base``; one bit wider than the bus, so a burst
        running off the top is out of range."""
        lg = log2(self.beat)
        return ((base >> lg) + k) << lg

    def index(self, a):
        """The word of byte address ``a``."""
        lg = log2(self.beat)
        return a[lg:lg + self.index_bits]

    def resp(self, m, a, window):
        """The response of a beat at byte address ``a``: DECERR beyond the memory, SLVERR in ``window``."""
        off = Signal(self.addr_width + 2)
        m.d.comb += off.eq(a - window.base)
        return Mux(a >= self.size_bytes, RESP_DECERR,
                   Mux((a >= window.base) & (off < window.size), RESP_SLVERR, 0))


class StorageReadSignature(wiring.Signature):
    """A synchronous read port of the word array (seen from the reader): ``data`` is word ``addr``
    the cycle after ``en``, and holds while ``en`` is low."""

    def __init__(self, geometry):
        super().__init__({
            "addr": Out(geometry.index_bits),
            "en": Out(1),
            "data": wiring.In(geometry.data_width),
        })


class StorageWriteSignature(wiring.Signature):
    """A write port of the word array with byte enables: byte ``j`` of word ``addr`` takes byte ``j`` of
    ``data`` at the clock edge when ``en[j]``."""

    def __init__(self, geometry):
        super().__init__({
            "addr": Out(geometry.index_bits),
            "en": Out(geometry.beat),
            "data": Out(geometry.data_width),
        })
