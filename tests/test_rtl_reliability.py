"""Error paths on the Verilated NPU (tiny): precise errors, DRAM windows, abort at any cycle.

Each case runs the same program on the golden model and on the RTL and
checks that they agree on the outcome: the same error code and ERROR_PC, and
the same DRAM bit for bit outside the bytes the golden error leaves undefined
(a failing STORE's own destination). Regression tests for the defects of the
reliability probe: a SOFT_RESET mid-run wedged the NPU; with
``axi_addr_bits < 32`` a STORE wrapped onto low addresses; STORE errors left
DRAM depending on memory timing; token errors and self-modifying programs
disagreed between golden and RTL.
"""

import numpy as np
import pytest

from flashnpu.cosim.rtl_backend import RunSpec, run_program, run_session
from flashnpu.sw.asm import assemble, decode_word
from flashnpu.sw.compiler import compile_workload
from flashnpu.spec.config import load_config
from flashnpu.sw.golden import GoldenNPU, NpuError, dma_extent
from flashnpu.spec.isa import ErrorCode, Opcode
from flashnpu.sw.program import program_grant
from flashnpu.sw.reference import make_gemm_tensors
from flashnpu.spec.regmap import DramGrant
from flashnpu.sw.workload import GemmWorkload

pytestmark = pytest.mark.rtl

TINY = load_config("tiny")


class _Prog:
    def __init__(self, words, prog_addr):
        self.words, self.prog_addr = list(words), prog_addr


def _golden(config, prog, image, grant, faults=()):
    """(code, pc, dram, undefined ranges) of the golden model; on an error, DRAM as it was then."""
    img = np.array(image, dtype=np.uint8, copy=True)
    code = b"".join(int(w).to_bytes(32, "little") for w in prog.words)
    img[prog.prog_addr:prog.prog_addr + len(code)] = np.frombuffer(code, np.uint8)
    g = GoldenNPU(config)
    try:
        return ErrorCode.NONE, 0, g.run(img, grant=grant, faults=faults).dram, ()
    except NpuError as e:
        return e.code, e.pc, g.dram, e.undefined


def _agree(config, prog, image, rtl, grant, faults=()):
    code, pc, dram, undefined = _golden(config, prog, image, grant, faults)
    assert (rtl.error_code, rtl.error_pc if code else 0) == (code, pc), \
        f"RTL {rtl.error_code.name} at {rtl.error_pc}, golden {code.name} at {pc}"
    mask = np.ones(dram.size, bool)
    for lo, hi in undefined:
        mask[lo:hi] = False
    diff = np.flatnonzero((rtl.dram[:dram.size] != dram) & mask)
    assert diff.size == 0, f"{diff.size} DRAM bytes differ outside the undefined bytes, first at {diff[0]:#x}"
    assert rtl.quiet, "the run ended with AXI transactions outstanding"
    return code, pc


def _gemm(seed=1, M=8, N=8, K=8, config=TINY):
    wl = GemmWorkload(M=M, N=N, K=K)
    prog = compile_workload(wl, config)
    t = make_gemm_tensors(wl, np.random.default_rng(seed))
    return prog, prog.pack(t)


def test_store_past_the_address_range_is_refused_not_wrapped():
    """axi_addr_bits 16: a STORE to 0x10000 used to overwrite bytes 0..3."""
    cfg = TINY.replace(name="tiny16", axi_addr_bits=16)
    words = assemble("store mem=0 dram_addr=0x10000 dram_stride=4 rows=1 chunks=1 sram_addr=0\nhalt")
    prog = _Prog(words, 0x8000)
    image = np.arange(1 << 16, dtype=np.uint64).astype(np.uint8)
    grant = DramGrant(0x8000, 0x8000 + 64, ((0, 1 << 16),))
    rtl = run_program(prog, image, config=cfg, grant=grant)
    assert _agree(cfg, prog, image, rtl, grant) == (ErrorCode.DMA_WINDOW, 0)
    assert bytes(rtl.dram[:4]) == bytes(image[:4])


