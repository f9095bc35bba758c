"""The matrix unit: executes MATMUL on the systolic array.

It composes five blocks (issue, hazard, operands, row tags, write-back) around the array.
See ``docs/matrix_unit.md`` for the blocks, the pipeline, the hazards and the cycle model.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flashnpu.hw.matrix_hazard import MatrixHazard
from flashnpu.hw.matrix_issue import SRAM_ADDR_WIDTH, MatrixIssue
from flashnpu.hw.matrix_operands import MatrixOperands
from flashnpu.hw.matrix_row_tags import MatrixRowTags
from flashnpu.hw.matrix_writeback import MatrixWriteback
from flashnpu.hw.signatures import SramReadSignature, SramWriteSignature, UnitSignature
from flashnpu.hw.systolic_array import SystolicArray
from flashnpu.spec.timing import timing

__all__ = ["MatrixUnit"]


class MatrixUnit(wiring.Component):
    """Execute MATMUL instructions: reads of W and A, the array, accumulator writes.

    For each tile (``nb`` outer, ``kc`` inner) the unit reads the ``dim`` weight
    rows of the tile through ``w_rd`` (one per cycle) and the ``m_rows`` A rows
    (one per cycle), one cycle behind: from the scratchpad through ``a_rd``
    (INT8 lanes, sign-extended) or, with ``a_mem = ACC``, from the accumulator
    through ``acc_a_rd`` (each INT32 lane saturated to ``A_WIDE_BITS`` bits). A
    tile takes ``max(m_rows, dim)`` issue cycles and the next tile (of the same
    or the next instruction) follows at once. Each product row is written to the
    accumulator: overwritten on the first k-chunk of a non-accumulating
    MATMUL, else read (``acc_rd``), added (wrap32) and written back. A read
    sees every earlier write of the unit: the two writes that the SRAM cannot
    show yet are forwarded; a tile that reads A rows from the accumulator
    waits at its start while an earlier row to one of them is still in flight.

    Parameters
    ----------
    config : NPUConfig
        ``dim`` sets the array and the row widths.

    Attributes
    ----------
    unit : In(UnitSignature())
        MATMUL instructions (body viewed as ``matmul``; fields already checked).
        ``instr.ready`` is high when the unit is idle or in the last issue
        cycle of its current instruction, so a stream of MATMULs keeps the
        array busy. ``done`` pulses once per instruction, in order, in the
        cycle of its last accumulator write; ``busy`` is high while an
        accepted instruction has not reached ``done``; ``error`` is always 0.
    a_rd, w_rd : Out(SramReadSignature(addr_width=16, data_width=8*dim))
        Scratchpad reads of A rows and weight rows.
    acc_a_rd : Out(SramReadSignature(addr_width=16, data_width=32*dim))
        Accumulator reads of A rows (``a_mem = ACC``: P of P@V).
    acc_rd : Out(SramReadSignature(addr_width=16, data_width=32*dim))
        Accumulator reads for read-modify-write.
    acc_wr : Out(SramWriteSignature(addr_width=16, data_width=32*dim))
        Accumulator writes, one product row per cycle at most. Registers.
    array_active : Out(1)
        An A row enters the array in this cycle.
    """

    def __init__(self, config):
        self._cfg = config
        dim = config.dim
        super().__init__({
            "unit": In(UnitSignature()),
            "a_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=8 * dim)),
            "w_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=8 * dim)),
            "acc_a_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=32 * dim)),
            "acc_rd": Out(SramReadSignature(addr_width=SRAM_ADDR_WIDTH, data_width=32 * dim)),
            "acc_wr": Out(SramWriteSignature(addr_width=SRAM_ADDR_WIDTH, data_width=32 * dim)),
            "array_active": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, u = self._cfg, self.unit
        lat = timing(cfg).array_latency
        array = m.submodules.array = SystolicArray(cfg)
        if array.latency != lat:
            raise ValueError(f"spec.timing has array_latency {lat}; the array's is {array.latency}")
        issue = m.submodules.issue = MatrixIssue(cfg)
        hazard = m.submodules.hazard = MatrixHazard(lat + 2)     # stages A read .. x
        ops = m.submodules.operands = MatrixOperands(cfg)
        tags = m.submodules.row_tags = MatrixRowTags(lat)        # A read -> r: the array's latency
        wb = m.submodules.writeback = MatrixWriteback(cfg)

        m.d.comb += [
            issue.instr.valid.eq(u.instr.valid),
            issue.instr.payload.eq(u.instr.payload.body.matmul),
            u.instr.ready.eq(issue.instr.ready),
            issue.done.eq(wb.done),
            u.done.eq(wb.done),
            u.busy.eq(issue.busy),
            u.error.eq(0),
        ]
        # issue -> hazard (holds a tile reading rows still in flight) -> operand reads.
        wiring.connect(m, issue.tiles, hazard.issue)
        wiring.connect(m, hazard.out, ops.issue)
        for name in ("w_rd", "a_rd", "acc_a_rd"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(ops, name))
        m.d.comb += [
            array.w_valid.eq(ops.weights.valid),
            array.w_transpose.eq(ops.weights.payload.transpose),
            array.w_data.eq(ops.weights.payload.data),
            array.a_valid.eq(ops.a_rows.valid),
            array.a_data.eq(ops.a_rows.payload),
            self.array_active.eq(ops.a_rows.valid),
        ]
        # The A row's tag travels beside the array and reaches the write-back's r stage one
        # cycle before the product leaves the array (stage x).
        wiring.connect(m, ops.tag, tags.a)
        wiring.connect(m, tags.r, wb.r)
        m.d.comb += wb.product.eq(array.out_data)
        for name in ("acc_rd", "acc_wr"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(wb, name))
        # The rows whose writes a tile's first A read would not see: A read .. x.
        for k in range(lat + 1):
            m.d.comb += hazard.rows[k].eq(tags.in_flight[k])
        m.d.comb += hazard.rows[lat + 1].eq(wb.x)
        return m
