"""The DMA engine: LOAD and STORE instructions and instruction fetch over one AXI4 master.

The engine composes five blocks and owns the shared AXI read channel (the AR register
and its arbitration, the R register and the dispatch of R beats by ID):

* two :class:`~flashnpu.hw.dma_burst_planner.BurstPlanner` (reads, writes),
* :class:`~flashnpu.hw.dma_fetch.DmaFetch` (instruction fetch, read ID 0),
* :class:`~flashnpu.hw.dma_read_path.DmaReadPath` (LOAD, read IDs 1..read_slots),
* :class:`~flashnpu.hw.dma_write_path.DmaWritePath` (STORE: AW, W, B).

See ``docs/dma.md`` for the blocks and their streams, the burst rules, the IDs, the
error handling and the cycle model.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flashnpu.spec.timing import timing
from flashnpu.hw.axi import AXI4Signature, BURST_INCR
from flashnpu.hw.dma_burst_planner import BurstPlanner
from flashnpu.hw.dma_common import SRAM_ADDR_WIDTH, log2, r_beat_layout
from flashnpu.hw.dma_fetch import DmaFetch
from flashnpu.hw.dma_read_path import DmaReadPath
from flashnpu.hw.dma_write_path import DmaWritePath
from flashnpu.hw.signatures import FetchSignature, SramReadSignature, SramWriteSignature, UnitSignature

__all__ = ["DmaEngine"]


class DmaEngine(wiring.Component):
    """Execute LOAD and STORE instructions and serve instruction fetch over one AXI4 master.

    Parameters
    ----------
    config : NPUConfig
        Sets the AXI widths (``axi_addr_bits``, ``dma_data_bits``,
        ``axi_id_bits``), the burst length, the number of outstanding read
        bursts and the SRAM row widths (``dim`` bytes and ``4*dim`` bytes).
        ``timing(config)`` (``flashnpu.spec.timing``) gives the depths of its
        queues and the number of read slots.
    fetch_depth : int, optional
        Only a check: if given, it must equal ``timing(config).fetch_depth``
        (the fetch response FIFO depth and the sequencer's fetch limit).

    Attributes
    ----------
    m_axi : Out(AXI4Signature)
        The AXI4 master. Read ID 0 is instruction fetch; read IDs
        ``1..dma_max_outstanding`` are LOAD bursts, one per burst in flight.
        Writes use ID 0. ``rready`` and ``bready`` are always high; every other
        output is a register.
    load, store : In(UnitSignature)
        The LOAD and STORE units, as the sequencer sees them. A LOAD is taken
        as soon as the previous one has issued all its bursts (LOADs overlap);
        a STORE when the STORE unit is idle. ``done`` pulses once per
        instruction, in order, when its last SRAM row is written (LOAD) or its
        last write response has arrived (STORE); ``error`` holds an ErrorCode
        until reset, and a unit with an error takes no more instructions.
    fetch : In(FetchSignature)
        32-byte instruction reads, in order, up to ``timing(config).fetch_depth`` in flight.
    spad_wr, acc_wr : Out(SramWriteSignature)
        LOAD writes one full SRAM row per cycle at most.
    spad_rd, acc_rd : Out(SramReadSignature)
        STORE reads.
    bytes_read_inc, bytes_written_inc : Out(range(beat_bytes + 1))
        LOAD data bytes received on R / STORE data bytes sent on W this cycle.
    stop : In(1)
        Level: start no new AXI transaction (no AR, no AW); the transactions
        already started finish (every R beat is taken, the W beats of every
        AW issued are sent, every B is taken). For an abort; a reset follows.
    bus_busy : Out(1)
        An AXI transaction is outstanding or being offered (a request not yet
        taken, R beats or B responses still due, W beats still to send).
    """

    def __init__(self, config, *, fetch_depth=None):
        if fetch_depth is not None and fetch_depth != timing(config).fetch_depth:
            raise ValueError(f"fetch_depth {fetch_depth} != timing(config).fetch_depth "
                             f"{timing(config).fetch_depth}: set the config's fetch_depth")
        self._cfg = config
        dim = config.dim
        beat = config.dma_beat_bytes
        super().__init__({
            "m_axi": Out(AXI4Signature(addr_width=config.axi_addr_bits,
                                       data_width=config.dma_data_bits,
                                       id_width=config.axi_id_bits)),
            "load": In(UnitSignature()),
            "store": In(UnitSignature()),
            "fetch": In(FetchSignature()),
            "spad_wr": Out(SramWriteSignature(addr_width=SRAM_ADDR_WIDTH, data_width=dim * 8)),
            "acc_wr": Out(SramWriteSignature(addr_width=SRAM_ADDR_WIDTH, data_width=dim * 32)),
            "spad_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=dim * 8)),
            "acc_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=dim * 32)),
            "bytes_read_inc": Out(range(beat + 1)),
            "bytes_written_inc": Out(range(beat + 1)),
            "stop": In(1),
            "bus_busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        axi = self.m_axi
        beat = cfg.dma_beat_bytes
        n_slots = timing(cfg).read_slots
        m.submodules.rplan = rplan = BurstPlanner(cfg)
        m.submodules.wplan = wplan = BurstPlanner(cfg)
        m.submodules.fetch = fetch = DmaFetch(cfg)
        m.submodules.read = read = DmaReadPath(cfg)
        m.submodules.write = write = DmaWritePath(cfg)

        wiring.connect(m, read.plan, rplan.port)
        wiring.connect(m, write.plan, wplan.port)
        wiring.connect(m, wiring.flipped(self.fetch), fetch.fetch)
        wiring.connect(m, wiring.flipped(self.load), read.load)
        wiring.connect(m, wiring.flipped(self.store), write.store)
        for name, path in (("spad_wr", read), ("acc_wr", read), ("spad_rd", write), ("acc_rd", write)):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(path, name))
        m.d.comb += [fetch.stop.eq(self.stop), read.stop.eq(self.stop), write.stop.eq(self.stop)]

        # ------------------------------------------------------------ constants
        m.d.comb += [
            axi.arsize.eq(log2(beat)), axi.arburst.eq(BURST_INCR),
            axi.awsize.eq(log2(beat)), axi.awburst.eq(BURST_INCR),
            axi.arcache.eq(0b0011), axi.awcache.eq(0b0011),
            axi.awid.eq(0), axi.wstrb.eq(~0),
            # Every R and B beat is accepted at once: the read reorder buffer
            # always has room for what was requested, and B needs no storage.
            axi.rready.eq(1), axi.bready.eq(1),
        ]

        # ---------------------------------------------------------- AR channel
        # One AR register for both readers. Fetch first: the sequencer waits on it, and it is short.
        ar_free = Signal()
        m.d.comb += [ar_free.eq(~axi.arvalid | axi.arready),
                     fetch.ar.ready.eq(ar_free), read.ar.ready.eq(ar_free & ~fetch.ar.valid)]
        def load_ar(req):
            return [axi.arvalid.eq(1), axi.arid.eq(req.id), axi.araddr.eq(req.addr),
                    axi.arlen.eq(req.len)]
        with m.If(ar_free):
            with m.If(fetch.ar.valid):
                m.d.sync += load_ar(fetch.ar.payload)
            with m.Elif(read.ar.valid):
                m.d.sync += load_ar(read.ar.payload)
            with m.Else():
                m.d.sync += axi.arvalid.eq(0)

        # ----------------------------------------------------------- R channel
        # Registered before anything looks at it, then dispatched by ID: 0 is fetch.
        r_valid = Signal()
        r_beat = Signal(r_beat_layout(cfg))
        m.d.sync += [r_valid.eq(axi.rvalid), r_beat.id.eq(axi.rid), r_beat.data.eq(axi.rdata),
                     r_beat.resp.eq(axi.rresp), r_beat.last.eq(axi.rlast)]
        # (with every ID in use, "id <= n_slots" is always true: Verilator's CMPCONST)
        id_in_use = (r_beat.id <= n_slots) if n_slots < (1 << cfg.axi_id_bits) - 1 else C(1)
        m.d.comb += [fetch.r.valid.eq(r_valid & (r_beat.id == 0)), fetch.r.payload.eq(r_beat),
                     read.r.valid.eq(r_valid & (r_beat.id != 0) & id_in_use),
                     read.r.payload.eq(r_beat),
                     self.bytes_read_inc.eq(Mux(read.r.valid, beat, 0))]

        # ------------------------------------------------ AW, W, B: the write path's
        m.d.comb += [
            axi.awvalid.eq(write.aw.valid), axi.awaddr.eq(write.aw.payload.addr),
            axi.awlen.eq(write.aw.payload.len), write.aw.ready.eq(axi.awready),
            axi.wvalid.eq(write.w.valid), axi.wdata.eq(write.w.payload.data),
            axi.wlast.eq(write.w.payload.last), write.w.ready.eq(axi.wready),
            write.b.valid.eq(axi.bvalid), write.b.payload.resp.eq(axi.bresp),
            self.bytes_written_inc.eq(Mux(axi.wvalid & axi.wready, beat, 0)),
        ]

        m.d.comb += self.bus_busy.eq(axi.arvalid | read.bus_busy | fetch.busy | r_valid
                                     | write.bus_busy)
        return m
