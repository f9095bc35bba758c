"""Interfaces between the NPU's blocks.

Each signature is written from the initiator's side (the unit that drives the
address), so a client holds ``Out(SramReadSignature(...))`` and the memory
holds the flipped one.
"""

from amaranth import unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.spec.isa import INSTR_LAYOUT, ErrorCode
from flashnpu.spec.regmap import DMA_WINDOWS

__all__ = ["SramReadSignature", "SramWriteSignature", "UnitSignature", "FetchSignature", "ERROR_SHAPE",
           "GRANT_LAYOUT"]

ERROR_SHAPE = unsigned(max(ErrorCode).bit_length())

#: The host's grant (``sw/regmap.DramGrant``) as the registers hold it: code window and DMA windows.
GRANT_LAYOUT = data.StructLayout({
    "prog_addr": unsigned(32),
    "prog_end": unsigned(32),
    "windows": data.ArrayLayout(data.StructLayout({"base": unsigned(32), "limit": unsigned(32)}),
                                DMA_WINDOWS),
})


class SramReadSignature(wiring.Signature):
    """A synchronous SRAM read port: ``data`` holds row ``addr`` the cycle after ``en``.

    ``data`` keeps its value while ``en`` is low.
    """

    def __init__(self, *, addr_width, data_width):
        self._addr_width = addr_width
        self._data_width = data_width
        super().__init__({
            "addr": Out(addr_width),
            "en": Out(1),
            "data": In(data_width),
        })

    @property
    def addr_width(self):
        return self._addr_width

    @property
    def data_width(self):
        return self._data_width


class SramWriteSignature(wiring.Signature):
    """A synchronous SRAM write port: row ``addr`` takes ``data`` at the clock edge when ``en``."""

    def __init__(self, *, addr_width, data_width):
        self._addr_width = addr_width
        self._data_width = data_width
        super().__init__({
            "addr": Out(addr_width),
            "en": Out(1),
            "data": Out(data_width),
        })

    @property
    def addr_width(self):
        return self._addr_width

    @property
    def data_width(self):
        return self._data_width


class UnitSignature(wiring.Signature):
    """How the sequencer drives an execution unit (seen from the sequencer).

    * ``instr``: instructions whose wait tokens are already taken; the unit
      takes one when it can start it. A pipelined unit may take the next
      instruction before the previous one has completed.
    * ``done``: one cycle per completed instruction, in the order taken; all of
      that instruction's writes are visible to every unit from the next cycle.
    * ``busy``: the unit has an instruction in flight (performance counters).
    * ``error``: non-zero stops the NPU with that ErrorCode.
    """

    def __init__(self):
        super().__init__({
            "instr": Out(stream.Signature(INSTR_LAYOUT)),
            "done": In(1),
            "busy": In(1),
            "error": In(ERROR_SHAPE),
        })


class FetchSignature(wiring.Signature):
    """Instruction fetch, seen from the sequencer; served by the DMA engine's AXI master.

    Each ``req`` asks for one 32-byte instruction word at ``addr`` (32-byte
    aligned, so it never crosses 4 KiB). Responses come back in request order;
    several requests may be outstanding. ``error`` marks a word whose read
    answered SLVERR or DECERR.
    """

    def __init__(self):
        super().__init__({
            "req": Out(stream.Signature(data.StructLayout({"addr": unsigned(32)}))),
            "resp": In(stream.Signature(data.StructLayout({
                "word": unsigned(INSTR_LAYOUT.size),
                "error": unsigned(1),
            }))),
        })
