"""A fast simulated DRAM: an AXI4 slave in HDL with the "ideal slave" timing of docs/dma.md.

cocotbext-axi's ``AxiRam`` moves about 16k-18k beats/s because every beat is a
Python coroutine step; this memory lives in the Verilated model, so a beat
costs one simulated clock. The testbench loads and reads the image through a
backdoor port, one word per clock. Simulation only (not part of the NPU), hence
``cosim/``. See ``docs/axi_memory.md``.

``AxiMemory`` holds the word array, the cycle counter, the SLVERR window and the backdoor,
and composes the read side (``cosim/axi_memory_read.py``: AR queue, R) and the write side
(``cosim/axi_memory_write.py``: AW and W queues, writes, B), which meet the AXI channels as
``lib.stream`` streams; what they share is in ``cosim/axi_memory_common.py``.
"""

import operator
from types import SimpleNamespace

from amaranth import *
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from flashnpu.cosim.axi_memory_common import STAMP_BITS, Geometry, window_layout
from flashnpu.cosim.axi_memory_read import AxiMemoryRead
from flashnpu.cosim.axi_memory_write import AxiMemoryWrite
from flashnpu.hw.axi import AXI4LiteSignature, AXI4Signature
from flashnpu.spec.memory_timing import MemoryTiming, memory_timing_for

__all__ = ["AxiMemory", "SimTop", "STORAGE_MODULE", "STORAGE_VERILOG", "with_storage",
           "sim_top_verilog"]

#: Verilog module of the word array when ``storage="verilog"``.
STORAGE_MODULE = "flashnpu_dram_storage"

# Amaranth writes one initial statement per memory word (and builds the whole
# init value bit by bit first), so a 16 MiB lib.memory.Memory takes many
# minutes to convert and gives a Verilog file of a million lines. This module
# is the same array (non-transparent sync reads, byte-enable write port, a
# full-word backdoor write port), zeroed by one loop.
STORAGE_VERILOG = f"""
module {STORAGE_MODULE} #(parameter WIDTH = 32, parameter DEPTH = 1024, parameter ABITS = 10) (
  input clk,
  input [ABITS-1:0] ra_addr, input ra_en, output reg [WIDTH-1:0] ra_data,
  input [ABITS-1:0] rb_addr, output reg [WIDTH-1:0] rb_data,
  input [ABITS-1:0] wa_addr, input [WIDTH/8-1:0] wa_en, input [WIDTH-1:0] wa_data,
  input [ABITS-1:0] wb_addr, input wb_en, input [WIDTH-1:0] wb_data
);
  reg [WIDTH-1:0] mem [0:DEPTH-1];
  wire [WIDTH-1:0] wa_mask;
  genvar g;
  generate
    for (g = 0; g < WIDTH/8; g = g + 1) begin : lanes
      assign wa_mask[g*8 +: 8] = {{8{{wa_en[g]}}}};
    end
  endgenerate
  integer i;
  initial begin
    for (i = 0; i < DEPTH; i = i + 1) mem[i] = {{WIDTH{{1'b0}}}};
    ra_data = {{WIDTH{{1'b0}}}};
    rb_data = {{WIDTH{{1'b0}}}};
  end
  always @(posedge clk) begin
    if (ra_en) ra_data <= mem[ra_addr];
    rb_data <= mem[rb_addr];
    if (|wa_en) mem[wa_addr] <= (mem[wa_addr] & ~wa_mask) | (wa_data & wa_mask);
    if (wb_en) mem[wb_addr] <= wb_data;
  end
endmodule
"""


def with_storage(verilog_text):
    """``verilog_text`` with the storage module appended (for designs holding ``AxiMemory(storage="verilog")``)."""
    return verilog_text + STORAGE_VERILOG