@pytest.mark.parametrize("text,code,pc", [
    # outside both windows
    ("load mem=0 dram_addr=0x5000 dram_stride=4 rows=1 chunks=1 sram_addr=0\nhalt", ErrorCode.DMA_WINDOW, 0),
    # straddles the end of window 1
    ("load mem=0 dram_addr=0xA000 dram_stride=4 rows=2 chunks=1 sram_addr=0\nhalt", ErrorCode.DMA_WINDOW, 0),
    # a STORE onto the program's own later words (self-modifying)
    ("store mem=0 dram_addr=0x8020 dram_stride=4 rows=1 chunks=1 sram_addr=0\nhalt", ErrorCode.CODE_WRITE, 0),
    # no HALT: dispatch runs past PROG_END
    ("vector.init rows=1 blocks=1\nvector.init rows=1 blocks=1", ErrorCode.FETCH_WINDOW, 2),
    # a pop of a token that a later instruction of another queue pushes (the RTL used to complete)
    ("vector.init rows=1 blocks=1 wait=0b0001\nload mem=0 dram_addr=0 dram_stride=4 rows=1 chunks=1 "
     "sram_addr=0 signal=0b1000\nhalt", ErrorCode.TOKEN_UNDERFLOW, 0),
])
def test_dispatch_checks_agree_with_golden(text, code, pc):
    words = assemble(text)
    prog = _Prog(words, 0x8000)
    image = np.zeros(1 << 16, np.uint8)
    # window 0 below the code, window 1 from the code's start: the code lies inside a data window
    grant = DramGrant(0x8000, 0x8000 + 32 * len(words), ((0, 0x4000), (0x8000, 0xA004)))
    rtl = run_program(prog, image, config=TINY, grant=grant)
    assert _agree(TINY, prog, image, rtl, grant) == (code, pc)


def test_deadlock_names_the_first_pop_before_its_push():
    """The RTL's DEADLOCK used to name a later, innocent pc; now TOKEN_UNDERFLOW at the golden pc."""
    words = assemble("""
        vector.init rows=1 blocks=1
        vector.init rows=1 blocks=1 wait=0b0100
        matmul m_rows=1 k_chunks=1 n_blocks=1 wait=0b1000 signal=0b1000
        halt""")
    prog = _Prog(words, 0x8000)
    image = np.zeros(1 << 16, np.uint8)
    grant = DramGrant(0x8000, 0x8000 + 32 * len(words), ((0, 0x8000),))
    rtl = run_program(prog, image, config=TINY, grant=grant)
    assert _agree(TINY, prog, image, rtl, grant) == (ErrorCode.TOKEN_UNDERFLOW, 1)


def _store_pcs(prog):
    return [pc for pc, w in enumerate(prog.words) if decode_word(int(w))["opcode"] == Opcode.STORE]


@pytest.mark.parametrize("memory", ["axiram", "fast"])
def test_store_error_is_precise(memory):
    """SLVERR on the first STORE: no younger STORE writes, whatever the memory timing."""
    prog, image = _gemm(M=8, N=8, K=8)
    stores = _store_pcs(prog)
    assert len(stores) >= 2
    f = decode_word(int(prog.words[stores[0]]))
    lo, hi = dma_extent(f, TINY)
    faults = ((hi - 4, hi, "SLVERR"),)            # its last beat
    grant = program_grant(prog, image.size)
    rtl = run_program(prog, image, config=TINY, faults=faults, memory=memory)
    code, pc = _agree(TINY, prog, image, rtl, grant, faults)
    assert (code, pc) == (ErrorCode.AXI_SLVERR, stores[0])


