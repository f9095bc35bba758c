"""SOFT_RESET at any moment: quiet the bus first, then reset the blocks.

Resetting the DMA engine while AXI transactions are in flight would orphan
them: R beats and B responses for bursts nobody remembers, W beats that never
come for an AW already taken. So a SOFT_RESET request first stops the NPU
(the sequencer stops issuing, the DMA starts no new transaction), waits until
the DMA reports no transaction outstanding, and only then resets every block
but the registers, in one cycle.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StopControl"]


class StopControl(wiring.Component):
    """Carry out SOFT_RESET requests once the bus is quiet.

    Members
    -------
    soft_reset : In(1)
        Pulse: a SOFT_RESET request (from the registers).
    bus_busy : In(1)
        The DMA has AXI transactions outstanding.
    resetting : Out(1)
        From the cycle after the request until the reset: stop everything.
    reset_blocks : Out(1)
        Combinational, one cycle: reset every block but the registers now.
    """

    soft_reset: In(1)
    bus_busy: In(1)
    resetting: Out(1)
    reset_blocks: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.reset_blocks.eq(self.resetting & ~self.bus_busy)
        with m.If(self.soft_reset):
            m.d.sync += self.resetting.eq(1)
        with m.Elif(self.reset_blocks):
            m.d.sync += self.resetting.eq(0)
        return m
