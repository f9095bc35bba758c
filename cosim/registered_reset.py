"""A simulation top whose ``rst`` input goes through a register before it reaches the design.

Why: in Amaranth's Verilog every flip-flop's next value is a function of the
``sync`` reset, so with ``rst`` a top-level input nearly all of the design's
next-state logic depends on an input. Verilator then evaluates that logic in
its input-combinational region on every ``eval()`` (twice a clock, whatever
changed) besides its normal evaluation after each edge: 59 % of the
simulation time of the default NPU, measured with ``perf`` (docs/cosim.md,
"Simulation speed"). Behind a register, the reset is state and that logic
runs only after clock edges. The reset reaches the design one cycle later,
which the harness (it holds ``rst`` for several cycles) does not see.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In

__all__ = ["RegisteredReset"]


class RegisteredReset(wiring.Component):
    """``inner`` (whose logic is in the ``sync`` domain) with ports ``clk`` and ``rst`` of its own.

    The other members are ``inner``'s, under the same names, so the Verilog
    ports are the ones ``inner`` alone would have.
    """

    def __init__(self, inner: wiring.Component):
        self._inner = inner
        members = dict(inner.signature.members)
        for name in ("clk", "rst"):
            if name in members:
                raise ValueError(f"the inner component already has a member named {name!r}")
        super().__init__({"clk": In(1), "rst": In(1), **members})

    @property
    def inner(self):
        return self._inner

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain()
        m.domains.reset_reg = ClockDomain(reset_less=True)
        rst_q = Signal(init=1)
        m.d.comb += [ClockSignal("sync").eq(self.clk), ClockSignal("reset_reg").eq(self.clk),
                     ResetSignal("sync").eq(rst_q)]
        m.d.reset_reg += rst_q.eq(self.rst)
        inner = m.submodules.inner = self._inner
        for name, member in self._inner.signature.members.items():
            outer, port = getattr(self, name), getattr(inner, name)
            if member.is_signature:
                wiring.connect(m, wiring.flipped(outer), port)
            elif member.flow == wiring.In:
                m.d.comb += port.eq(outer)
            else:
                m.d.comb += outer.eq(port)
        return m
