"""Whole programs on the Verilated NPU under cocotb, bit-exact against the golden model.

Each case compiles a workload, packs the DRAM image, runs it on the golden
model and on the RTL (``flashnpu.cosim.rtl_backend.run_program``, AxiRam as
DRAM) and compares every byte of DRAM. Error cases check the code and pc the
NPU reports in STATUS / ERROR_PC against the golden model's.
"""

import numpy as np
import pytest

from flashnpu.cosim.rtl_backend import RtlTimeout, compare_outputs, run_program
from flashnpu.sw.asm import decode_word, encode_word, program_bytes
from flashnpu.sw.compiler import compile_workload
from flashnpu.spec.config import load_config
from flashnpu.sw.golden import GoldenNPU, NpuError
from flashnpu.spec.isa import INSTR_BYTES, ErrorCode, Opcode
from flashnpu.sw.reference import make_attention_tensors, make_gemm_tensors, reference_gemm
from flashnpu.spec.regmap import DramGrant
from flashnpu.sw.workload import AttentionWorkload, GemmWorkload

pytestmark = pytest.mark.rtl

TINY = load_config("tiny")


def _case(wl, config=TINY, seed=0):
    prog = compile_workload(wl, config)
    rng = np.random.default_rng(seed)
    t = make_attention_tensors(wl, rng) if isinstance(wl, AttentionWorkload) else make_gemm_tensors(wl, rng)
    return prog, t, prog.pack(t)


def _check_bit_exact(config, prog, image, **opts):
    gold = GoldenNPU(config).run(image, prog.prog_addr).dram
    rtl = run_program(prog, image, config=config, **opts)
    assert rtl.error_code == ErrorCode.NONE, (rtl.error_code, rtl.error_pc)
    diff = np.flatnonzero(rtl.dram != gold)
    assert diff.size == 0, f"{diff.size} DRAM bytes differ, first at {diff[0]:#x}"
    c = rtl.counters
    assert rtl.cycles == c["CYCLES"] > 0
    assert c["INSTRUCTIONS"] == prog.instructions
    return rtl, gold


@pytest.mark.parametrize("backpressure", [False, True])
def test_gemm(backpressure):
    wl = GemmWorkload(M=8, N=12, K=20)
    prog, t, image = _case(wl, seed=1)
    rtl, _ = _check_bit_exact(TINY, prog, image, backpressure=backpressure, seed=3)
    np.testing.assert_array_equal(prog.unpack(rtl.dram)["C"], reference_gemm(t["A"], t["B"]))
    assert rtl.counters["BYTES_WRITTEN"] >= 8 * 12 * 4


@pytest.mark.parametrize("wl", [
    AttentionWorkload(batch=1, heads=1, kv_heads=1, seq_q=16, seq_k=16, head_dim=8),
    AttentionWorkload(batch=1, heads=1, kv_heads=1, seq_q=16, seq_k=16, head_dim=8, causal=True),
    AttentionWorkload(batch=1, heads=4, kv_heads=2, seq_q=8, seq_k=8, head_dim=4, causal=True),  # GQA
    AttentionWorkload(batch=1, heads=1, kv_heads=1, seq_q=7, seq_k=13, head_dim=6, causal=True),  # ragged
], ids=["plain", "causal", "gqa", "ragged"])
def test_attention(wl):
    prog, _, image = _case(wl, seed=2)
    _check_bit_exact(TINY, prog, image)


def test_attention_with_backpressure():
    wl = AttentionWorkload(batch=1, heads=1, kv_heads=1, seq_q=8, seq_k=12, head_dim=8, causal=True)
    prog, _, image = _case(wl, seed=4)
    _check_bit_exact(TINY, prog, image, backpressure=True, seed=9)


def test_attention_default_config():
    cfg = load_config("default")
    wl = AttentionWorkload(batch=1, heads=1, kv_heads=1, seq_q=32, seq_k=48, head_dim=32, causal=True)
    prog, _, image = _case(wl, config=cfg, seed=5)
    _check_bit_exact(cfg, prog, image)


