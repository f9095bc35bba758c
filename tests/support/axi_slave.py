"""The test-side AXI4 slave memory model (Python, driven from Amaranth's simulator).

Random latency and backpressure, read bursts of different IDs out of order and
interleaved, every burst checked against the AXI rules (4 KiB, length, INCR,
size, wlast), SLVERR/DECERR for chosen address ranges.
"""

import random

__all__ = ["Slave"]


class Slave:
    """AXI4 slave memory with random timing; one ``step`` per clock cycle."""

    def __init__(self, cfg, *, seed=1, lat=(0, 0), p_ready=1.0, p_rvalid=1.0, reorder=False,
                 rd_err=(), wr_err=(), size=1 << 16):
        self.cfg = cfg
        self.beat = cfg.dma_beat_bytes
        self.rng = random.Random(seed)
        self.lat = lat
        self.p_ready = p_ready
        self.p_rvalid = p_rvalid
        self.reorder = reorder
        self.rd_err = rd_err   # (lo, hi, resp): reads of bytes in [lo, hi) answer resp
        self.wr_err = wr_err
        self.mem = bytearray(self.rng.randrange(256) for _ in range(size))
        self.ar_log, self.aw_log = [], []
        self.pending_r = []    # [ready_cycle, id, addr, beats_left, first]
        self.r_cur = None
        self.aw_q, self.w_q, self.b_q = [], [], []
        self.b_cur = None
        self.max_r_in_flight = 0
        self.errors = []

    def _resp(self, regions, addr):
        for lo, hi, resp in regions:
            if lo <= addr < hi:
                return resp
        return 0

    def _check_burst(self, kind, addr, length, size, burst):
        beats = length + 1
        if size != self.beat.bit_length() - 1:
            self.errors.append(f"{kind} size {size}")
        if burst != 1:
            self.errors.append(f"{kind} burst type {burst}")
        if addr % self.beat:
            self.errors.append(f"{kind} unaligned {addr:#x}")
        if addr // 4096 != (addr + beats * self.beat - 1) // 4096:
            self.errors.append(f"{kind} crosses 4 KiB: {addr:#x} + {beats} beats")
        if beats > self.cfg.dma_burst_len:
            self.errors.append(f"{kind} too long: {beats}")

    async def step(self, ctx, dut, now):
        axi = dut.m_axi
        rng = self.rng
        outs = [getattr(axi, n) for n, mb in axi.signature.members.items() if mb.flow.name == "Out"]
        before = [ctx.get(s) for s in outs]
        # ---- drive this cycle's slave outputs
        arready = rng.random() < self.p_ready
        awready = rng.random() < self.p_ready
        wready = rng.random() < self.p_ready
        ctx.set(axi.arready, arready)
        ctx.set(axi.awready, awready)
        ctx.set(axi.wready, wready)
        # R: keep the current beat until taken (rready is always 1 but check anyway).
        if self.r_cur is None and rng.random() < self.p_rvalid:
            # Same-ID bursts answer in order: only the oldest of each ID is eligible.
            firsts, seen = [], set()
            for p in self.pending_r:
                if p[1] not in seen:
                    seen.add(p[1])
                    if p[0] <= now:
                        firsts.append(p)
            if firsts:
                p = rng.choice(firsts) if self.reorder else firsts[0]
                if p is not self.pending_r[0] and not self.reorder:
                    p = None
                if p is not None:
                    addr = p[2]
                    data = int.from_bytes(self.mem[addr:addr + self.beat], "little")
                    resp = self._resp(self.rd_err, addr)
                    last = p[3] == 1
                    self.r_cur = (p[1], data, resp, last)
                    p[2] += self.beat
                    p[3] -= 1
                    if last:
                        self.pending_r.remove(p)
        if self.r_cur is not None:
            rid, data, resp, last = self.r_cur
            ctx.set(axi.rvalid, 1)
            ctx.set(axi.rid, rid)
            ctx.set(axi.rdata, data)
            ctx.set(axi.rresp, resp)
            ctx.set(axi.rlast, last)
        else:
            ctx.set(axi.rvalid, 0)
        if self.b_cur is None and self.b_q and self.b_q[0][0] <= now:
            self.b_cur = self.b_q.pop(0)
        if self.b_cur is not None:
            ctx.set(axi.bvalid, 1)
            ctx.set(axi.bid, self.b_cur[1])
            ctx.set(axi.bresp, self.b_cur[2])
        else:
            ctx.set(axi.bvalid, 0)

        # No combinational path from an AXI input to an AXI output.
        assert [ctx.get(s) for s in outs] == before
        # ---- sample the master; these are the handshakes at the coming edge
        if ctx.get(axi.arvalid) and arready:
            a = (ctx.get(axi.arid), ctx.get(axi.araddr), ctx.get(axi.arlen))
            self._check_burst("AR", a[1], a[2], ctx.get(axi.arsize), ctx.get(axi.arburst))
            self.ar_log.append((now,) + a)
            self.pending_r.append([now + 1 + rng.randint(*self.lat), a[0], a[1], a[2] + 1])
            self.max_r_in_flight = max(self.max_r_in_flight, len({p[1] for p in self.pending_r}))
        if self.r_cur is not None and ctx.get(axi.rready):
            self.r_cur = None
        if ctx.get(axi.awvalid) and awready:
            a = (ctx.get(axi.awid), ctx.get(axi.awaddr), ctx.get(axi.awlen))
            self._check_burst("AW", a[1], a[2], ctx.get(axi.awsize), ctx.get(axi.awburst))
            self.aw_log.append((now,) + a)
            self.aw_q.append(list(a))
        if ctx.get(axi.wvalid) and wready:
            self.w_q.append((ctx.get(axi.wdata), ctx.get(axi.wstrb), ctx.get(axi.wlast)))
        if self.b_cur is not None and ctx.get(axi.bready):
            self.b_cur = None
        # A write burst completes once its address and all its data are here.
        while self.aw_q and len(self.w_q) >= self.aw_q[0][2] + 1:
            wid, addr, length = self.aw_q.pop(0)
            beats, self.w_q = self.w_q[:length + 1], self.w_q[length + 1:]
            resp = 0
            for k, (data, strb, last) in enumerate(beats):
                if last != (k == length):
                    self.errors.append(f"wlast {last} on beat {k} of {length + 1}")
                if strb != (1 << self.beat) - 1:
                    self.errors.append(f"wstrb {strb:#x}")
                a = addr + k * self.beat
                r = self._resp(self.wr_err, a)
                resp = max(resp, r)
                if r == 0:
                    self.mem[a:a + self.beat] = data.to_bytes(self.beat, "little")
            self.b_q.append((now + 1 + rng.randint(*self.lat), wid, resp))