class AxiMemory(wiring.Component):
    """Serve AXI4 INCR bursts from a memory with a fixed latency, as the ideal slave of docs/dma.md.

    A read burst whose AR handshake is in cycle ``h`` has its first beat on R in
    cycle ``h + 1 + lat`` (later if R is still busy with earlier bursts), then
    one beat per cycle while ``rready``; bursts answer in AR order. A write
    burst whose last W handshake is in cycle ``w`` has its B in cycle
    ``w + 1 + lat`` (later if B is busy, or if its AW came after its data).
    ``arready``, ``awready`` and ``wready`` are high unless their queue of
    ``queue_depth`` entries is full (never, for a master that takes R and B
    at once and keeps fewer than ``queue_depth`` bursts outstanding).

    Beats at byte addresses ``>= size_bytes`` answer DECERR; beats in
    ``[slverr_base, slverr_base + slverr_size)`` answer SLVERR. An error beat
    reads 0 and is not written. ``arsize``/``awsize`` and the burst type are
    not looked at: every burst is INCR with full beats (what the DMA issues).

    Parameters
    ----------
    addr_width, data_width, id_width : int
        The AXI4 widths (``AXI4Signature``).
    size_bytes : int
        Memory size; a multiple of the beat (``data_width // 8``).
    lat : int
        Latency as in the ideal slave model; at least 1.
    queue_depth : int
        Entries of the AR, AW, W and B queues.
    r_gap_every : int
        0, or ``k >= 2``: one cycle without an R beat after every ``k - 1`` beats of a burst
        (``spec/memory_timing.py``, which also checks these three numbers).
    slverr_base, slverr_size : int
        Initial SLVERR window (empty by default); the backdoor can change it.
    storage : str
        ``"memory"``: the words are a ``lib.memory.Memory`` (Amaranth's
        simulator, small Verilog). ``"verilog"``: an instance of
        :data:`STORAGE_MODULE`, whose text :func:`with_storage` appends to the
        converted Verilog (fast to convert at any size; Verilator only).

    Members
    -------
    axi : In(AXI4Signature)
        The slave port. R and B outputs are registers; ``rdata`` is the
        memory read port (zeroed for error beats).
    bd_addr : In(range(depth))
        Backdoor word index (``depth = size_bytes // beat``).
    bd_wdata, bd_we : In
        Backdoor write: ``bd_wdata`` is stored at ``bd_addr`` at the clock edge
        when ``bd_we``. Only while no AXI write touches the same word.
    bd_rdata : Out
        The word at the ``bd_addr`` of the previous cycle.
    bd_slverr_we, bd_slverr_base, bd_slverr_size : In
        Set the SLVERR window at the clock edge when ``bd_slverr_we``.
    """

    def __init__(self, *, addr_width, data_width, id_width, size_bytes, lat, queue_depth=16,
                 r_gap_every=0, slverr_base=0, slverr_size=0, storage="memory"):
        sig = AXI4Signature(addr_width=addr_width, data_width=data_width, id_width=id_width)
        beat = data_width // 8
        size_bytes = operator.index(size_bytes)
        if size_bytes <= 0 or size_bytes % beat or size_bytes > 1 << addr_width:
            raise ValueError(f"size_bytes must be a positive multiple of the beat ({beat} B) "
                             f"of at most 2**addr_width, not {size_bytes}")
        lat, queue_depth, r_gap_every = (operator.index(v) for v in (lat, queue_depth, r_gap_every))
        MemoryTiming(lat=lat, queue_depth=queue_depth, r_gap_every=r_gap_every)     # checks them
        for name, v in (("slverr_base", slverr_base), ("slverr_size", slverr_size)):
            if not 0 <= v < 1 << addr_width:
                raise ValueError(f"{name} must be between 0 and 2**addr_width - 1, not {v}")
        if storage not in ("memory", "verilog"):
            raise ValueError(f"storage must be 'memory' or 'verilog', not {storage!r}")
        self._storage_kind = storage
        self._geo = Geometry(addr_width=addr_width, data_width=data_width, id_width=id_width,
                             size_bytes=size_bytes)
        self._size = size_bytes
        self._depth = self._geo.depth
        self._lat = lat
        self._qdepth = queue_depth
        self._gap_every = r_gap_every
        self._slverr = (slverr_base, slverr_size)
        self._data = (memory.MemoryData(shape=unsigned(data_width), depth=self._depth, init=[])
                      if storage == "memory" else None)
        super().__init__({
            "axi": In(sig),
            "bd_addr": In(range(self._depth)),
            "bd_wdata": In(data_width),
            "bd_we": In(1),
            "bd_rdata": Out(data_width),
            "bd_slverr_we": In(1),
            "bd_slverr_base": In(addr_width),
            "bd_slverr_size": In(addr_width),
        })

    @property
    def size_bytes(self):
        return self._size

    @property
    def depth(self):
        """Memory words (beats)."""
        return self._depth

    @property
    def lat(self):
        return self._lat

    @property
    def memory_data(self):
        """The words (``MemoryData``, for ``ctx.get``/``ctx.set`` in Amaranth's simulator); None for Verilog storage."""
        return self._data

    def elaborate(self, platform):
        m = Module()
        axi, geo = self.axi, self._geo
        rd_side = m.submodules.read = AxiMemoryRead(geo, lat=self._lat, queue_depth=self._qdepth,
                                                    r_gap_every=self._gap_every)
        wr_side = m.submodules.write = AxiMemoryWrite(geo, lat=self._lat, queue_depth=self._qdepth)

        now = Signal(STAMP_BITS)
        m.d.sync += now.eq(now + 1)
        window = Signal(window_layout(geo), init={"base": self._slverr[0], "size": self._slverr[1]})
        with m.If(self.bd_slverr_we):
            m.d.sync += [window.base.eq(self.bd_slverr_base), window.size.eq(self.bd_slverr_size)]
        for side in (rd_side, wr_side):
            m.d.comb += [side.now.eq(now), side.window.eq(window)]

        rd, wr, bd_rd, bd_wr = self._storage(m, geo.data_width)
        for side, port in ((rd_side.mem, rd), (wr_side.mem, wr)):
            m.d.comb += [port.addr.eq(side.addr), port.en.eq(side.en)]
        m.d.comb += [rd_side.mem.data.eq(rd.data), wr.data.eq(wr_side.mem.data)]
        m.d.comb += [bd_rd.addr.eq(self.bd_addr), bd_rd.en.eq(1), self.bd_rdata.eq(bd_rd.data),
                     bd_wr.addr.eq(self.bd_addr), bd_wr.data.eq(self.bd_wdata),
                     bd_wr.en.eq(self.bd_we)]

        # The AXI channels as streams (AR, AW: id, addr, len; W: data, strb; R, B).
        for ch, stream_in in (("ar", rd_side.ar), ("aw", wr_side.aw)):
            m.d.comb += [stream_in.valid.eq(getattr(axi, f"{ch}valid")),
                         getattr(axi, f"{ch}ready").eq(stream_in.ready)]
            for field in ("id", "addr", "len"):
                m.d.comb += getattr(stream_in.payload, field).eq(getattr(axi, ch + field))
        m.d.comb += [wr_side.w.valid.eq(axi.wvalid), axi.wready.eq(wr_side.w.ready),
                     wr_side.w.payload.data.eq(axi.wdata), wr_side.w.payload.strb.eq(axi.wstrb)]
        r, b = rd_side.r, wr_side.b
        m.d.comb += [axi.rvalid.eq(r.valid), r.ready.eq(axi.rready), axi.rid.eq(r.payload.id),
                     axi.rdata.eq(r.payload.data), axi.rresp.eq(r.payload.resp), axi.rlast.eq(r.payload.last),
                     axi.bvalid.eq(b.valid), b.ready.eq(axi.bready), axi.bid.eq(b.payload.id),
                     axi.bresp.eq(b.payload.resp)]
        return m

    def _storage(self, m, bb):
        """The word array's ports: AXI read (sync, ``en``), AXI write (byte enables), backdoor read and write."""
        if self._storage_kind == "memory":
            mem = m.submodules.mem = memory.Memory(data=self._data)
            return mem.read_port(), mem.write_port(granularity=8), mem.read_port(), mem.write_port()
        abits = self._geo.index_bits
        ports = [
            SimpleNamespace(addr=Signal(abits, name="ra_addr"), en=Signal(name="ra_en"),
                            data=Signal(bb, name="ra_data")),
            SimpleNamespace(addr=Signal(abits, name="wa_addr"), en=Signal(bb // 8, name="wa_en"),
                            data=Signal(bb, name="wa_data")),
            SimpleNamespace(addr=Signal(abits, name="rb_addr"), en=Signal(name="rb_en"),
                            data=Signal(bb, name="rb_data")),
            SimpleNamespace(addr=Signal(abits, name="wb_addr"), en=Signal(name="wb_en"),
                            data=Signal(bb, name="wb_data")),
        ]
        ra, wa, rb, wb = ports
        m.submodules.mem = Instance(
            STORAGE_MODULE, p_WIDTH=bb, p_DEPTH=self._depth, p_ABITS=abits,
            i_clk=ClockSignal(),
            i_ra_addr=ra.addr, i_ra_en=ra.en, o_ra_data=ra.data,
            i_rb_addr=rb.addr, o_rb_data=rb.data,
            i_wa_addr=wa.addr, i_wa_en=wa.en, i_wa_data=wa.data,
            i_wb_addr=wb.addr, i_wb_en=wb.en, i_wb_data=wb.data)
        return ports


class SimTop(wiring.Component):
    """Wrap the NPU and an ``AxiMemory`` as its DRAM: the top level for co-simulation.

    Parameters
    ----------
    config : NPUConfig
        The NPU's configuration; the memory takes its AXI widths.
    mem_bytes : int
        DRAM size.
    lat : int
        DRAM latency (``AxiMemory``); or give ``memory_timing``.
    memory_timing : MemoryTiming
        The memory's whole timing (``spec/memory_timing.py``: latency, queue depth, R gaps), the
        description the performance model reads too.
    slverr_base, slverr_size : int
        Initial SLVERR window of the memory.
    storage : str
        The memory's ``storage``; ``"verilog"`` by default (a SimTop is for
        Verilator), so convert with :func:`sim_top_verilog` or :func:`with_storage`.

    Members
    -------
    s_axil : In(AXI4LiteSignature(addr_width=8))
        The NPU's register port, for the host (Verilog ``s_axil__awaddr`` ...).
    irq : Out(1)
        The NPU's interrupt.
    bd_* :
        The memory's backdoor port (see ``AxiMemory``).
    npu : NPU
        The NPU inside (testbenches read its internal signals).
    """

    def __init__(self, config, *, mem_bytes, lat=None, memory_timing=None, slverr_base=0, slverr_size=0,
                 storage="verilog"):
        # Imported here: the simulation memory does not need the NPU to exist.
        from flashnpu.hw.npu import NPU
        if lat is None and memory_timing is None:
            raise ValueError("give lat or memory_timing")
        mt = memory_timing_for(config, lat, memory_timing)
        self._npu = NPU(config)
        self._mem = AxiMemory(addr_width=config.axi_addr_bits, data_width=config.dma_data_bits,
                              id_width=config.axi_id_bits, size_bytes=mem_bytes, lat=mt.lat,
                              queue_depth=mt.queue_depth, r_gap_every=mt.r_gap_every,
                              slverr_base=slverr_base, slverr_size=slverr_size, storage=storage)
        mem_sig = self._mem.signature.members
        super().__init__({
            "s_axil": In(AXI4LiteSignature(addr_width=8)),
            "irq": Out(1),
            **{name: mem_sig[name] for name in mem_sig if name.startswith("bd_")},
        })

    @property
    def dram(self):
        """The ``AxiMemory`` (its ``memory_data`` serves Amaranth testbenches with ``storage="memory"``)."""
        return self._mem

    @property
    def npu(self):
        """The NPU (for testbenches that watch its units)."""
        return self._npu

    def elaborate(self, platform):
        m = Module()
        npu = m.submodules.npu = self._npu
        mem = m.submodules.dram = self._mem
        wiring.connect(m, npu.m_axi, mem.axi)
        wiring.connect(m, wiring.flipped(self.s_axil), npu.s_axil)
        m.d.comb += self.irq.eq(npu.irq)
        for name in self.signature.members:
            if name.startswith("bd_"):
                if self.signature.members[name].flow == wiring.In:
                    m.d.comb += getattr(mem, name).eq(getattr(self, name))
                else:
                    m.d.comb += getattr(self, name).eq(getattr(mem, name))
        return m


def sim_top_verilog(config, *, mem_bytes, lat=None, name="sim_top", **kwargs):
    """The Verilog of ``SimTop(config, mem_bytes=..., lat=..., **kwargs)`` (top module ``name``), storage
    included, for Verilator: its reset input goes through a register (``cosim/registered_reset.py``)."""
    from flashnpu.cosim.registered_reset import RegisteredReset
    from flashnpu.cosim.verilog import to_verilog
    top = RegisteredReset(SimTop(config, mem_bytes=mem_bytes, lat=lat, **kwargs))
    return with_storage(to_verilog(top, name))