def test_progress_reports_simulated_cycles():
    """The harness leaves the cycles simulated so far in run_dir/progress at every poll
    (flashnpu run's progress bar reads it); after the run it holds about the run's length."""
    from flashnpu.cosim.harness import POLL_CYCLES
    wl = GemmWorkload(M=96, N=96, K=96)
    prog, _, image = _case(wl, seed=12)
    rtl = run_program(prog, image, config=TINY, memory="fast")
    assert rtl.cycles > 2 * POLL_CYCLES
    seen = int((rtl.run_dir / "progress").read_text())
    assert rtl.cycles - 16 <= seen <= rtl.cycles + 16, (seen, rtl.cycles)


def test_waves_write_an_fst():
    """--waves builds with FST tracing (linking liblz4 even without its -dev package) and
    writes dump.fst: an FST header block (type 0, 329 bytes) followed by data."""
    wl = GemmWorkload(M=4, N=4, K=4)
    prog, _, image = _case(wl, seed=13)
    rtl = run_program(prog, image, config=TINY, waves=True)
    assert rtl.error_code == ErrorCode.NONE
    fst = (rtl.run_dir / "dump.fst").read_bytes()
    assert fst[0] == 0 and int.from_bytes(fst[1:9], "big") == 329 and len(fst) > 1000


def test_corrupted_dram_word_is_a_mismatch():
    wl = GemmWorkload(M=4, N=4, K=4)
    prog, _, image = _case(wl, seed=6)
    gold = GoldenNPU(TINY).run(image, prog.prog_addr).dram
    rtl = run_program(prog, image, config=TINY)
    assert compare_outputs(prog, rtl.dram, gold) == []
    bad = rtl.dram.copy()
    bad[prog.layout["C"].addr + 4] ^= 0x01            # one bit of C[0, 1]
    problems = compare_outputs(prog, bad, gold)
    assert len(problems) == 1 and problems[0].startswith("C: 1 of 16 elements differ; first at (0, 1)")


def _golden_error(image, prog_addr):
    with pytest.raises(NpuError) as e:
        GoldenNPU(TINY).run(image, prog_addr)
    return e.value


def test_slverr_on_load_is_reported():
    wl = GemmWorkload(M=4, N=4, K=4)
    prog, _, image = _case(wl, seed=7)
    a = prog.layout["A"]
    rtl = run_program(prog, image, config=TINY, slverr=[(a.addr, a.addr + a.nbytes)])
    assert rtl.error_code == ErrorCode.AXI_SLVERR and rtl.status & 0x4
    # The failing instruction is the first LOAD that reads A.
    first = next(i for i, w in enumerate(prog.words)
                 if decode_word(w)["opcode"] == Opcode.LOAD
                 and a.addr <= decode_word(w)["dram_addr"] < a.addr + a.nbytes)
    assert rtl.error_pc == first


class _Patched:
    """A program (``words``, ``prog_addr``) with some words replaced."""

    def __init__(self, prog, replace=None, insert=None):
        self.words = [int(w) for w in prog.words]
        for k, w in (replace or {}).items():
            self.words[k] = int(w)
        for k, w in (insert or {}).items():
            self.words.insert(k, int(w))
        self.prog_addr = prog.prog_addr

    def image(self, image):
        img = np.zeros(max(len(image), self.prog_addr + INSTR_BYTES * len(self.words)), dtype=np.uint8)
        img[:len(image)] = image
        img[self.prog_addr:self.prog_addr + INSTR_BYTES * len(self.words)] = \
            np.frombuffer(program_bytes(self.words), dtype=np.uint8)
        return img


