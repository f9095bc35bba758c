"""The Perfetto/Chrome trace of sw/trace.py: structure of the JSON for compiled programs (no RTL)."""

import json

import numpy as np
import pytest

from flashnpu.sw import reference
from flashnpu.sw.compiler import compile_workload
from flashnpu.sw.config import load_config
from flashnpu.sw.golden import GoldenNPU
from flashnpu.sw.isa import OPCODE_QUEUE, Opcode, decode
from flashnpu.sw.perfmodel import predict
from flashnpu.sw.trace import UNITS, assign_lanes, instruction_label, trace_events, write_trace
from flashnpu.sw.workload import AttentionWorkload, GemmWorkload

CFG = load_config("default")

WORKLOADS = {
    "attention-causal": AttentionWorkload(batch=1, heads=2, kv_heads=1, seq_q=192, seq_k=192, head_dim=64,
                                          causal=True),
    "gemm": GemmWorkload(M=64, N=96, K=128),
}


@pytest.fixture(scope="module", params=sorted(WORKLOADS))
def traced(request):
    wl = WORKLOADS[request.param]
    prog = compile_workload(wl, CFG)
    # A program the golden model runs to completion (a GEMM to the exact product).
    rng = np.random.default_rng(1)
    tensors = (reference.make_attention_tensors(wl, rng) if isinstance(wl, AttentionWorkload)
               else reference.make_gemm_tensors(wl, rng))
    out = prog.unpack(GoldenNPU(CFG).run(prog.pack(tensors), prog.prog_addr).dram)
    if isinstance(wl, GemmWorkload):
        assert np.array_equal(out["C"], reference.reference_gemm(tensors["A"], tensors["B"]))
    perf = predict(CFG, prog.words)
    return prog, perf, trace_events(perf, prog.words, title="t", regions=prog.onchip["regions"],
                                    rtl_counters={"CYCLES": 123})


def _threads(trace):
    return {e["tid"]: e["args"]["name"] for e in trace["traceEvents"]
            if e["ph"] == "M" and e["name"] == "thread_name"}


def test_json_round_trip(traced, tmp_path):
    prog, perf, trace = traced
    path = write_trace(tmp_path / "sub" / "t.json", perf, prog.words, title="t",
                       regions=prog.onchip["regions"], rtl_counters={"CYCLES": 123})
    assert json.loads(path.read_text()) == json.loads(json.dumps(trace))
    assert trace["otherData"]["rtl_counters"] == {"CYCLES": 123}
    assert trace["otherData"]["model_cycles"] == perf.cycles


def test_one_named_track_per_unit(traced):
    _, _, trace = traced
    names = _threads(trace)
    for unit in UNITS:
        assert unit in names.values()
    # Extra lanes of a unit are named after it.
    for name in names.values():
        assert name.split(" #")[0] in UNITS
    assert len(set(names.values())) == len(names)
    procs = [e for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"]
    assert [p["args"]["name"] for p in procs] == ["t"]


def test_every_instruction_once_on_its_unit(traced):
    prog, perf, trace = traced
    names = _threads(trace)
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert sorted(e["args"]["pc"] for e in spans) == list(range(len(prog.words)))
    timeline = {pc: (a, d) for _u, pc, a, d in perf.timeline}
    for e in spans:
        pc = e["args"]["pc"]
        op = decode(prog.words[pc])["opcode"]
        unit = "sequencer" if op == Opcode.HALT else OPCODE_QUEUE[op].name.lower()
        assert names[e["tid"]].split(" #")[0] == unit, (pc, e)
        assert e["pid"] == 1 and isinstance(e["ts"], int) and isinstance(e["dur"], int)
        a, d = timeline[pc]
        assert e["ts"] == a and e["dur"] == max(1, d - a)
        assert 0 <= e["ts"] and e["ts"] + e["dur"] <= perf.cycles + 1
        assert e["name"] == instruction_label(prog.words[pc], prog.onchip["regions"])


def test_slices_of_a_track_do_not_overlap(traced):
    _, _, trace = traced
    by_tid = {}
    for e in trace["traceEvents"]:
        if e["ph"] == "X":
            by_tid.setdefault(e["tid"], []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in by_tid.values():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert end <= start


def test_done_marker(traced):
    _, perf, trace = traced
    done = [e for e in trace["traceEvents"] if e["ph"] == "i"]
    assert [e["ts"] for e in done] == [perf.cycles]


def test_labels_name_buffers():
    wl = AttentionWorkload(batch=1, heads=1, kv_heads=1, seq_q=128, seq_k=128, head_dim=64)
    prog = compile_workload(wl, CFG)
    labels = [instruction_label(w, prog.onchip["regions"]) for w in prog.words]
    assert labels[:4] == ["load Q0", "load K0", "load V0", "matmul Q0.K0->S0"]
    assert "vector.exp S0" in labels and "matmul S0.V0->O0" in labels     # P over S, read from the accumulator
    assert labels[-2:] == ["store OUT", "halt"]
    assert instruction_label(prog.words[3]) == "matmul 128x4x4"


def test_assign_lanes():
    timeline = [("load", 0, 0, 10), ("load", 1, 2, 12), ("load", 2, 10, 14), ("load", 3, 12, 13),
                ("matrix", 4, 0, 5)]
    assert assign_lanes(timeline) == [0, 1, 0, 1, 0]
