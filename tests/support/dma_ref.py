"""The test-side DMA reference: a LOAD/STORE's fields and what it does to the SRAM rows or DRAM bytes."""

from flashnpu.spec.isa import Mem

__all__ = ["dma", "expect_load", "expect_store"]


def dma(mem, dram_addr, dram_stride, rows, chunks, sram_addr=0, sram_chunk_stride=0):
    """The LOAD/STORE fields as a dict (``encode(Opcode.LOAD, **dma(...))``)."""
    return dict(mem=mem, dram_addr=dram_addr, dram_stride=dram_stride, rows=rows, chunks=chunks,
                sram_addr=sram_addr, sram_chunk_stride=sram_chunk_stride)


def _row_bytes(cfg, f):
    return cfg.spad_row_bytes if f["mem"] == Mem.SPAD else cfg.acc_row_bytes


def expect_load(cfg, sram_rows, dram, f):
    """The SRAM rows after LOAD ``f`` from ``dram`` (bytes) into ``sram_rows`` (ints)."""
    rb = _row_bytes(cfg, f)
    rows = list(sram_rows)
    for r in range(f["rows"]):
        for c in range(f["chunks"]):
            a = f["dram_addr"] + r * f["dram_stride"] + c * rb
            rows[f["sram_addr"] + c * f["sram_chunk_stride"] + r] = int.from_bytes(dram[a:a + rb], "little")
    return rows


def expect_store(cfg, sram_rows, dram, f):
    """The DRAM bytes after STORE ``f`` of ``sram_rows`` (ints) into ``dram``."""
    rb = _row_bytes(cfg, f)
    dram = bytearray(dram)
    for r in range(f["rows"]):
        for c in range(f["chunks"]):
            a = f["dram_addr"] + r * f["dram_stride"] + c * rb
            dram[a:a + rb] = sram_rows[f["sram_addr"] + c * f["sram_chunk_stride"] + r].to_bytes(rb, "little")
    return dram
