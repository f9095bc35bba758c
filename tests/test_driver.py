"""flashnpu.driver: one interface (run / run_program), three backends, one result type."""

import numpy as np
import pytest

from flashnpu.driver import BACKENDS, RunResult, run, run_program
from flashnpu.sw.compiler import compile_workload
from flashnpu.sw.perfmodel import predict
from flashnpu.sw.program import program_grant
from flashnpu.sw.reference import make_tensors, reference_gemm
from flashnpu.sw.workload import AttentionWorkload, GemmWorkload, WorkloadError

GEMM = GemmWorkload(M=9, N=6, K=7)
ATTN = AttentionWorkload(batch=1, heads=2, kv_heads=1, seq_q=5, seq_k=7, head_dim=8, causal=True)


def test_run_takes_each_named_backend_and_refuses_others():
    """Every name in BACKENDS reaches its backend (rtl: test_rtl_backend_... below); others are
    refused with a message that names each of them."""
    for backend in BACKENDS:
        if backend == "rtl":
            continue                            # builds a Verilator model: the rtl-marked test below
        assert run(GEMM, make_tensors(GEMM, 0), backend=backend, config="tiny").backend == backend
    for bad in ("Golden", "fast", "", None, 0):
        with pytest.raises(WorkloadError, match="argument backend") as e:
            run(GEMM, make_tensors(GEMM, 0), backend=bad, config="tiny")
        assert all(f"'{b}'" in str(e.value) for b in BACKENDS), str(e.value)


def test_golden_backend_gives_outputs_and_no_cycles():
    t = make_tensors(GEMM, 3)
    res = run(GEMM, t, backend="golden", config="tiny")
    assert isinstance(res, RunResult) and res.backend == "golden"
    assert np.array_equal(res.outputs["C"], reference_gemm(t["A"], t["B"]))
    assert res.cycles is None and res.counters is None


@pytest.mark.parametrize("wl", [GEMM, ATTN], ids=["gemm", "attention"])
def test_perf_backend_is_the_performance_model_and_has_no_outputs(wl):
    t = make_tensors(wl, 1)
    res = run(wl, t, backend="perf", config="tiny")
    prog = compile_workload(wl, "tiny")
    want = predict("tiny", prog.words, grant=program_grant(prog))
    assert isinstance(res, RunResult) and res.backend == "perf"
    assert res.outputs is None and res.dram is None
    assert res.cycles == want.cycles and res.cycles > 0
    assert res.counters == want.counters and res.counters["CYCLES"] == want.cycles
    # the model reads no tensor: without them it predicts the same
    assert run(wl, None, backend="perf", config="tiny").cycles == want.cycles
    # the lat option reaches the model
    assert run(wl, t, backend="perf", config="tiny", lat=4).cycles == \
        predict("tiny", prog.words, grant=program_grant(prog), lat=4).cycles


def test_perf_backend_names_bad_options():
    with pytest.raises(ValueError, match=r"takes the options lat and memory_timing .*got \['waves'\]"):
        run(GEMM, None, backend="perf", config="tiny", waves=True)
    with pytest.raises(ValueError, match="check_golden: backend 'perf' has no outputs"):
        run(GEMM, None, backend="perf", config="tiny", check_golden=True)


def test_only_perf_runs_without_tensors():
    with pytest.raises(WorkloadError, match="argument 'tensors' = None"):
        run(GEMM, None, backend="golden", config="tiny")


def test_run_program_one_signature_config_defaults_to_the_programs():
    prog = compile_workload(GEMM, "tiny")
    img = prog.pack(make_tensors(GEMM, 0))
    a = run_program(prog, img)
    b = run_program(prog, img, backend="golden", config="tiny")
    assert np.array_equal(a.outputs["C"], b.outputs["C"])
    assert run_program(prog, img, backend="perf").cycles == run(GEMM, None, backend="perf", config="tiny").cycles
    with pytest.raises(TypeError):
        run_program(prog, img, "golden")          # backend and config are keywords


@pytest.mark.rtl
def test_rtl_backend_same_result_type_and_the_models_cycles():
    """On the ideal slave (memory="fast", lat 1) the RTL's cycles are the performance model's."""
    t = make_tensors(GEMM, 2)
    rtl = run(GEMM, t, backend="rtl", config="tiny", memory="fast", check_golden=True)
    perf = run(GEMM, t, backend="perf", config="tiny")
    assert isinstance(rtl, RunResult) and rtl.backend == "rtl"
    assert rtl.golden_match is True
    assert np.array_equal(rtl.outputs["C"], reference_gemm(t["A"], t["B"]))
    assert rtl.cycles == perf.cycles
    assert rtl.counters["CYCLES"] == perf.counters["CYCLES"]
