"""The test-side AXI4-Lite host (master), driven from Amaranth's simulator.

Two ways to use it, on the same state machine:

* stepped: queue ``("w", addr, data[, strb[, resp]])`` / ``("r", addr[, resp])`` on
  ``ops`` and call ``step(ctx, bus)`` once per clock cycle, before the tick, next to
  other models (test_npu, test_perfmodel, test_axi_memory); read data lands in ``reads``;
* awaited: ``await host.write(ctx, addr, data, strb)`` / ``await host.read(ctx, addr)``
  from a testbench; each steps and ticks until its transfer is done (test_csr).

With ``p_valid`` / ``p_ready`` below 1 (drawn from ``seed``) AW+W and AR wait a random
number of cycles before they are offered, and BREADY / RREADY are random every cycle.
Every transfer is checked against the rules the slave must keep: AW and W are taken
together, a response holds (and does not change) until it is taken, no response comes
unasked, the response code is the expected one (OKAY unless the op says otherwise), and no
slave output follows a master output combinationally.
"""

import random

from flashnpu.hw.axi import RESP_OKAY

__all__ = ["LiteHost"]


class LiteHost:
    """AXI4-Lite master: runs its ops one at a time; one ``step`` per cycle."""

    def __init__(self, bus=None, *, seed=0, p_valid=1.0, p_ready=1.0, check_comb=True):
        self.bus = bus
        self.rng = random.Random(seed)
        self.p_valid = p_valid
        self.p_ready = p_ready
        self.check_comb = check_comb
        self.ops = []
        self.reads = []        # rdata of every completed read, in order
        self.resps = []        # (kind, addr, resp) of every completed transfer
        self.cur = None
        self.phase = None      # "wait" (valid not yet offered), "addr", "resp"
        self.held = None       # the response seen without ready, which must hold
        self._outs = None

    # ------------------------------------------------------------------ stepped
    @staticmethod
    def _op(op):
        """("w", addr, data[, strb[, resp]]) or ("r", addr[, resp]) -> (kind, addr, data, strb, resp)."""
        if op[0] == "w":
            _, addr, data, *rest = op
            strb = rest[0] if len(rest) > 0 else 0xF
            resp = rest[1] if len(rest) > 1 else RESP_OKAY
            return ("w", addr, data, strb, resp)
        assert op[0] == "r", op
        _, addr, *rest = op
        return ("r", addr, 0, 0, rest[0] if rest else RESP_OKAY)

    def step(self, ctx, bus=None):
        bus = bus if bus is not None else self.bus
        if self._outs is None:
            # The slave's outputs: the Out members of its (slave-side) interface.
            self._outs = [getattr(bus, n) for n, mb in bus.signature.members.items() if mb.flow.name == "Out"]
        rng = self.rng
        if self.cur is None and self.ops:
            self.cur = self._op(self.ops.pop(0))
            self.phase = "wait"
            self.held = None
        op = self.cur
        if op is not None and self.phase == "wait" and (self.p_valid >= 1 or rng.random() < self.p_valid):
            self.phase = "addr"
        ready = self.p_ready >= 1 or rng.random() < self.p_ready
        is_w = op is not None and op[0] == "w"
        offer = op is not None and self.phase == "addr"

        before = [ctx.get(s) for s in self._outs] if self.check_comb else None
        ctx.set(bus.bready, ready)
        ctx.set(bus.rready, ready)
        ctx.set(bus.awvalid, offer and is_w)
        ctx.set(bus.wvalid, offer and is_w)
        ctx.set(bus.arvalid, offer and not is_w)
        if op is not None:
            if is_w:
                ctx.set(bus.awaddr, op[1])
                ctx.set(bus.wdata, op[2])
                ctx.set(bus.wstrb, op[3])
            else:
                ctx.set(bus.araddr, op[1])
        if self.check_comb:
            assert [ctx.get(s) for s in self._outs] == before, \
                "combinational path from an AXI-Lite master output to a slave output"

        bvalid, rvalid = ctx.get(bus.bvalid), ctx.get(bus.rvalid)
        waiting = op is not None and self.phase == "resp"
        assert not bvalid or (waiting and is_w), "BVALID without an outstanding write"
        assert not rvalid or (waiting and not is_w), "RVALID without an outstanding read"
        if op is None:
            return
        if self.phase == "addr":
            if is_w:
                awready, wready = ctx.get(bus.awready), ctx.get(bus.wready)
                assert awready == wready, "AW and W are taken in the same cycle"
                if awready:
                    self.phase = "resp"
            elif ctx.get(bus.arready):
                self.phase = "resp"
        elif self.phase == "resp":
            valid = bvalid if is_w else rvalid
            payload = (ctx.get(bus.bresp),) if is_w else (ctx.get(bus.rresp), ctx.get(bus.rdata))
            if self.held is not None:
                assert valid, f"{'B' if is_w else 'R'}VALID dropped before {'B' if is_w else 'R'}READY"
                assert payload == self.held, f"response changed while waiting for ready: {self.held} -> {payload}"
            if valid and ready:
                resp = payload[0]
                if op[4] is not None:
                    assert resp == op[4], f"{op[0]} {op[1]:#x}: resp {resp}, expected {op[4]}"
                self.resps.append((op[0], op[1], resp))
                if not is_w:
                    self.reads.append(payload[1])
                self.cur = None
            elif valid:
                self.held = payload

    @property
    def idle(self):
        return self.cur is None and not self.ops

    # ------------------------------------------------------------------ awaited
    async def drain(self, ctx, *, max_cycles=1000):
        """Step and tick until every queued op is done."""
        for _ in range(max_cycles):
            if self.idle:
                return
            self.step(ctx)
            await ctx.tick()
        raise AssertionError(f"AXI-Lite transfer not done after {max_cycles} cycles")

    async def write(self, ctx, addr, data, strb=0xF, *, resp=RESP_OKAY):
        """One write; returns its BRESP (checked to be ``resp`` unless that is None)."""
        self.ops.append(("w", addr, data, strb, resp))
        await self.drain(ctx)
        return self.resps[-1][2]

    async def read(self, ctx, addr, *, resp=RESP_OKAY):
        """One read; returns RDATA (RRESP checked to be ``resp`` unless that is None)."""
        self.ops.append(("r", addr, resp))
        await self.drain(ctx)
        return self.reads[-1]
