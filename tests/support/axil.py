"""The test-side AXI4-Lite host, one ``step`` per clock cycle (test_npu, test_perfmodel, test_axi_memory)."""

__all__ = ["LiteHost"]


class LiteHost:
    """AXI4-Lite master: runs a list of ("w", addr, data) / ("r", addr) one at a time; one ``step`` per cycle."""

    def __init__(self):
        self.ops = []
        self.reads = []
        self.cur = None
        self.phase = None

    def step(self, ctx, bus):
        if self.cur is None and self.ops:
            self.cur = self.ops.pop(0)
            self.phase = "addr"
        op = self.cur
        ctx.set(bus.bready, 1)
        ctx.set(bus.rready, 1)
        ctx.set(bus.awvalid, bool(op) and op[0] == "w" and self.phase == "addr")
        ctx.set(bus.wvalid, bool(op) and op[0] == "w" and self.phase == "addr")
        ctx.set(bus.arvalid, bool(op) and op[0] == "r" and self.phase == "addr")
        if op is None:
            return
        if op[0] == "w":
            ctx.set(bus.awaddr, op[1])
            ctx.set(bus.wdata, op[2])
            ctx.set(bus.wstrb, 0xF)
            if self.phase == "addr" and ctx.get(bus.awready):
                assert ctx.get(bus.wready)
                self.phase = "resp"
            elif self.phase == "resp" and ctx.get(bus.bvalid):
                assert ctx.get(bus.bresp) == 0
                self.cur = None
        else:
            ctx.set(bus.araddr, op[1])
            if self.phase == "addr" and ctx.get(bus.arready):
                self.phase = "resp"
            elif self.phase == "resp" and ctx.get(bus.rvalid):
                assert ctx.get(bus.rresp) == 0
                self.reads.append(ctx.get(bus.rdata))
                self.cur = None

    @property
    def idle(self):
        return self.cur is None and not self.ops
