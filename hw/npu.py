"""The NPU top: host registers, sequencer, DMA engine, matrix and vector units, two SRAMs.

See ``docs/sequencer.md`` ("Top level") for the block diagram and the reset
behaviour.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flashnpu.hw.axi import AXI4LiteSignature, AXI4Signature
from flashnpu.hw.csr import ControlRegisters
from flashnpu.hw.dma_engine import DmaEngine
from flashnpu.hw.matrix_unit import MatrixUnit
from flashnpu.hw.sequencer import Sequencer
from flashnpu.hw.sram import BankedSram
from flashnpu.hw.stop_control import StopControl
from flashnpu.hw.vector_unit import VectorUnit
from flashnpu.spec.isa import Queue

__all__ = ["NPU", "SPAD_PORTS", "ACC_PORTS"]

#: (read ports, write ports) of the scratchpad and the accumulator, by client.
SPAD_PORTS = (("matrix_a", "matrix_w", "store"), ("load", "vector"))
ACC_PORTS = (("matrix", "matrix_a", "vector", "store"), ("load", "matrix", "vector"))


class NPU(wiring.Component):
    """The whole NPU, with an AXI4 master to DRAM and an AXI4-Lite slave for the host.

    Parameters
    ----------
    config : NPUConfig

    Members
    -------
    m_axi : Out(AXI4Signature(addr_width=axi_addr_bits, data_width=dma_data_bits, id_width=axi_id_bits))
        DRAM: instruction fetch (read ID 0), LOAD bursts, STORE bursts.
    s_axil : In(AXI4LiteSignature(addr_width=8))
        The registers of ``spec/regmap.py``.
    irq : Out(1)
        Level: the program finished (``done``) or stopped with an error
        (``ABORTED`` included); cleared by the next ``START`` or by ``SOFT_RESET``.

    Attributes
    ----------
    csr, seq, dma, matrix, vector, spad, acc
        The blocks (for test benches).
    """

    def __init__(self, config):
        self._cfg = config
        super().__init__({
            "m_axi": Out(AXI4Signature(addr_width=config.axi_addr_bits, data_width=config.dma_data_bits,
                                       id_width=config.axi_id_bits)),
            "s_axil": In(AXI4LiteSignature(addr_width=8)),
            "irq": Out(1),
        })
        cfg = config
        dim = cfg.dim
        self.csr = ControlRegisters(cfg)
        self.stop = StopControl()
        self.seq = Sequencer(cfg)
        self.dma = DmaEngine(cfg)   # depths from timing(cfg), as the sequencer's
        self.matrix = MatrixUnit(cfg)
        self.vector = VectorUnit(cfg)
        self.spad = BankedSram(rows=cfg.spad_rows, banks=cfg.spad_banks, width=8 * dim,
                               read_ports=SPAD_PORTS[0], write_ports=SPAD_PORTS[1])
        self.acc = BankedSram(rows=cfg.acc_rows, banks=cfg.acc_banks, width=32 * dim,
                              read_ports=ACC_PORTS[0], write_ports=ACC_PORTS[1])

    def elaborate(self, platform):
        m = Module()
        csr, seq, dma, mu, vu, spad, acc = (self.csr, self.seq, self.dma, self.matrix, self.vector,
                                             self.spad, self.acc)
        m.submodules.csr = csr
        m.submodules.stop = stop = self.stop
        # SOFT_RESET returns every block but the registers to reset once the
        # bus is quiet (SRAM contents stay; only their port registers reset).
        # START also resets the DMA engine, which is quiet then, so that no
        # state of an earlier run that ended in an error or an abort remains.
        for name, block in (("seq", seq), ("matrix", mu), ("vector", vu), ("spad", spad), ("acc", acc)):
            m.submodules[name] = ResetInserter(stop.reset_blocks)(block)
        m.submodules.dma = ResetInserter(stop.reset_blocks | csr.start)(dma)
        m.d.comb += [
            stop.soft_reset.eq(csr.soft_reset),
            stop.bus_busy.eq(dma.bus_busy),
            seq.abort.eq(csr.abort | stop.resetting),
            seq.bus_busy.eq(dma.bus_busy),
            dma.stop.eq(seq.bus_stop | stop.resetting),
            csr.clear.eq(stop.reset_blocks),
            csr.resetting.eq(stop.resetting),
            csr.quiet.eq(~dma.bus_busy & ~seq.matrix.busy & ~seq.vector.busy),
        ]

        wiring.connect(m, wiring.flipped(self.s_axil), csr.s_axil)
        wiring.connect(m, wiring.flipped(self.m_axi), dma.m_axi)

        # Control: the sequencer drives the units and fetches through the DMA.
        wiring.connect(m, seq.fetch, dma.fetch)
        wiring.connect(m, seq.load, dma.load)
        wiring.connect(m, seq.store, dma.store)
        wiring.connect(m, seq.matrix, mu.unit)
        wiring.connect(m, seq.vector, vu.unit)

        # Memories: one port per client.
        wiring.connect(m, mu.a_rd, spad.rd_matrix_a)
        wiring.connect(m, mu.w_rd, spad.rd_matrix_w)
        wiring.connect(m, dma.spad_rd, spad.rd_store)
        wiring.connect(m, dma.spad_wr, spad.wr_load)
        wiring.connect(m, vu.spad_wr, spad.wr_vector)
        wiring.connect(m, mu.acc_rd, acc.rd_matrix)
        wiring.connect(m, mu.acc_a_rd, acc.rd_matrix_a)
        wiring.connect(m, vu.acc_rd, acc.rd_vector)
        wiring.connect(m, dma.acc_rd, acc.rd_store)
        wiring.connect(m, dma.acc_wr, acc.wr_load)
        wiring.connect(m, mu.acc_wr, acc.wr_matrix)
        wiring.connect(m, vu.acc_wr, acc.wr_vector)

        # Host registers.
        m.d.comb += [
            seq.start.eq(csr.start),
            seq.grant.eq(csr.grant),
            csr.busy.eq(seq.busy),
            csr.done.eq(seq.done),
            csr.error_code.eq(seq.error_code),
            csr.error_pc.eq(seq.error_pc),
            self.irq.eq(seq.done | (seq.error_code != 0)),
        ]
        cnt = csr.count
        m.d.comb += [
            cnt.matrix_busy.eq(seq.matrix.busy),
            cnt.array_active.eq(mu.array_active),
            cnt.vector_busy.eq(seq.vector.busy),
            cnt.load_busy.eq(seq.load.busy),
            cnt.store_busy.eq(seq.store.busy),
            cnt.load_stall.eq(seq.stall[Queue.LOAD]),
            cnt.store_stall.eq(seq.stall[Queue.STORE]),
            cnt.matrix_stall.eq(seq.stall[Queue.MATRIX]),
            cnt.vector_stall.eq(seq.stall[Queue.VECTOR]),
            cnt.dispatch_stall.eq(seq.dispatch_stall),
            cnt.bytes_read.eq(dma.bytes_read_inc),
            cnt.bytes_written.eq(dma.bytes_written_inc),
            cnt.instructions.eq(seq.dispatched),
        ]
        return m