def test_decerr_beyond_memory_matches_golden():
    wl = GemmWorkload(M=4, N=4, K=4)
    prog, _, image = _case(wl, seed=8)
    # Point the first STORE beyond the DRAM: the memory answers DECERR.
    k = next(i for i, w in enumerate(prog.words) if decode_word(w)["opcode"] == Opcode.STORE)
    d = decode_word(prog.words[k])
    d["dram_addr"] = len(image) + 4096
    body = {n: v for n, v in d.items() if n != "opcode"}
    p = _Patched(prog, replace={k: encode_word(Opcode.STORE, **body)})
    img = p.image(image)
    # A DMA window past the memory's end, so the STORE reaches the bus.
    grant = DramGrant(p.prog_addr, p.prog_addr + INSTR_BYTES * len(p.words), ((0, 1 << 31),))
    with pytest.raises(NpuError) as e:
        GoldenNPU(TINY).run(img, grant=grant)
    assert e.value.code == ErrorCode.AXI_DECERR
    rtl = run_program(p, img, config=TINY, grant=grant)
    assert (rtl.error_code, rtl.error_pc) == (e.value.code, e.value.pc)
    # With the grant a driver gives by default (the image), it never reaches the bus.
    rtl = run_program(p, img, config=TINY)
    assert rtl.error_code == ErrorCode.DMA_WINDOW and rtl.error_pc == k


def test_illegal_opcode():
    wl = GemmWorkload(M=4, N=4, K=4)
    prog, _, image = _case(wl, seed=9)

    p = _Patched(prog, insert={3: 0})                # the all-zero word is illegal
    img = p.image(image)
    e = _golden_error(img, p.prog_addr)
    assert (e.code, e.pc) == (ErrorCode.ILLEGAL_OPCODE, 3)
    rtl = run_program(p, img, config=TINY)
    assert rtl.error_code == ErrorCode.ILLEGAL_OPCODE
    assert rtl.error_pc == 3
    assert rtl.status >> 8 & 0xFF == ErrorCode.ILLEGAL_OPCODE


def test_watchdog_names_queue_states():
    wl = GemmWorkload(M=8, N=8, K=8)
    prog, _, image = _case(wl, seed=10)
    with pytest.raises(RtlTimeout, match=r"watchdog.*LOAD: .*STORE: .*MATRIX: .*VECTOR: "):
        run_program(prog, image, config=TINY, timeout_cycles=20)


def test_fast_memory_agrees_with_axiram():
    """The HDL memory (lat 1) gives the same DRAM as AxiRam (cycle counts may differ by a few:
    AxiRam is not exactly the ideal slave when several bursts queue)."""
    wl = AttentionWorkload(batch=1, heads=1, kv_heads=1, seq_q=8, seq_k=16, head_dim=8, causal=True)
    prog, _, image = _case(wl, seed=11)
    slow, gold = _check_bit_exact(TINY, prog, image)
    fast = run_program(prog, image, config=TINY, memory="fast", lat=1)
    assert fast.error_code == ErrorCode.NONE
    assert np.array_equal(fast.dram, gold)
    assert fast.counters["INSTRUCTIONS"] == slow.counters["INSTRUCTIONS"]
    assert fast.counters["BYTES_READ"] == slow.counters["BYTES_READ"]
    with pytest.raises(ValueError, match="backpressure"):
        run_program(prog, image, config=TINY, memory="fast", backpressure=True)
    # The same SLVERR window on both memories stops the NPU at the same instruction.
    k = prog.layout["K"]
    win = [(k.addr, k.addr + k.nbytes)]
    e_slow = run_program(prog, image, config=TINY, slverr=win)
    e_fast = run_program(prog, image, config=TINY, memory="fast", slverr=win)
    assert e_slow.error_code == e_fast.error_code == ErrorCode.AXI_SLVERR
    # Both blame the first LOAD that reads K, even while an earlier LOAD (Q) is still in flight.
    failing = next(i for i, w in enumerate(prog.words) if decode_word(w)["opcode"] == Opcode.LOAD
                   and k.addr <= decode_word(w)["dram_addr"] < k.addr + k.nbytes)
    assert e_slow.error_pc == e_fast.error_pc == failing


def test_cli_run_reports_match(capsys):
    from flashnpu.cli import main
    rc = main(["run", "gemm", "--config", "tiny", "-M", "8", "-N", "8", "-K", "8"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "bit-exact with the golden model" in out and "RESULT: match" in out
    assert "PE utilization" in out and "CYCLES" in out
