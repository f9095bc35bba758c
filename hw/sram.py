"""A banked on-chip SRAM with one dedicated read and write port per client.

See ``docs/matrix_unit.md`` ("BankedSram").
"""

import operator

from amaranth import *
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In

from flashnpu.hw.signatures import SramReadSignature, SramWriteSignature

__all__ = ["BankedSram"]

SRAM_ADDR_WIDTH = 16


class BankedSram(wiring.Component):
    """Serve every client every cycle from ``banks`` memories of ``rows/banks`` rows each.

    Row ``r`` lives in bank ``r // (rows/banks)`` (the high address bits) at
    ``r % (rows/banks)``. Each bank has one read port and one write port per
    client, so clients never wait for each other: a read always returns its
    data the cycle after ``en`` and a write always lands.

    Parameters
    ----------
    rows : int
        Rows in all; a multiple of ``banks``, at most ``2**16``.
    banks : int
        Number of memories.
    width : int
        Bits per row.
    read_ports, write_ports : tuple of str
        Client names; each gives a member ``rd_<name>`` / ``wr_<name>``.

    Attributes
    ----------
    rd_<name> : In(SramReadSignature(addr_width=16, data_width=width))
        Synchronous read: ``data`` holds row ``addr`` the cycle after ``en``
        and keeps its value while ``en`` is low. Rows ``>= rows`` read as 0.
        A read of a row written in the same cycle returns the old contents.
    wr_<name> : In(SramWriteSignature(addr_width=16, data_width=width))
        Row ``addr`` takes ``data`` at the clock edge when ``en``. Writes to
        rows ``>= rows`` are dropped. When several write ports write the same
        row in the same cycle, the one named first in ``write_ports`` wins.
    banks : list of Memory
        The memories (for testbenches that preload or inspect contents).
    """

    def __init__(self, *, rows, banks, width, read_ports=("a", "b"), write_ports=("x",)):
        rows, banks, width = operator.index(rows), operator.index(banks), operator.index(width)
        if banks < 1:
            raise ValueError(f"banks = {banks}: must be at least 1")
        if rows < banks or rows % banks:
            raise ValueError(f"rows = {rows}: must be a positive multiple of banks ({banks})")
        if rows > 1 << SRAM_ADDR_WIDTH:
            raise ValueError(f"rows = {rows}: must be at most {1 << SRAM_ADDR_WIDTH} (16-bit addresses)")
        if width < 1:
            raise ValueError(f"width = {width}: must be positive")
        for kind, names in (("read_ports", read_ports), ("write_ports", write_ports)):
            if isinstance(names, str) or len(set(names)) != len(names) or not all(
                    isinstance(n, str) and n.isidentifier() for n in names):
                raise ValueError(f"{kind} = {names!r}: must be a tuple of distinct identifiers")
        self._rows = rows
        self._bank_rows = rows // banks
        self._width = width
        self._read_ports = tuple(read_ports)
        self._write_ports = tuple(write_ports)
        members = {}
        for n in self._read_ports:
            members[f"rd_{n}"] = In(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=width))
        for n in self._write_ports:
            members[f"wr_{n}"] = In(SramWriteSignature(addr_width=SRAM_ADDR_WIDTH, data_width=width))
        super().__init__(members)
        self.banks = [memory.Memory(shape=unsigned(width), depth=self._bank_rows, init=[])
                      for _ in range(banks)]

    @property
    def rows(self):
        return self._rows

    @property
    def bank_rows(self):
        return self._bank_rows

    def locate(self, row):
        """``(bank, index)`` of ``row``: where a testbench finds it in :attr:`banks`."""
        if not 0 <= row < self._rows:
            raise IndexError(f"row {row} outside 0..{self._rows - 1}")
        return divmod(row, self._bank_rows)

    def elaborate(self, platform):
        m = Module()
        br = self._bank_rows
        nb = len(self.banks)

        def hit(addr, b):
            return (addr >= b * br) & (addr < (b + 1) * br)

        for b, mem in enumerate(self.banks):
            m.submodules[f"bank{b}"] = mem

        # Write ports, with an explicit priority so that the result of a
        # same-row collision does not depend on the memory primitive.
        wrs = [getattr(self, f"wr_{n}") for n in self._write_ports]
        for i, wr in enumerate(wrs):
            shadowed = Const(0)
            for hi in wrs[:i]:
                shadowed = shadowed | (hi.en & (hi.addr == wr.addr))
            for b, mem in enumerate(self.banks):
                port = mem.write_port()
                m.d.comb += [
                    port.en.eq(wr.en & hit(wr.addr, b) & ~shadowed),
                    port.addr.eq(wr.addr - b * br),
                    port.data.eq(wr.data),
                ]

        # Read ports: the bank (or "out of range") is registered on en, and every
        # bank's port holds its data while not enabled, so data holds too.
        for name in self._read_ports:
            rd = getattr(self, f"rd_{name}")
            sel = Signal(range(nb + 1), name=f"rd_{name}_bank")   # nb = out of range
            datas = []
            for b, mem in enumerate(self.banks):
                port = mem.read_port()
                m.d.comb += [port.en.eq(rd.en & hit(rd.addr, b)), port.addr.eq(rd.addr - b * br)]
                datas.append(port.data)
            with m.If(rd.en):
                m.d.sync += sel.eq(nb)
                for b in range(nb):
                    with m.If(hit(rd.addr, b)):
                        m.d.sync += sel.eq(b)
            with m.Switch(sel):
                for b in range(nb):
                    with m.Case(b):
                        m.d.comb += rd.data.eq(datas[b])
                with m.Default():
                    m.d.comb += rd.data.eq(0)
        return m
