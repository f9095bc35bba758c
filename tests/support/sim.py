"""Run an Amaranth async testbench on one component."""

from amaranth.sim import Simulator

__all__ = ["simulate"]


def simulate(dut, testbench, *, clock=True):
    """Simulate ``dut`` with ``testbench`` to its end; a 1 MHz ``sync`` clock unless ``clock`` is False
    (a purely combinational block, stepped with ``ctx.delay``)."""
    sim = Simulator(dut)
    if clock:
        sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