def test_abort_at_every_cycle_then_a_clean_run():
    """SOFT_RESET or ABORT at every cycle offset of a short program, then a clean program: bit-exact."""
    prog, image = _gemm(M=4, N=4, K=4)
    grant = program_grant(prog, image.size)
    clean = GoldenNPU(TINY).run(image, grant=grant).dram
    first = run_program(prog, image, config=TINY)
    length = first.cycles
    runs = []
    for at in range(0, length + 2):
        runs.append(RunSpec(prog, image, stop_at=at, stop_kind="abort" if at % 2 else "soft_reset"))
        runs.append(RunSpec(prog, image))
    results = run_session(TINY, runs)
    for k in range(0, len(runs), 2):
        stopped, after = results[k], results[k + 1]
        assert stopped.quiet, f"stop at {k // 2}: not quiet"
        if runs[k].stop_kind == "abort" and stopped.error_code:
            assert stopped.error_code in (ErrorCode.ABORTED, ErrorCode.NONE)
        assert after.error_code == ErrorCode.NONE, (k // 2, after.error_code, after.error_pc)
        diff = np.flatnonzero(after.dram[:clean.size] != clean)
        assert diff.size == 0, f"stop at {k // 2}: the next run differs in {diff.size} bytes"
        assert after.cycles == length


def test_abort_under_backpressure_then_a_clean_run():
    prog, image = _gemm(M=4, N=4, K=4, seed=3)
    grant = program_grant(prog, image.size)
    clean = GoldenNPU(TINY).run(image, grant=grant).dram
    runs = []
    for at in range(0, 400, 7):
        runs.append(RunSpec(prog, image, stop_at=at, stop_kind="abort" if at % 2 else "soft_reset"))
        runs.append(RunSpec(prog, image))
    results = run_session(TINY, runs, backpressure=True, seed=5)
    for k in range(0, len(runs), 2):
        assert results[k].quiet
        assert results[k + 1].error_code == ErrorCode.NONE
        assert np.array_equal(results[k + 1].dram[:clean.size], clean), f"after stop at {runs[k].stop_at}"


def test_after_an_axi_fault_a_soft_reset_and_a_clean_run_are_bit_exact():
    prog, image = _gemm(M=8, N=8, K=8, seed=2)
    grant = program_grant(prog, image.size)
    clean = GoldenNPU(TINY).run(image, grant=grant).dram
    loads = [pc for pc, w in enumerate(prog.words) if decode_word(int(w))["opcode"] == Opcode.LOAD]
    lo, hi = dma_extent(decode_word(int(prog.words[loads[-1]])), TINY)
    faulty = RunSpec(prog, image, faults=((lo, lo + 4, "DECERR"),))
    r = run_session(TINY, [faulty, RunSpec(prog, image)])
    code, pc = _agree(TINY, prog, image, r[0], grant, faulty.faults)
    assert code == ErrorCode.AXI_DECERR and pc <= loads[-1]
    assert r[1].error_code == ErrorCode.NONE and np.array_equal(r[1].dram[:clean.size], clean)


@pytest.mark.parametrize("memory", ["axiram", "fast"])
def test_a_run_never_sees_an_earlier_runs_bytes(memory):
    """Run 1's image is smaller than run 0's, and its window reaches beyond it: the bytes there
    read as zeros, not as run 0's. (The fast memory loads and reads back only what matters,
    so one SimTop build can serve a suite of 8 MiB without an 8 MiB backdoor transfer per run.)"""
    words = assemble("load mem=0 dram_addr=0x3000 dram_stride=4 rows=4 chunks=1 sram_addr=0 signal=store\n"
                     "store mem=0 dram_addr=0x100 dram_stride=4 rows=4 chunks=1 sram_addr=0 wait=load\n"
                     "halt")
    prog = _Prog(words, 0)
    big = np.random.default_rng(7).integers(1, 256, 0x4000, dtype=np.uint8)
    small = np.zeros(0x200, np.uint8)                 # ends far below the LOAD at 0x3000
    grant = DramGrant(0, 32 * len(words), ((0x100, 0x4000),))
    r0, r1 = run_session(TINY, [RunSpec(prog, big, grant=grant), RunSpec(prog, small, grant=grant)],
                         memory=memory, mem_size=1 << 16)
    assert r0.error_code == r1.error_code == ErrorCode.NONE
    assert bytes(r0.dram[0x100:0x110]) == bytes(big[0x3000:0x3010])
    assert r0.dram.size >= big.size and r1.dram.size >= small.size
    assert not r1.dram[0x100:0x110].any(), "run 1 read run 0's bytes"
