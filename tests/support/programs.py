"""Test programs shared by the NPU-top tests (test_npu, test_axi_memory): a GEMM and its DRAM layout."""

from flashnpu.spec.config import load_config
from flashnpu.spec.isa import Mem, Opcode, Queue
from flashnpu.sw.asm import encode_word

__all__ = ["PROG", "A_ADDR", "W_ADDR", "C_ADDR", "L", "S", "MX", "gemm_program"]

#: Where the program, A (int8), W (int8) and C (int32) live in DRAM.
PROG = 0x800
A_ADDR, W_ADDR, C_ADDR = 0x1000, 0x1100, 0x1200
#: Token masks of the LOAD, STORE and MATRIX queues.
L, S, MX = 1 << Queue.LOAD, 1 << Queue.STORE, 1 << Queue.MATRIX


def gemm_program(m, k, n, cfg=None):
    """LOAD A (m x k), LOAD W (k x n) into the scratchpad, MATMUL into the accumulator, STORE C (m x n)."""
    d = (cfg or load_config("tiny")).dim
    kc, nb = k // d, n // d
    w_base = kc * m                          # A: chunk c of row r at spad[c*m + r]; W after it
    return [
        encode_word(Opcode.LOAD, mem=Mem.SPAD, dram_addr=A_ADDR, dram_stride=k, rows=m, chunks=kc,
                    sram_addr=0, sram_chunk_stride=m),
        encode_word(Opcode.LOAD, signal=MX, mem=Mem.SPAD, dram_addr=W_ADDR, dram_stride=n, rows=k,
                    chunks=nb, sram_addr=w_base, sram_chunk_stride=k),
        encode_word(Opcode.MATMUL, wait=L, signal=S, m_rows=m, k_chunks=kc, n_blocks=nb,
                    a_addr=0, a_kstride=m, w_addr=w_base, w_kstride=d, w_nstride=k,
                    out_addr=0, out_nstride=m),
        encode_word(Opcode.STORE, wait=MX, mem=Mem.ACC, dram_addr=C_ADDR, dram_stride=4 * n, rows=m,
                    chunks=nb, sram_addr=0, sram_chunk_stride=m),
        encode_word(Opcode.HALT),
    ]
