"""The Perfetto/Chrome trace of sw/trace.py: structure of the JSON for compiled programs (no RTL).

Perfetto cannot be run here, so the file is checked against the trace-event
format it reads: every event has ``ph``, ``ts``, ``pid``, ``tid``, ``name``;
slices of a track nest; each flow start has one end, and both lie inside the
slices of the instructions they connect. The sequencer and wait slices are
checked against the model's counters (``DISPATCH_STALL``, ``*_STALL``).
"""

import json

import numpy as np
import pytest

from flashnpu.sw import reference
from flashnpu.sw.compiler import compile_workload
from flashnpu.spec.config import load_config
from flashnpu.sw.golden import GoldenNPU
from flashnpu.spec.isa import OPCODE_QUEUE, Opcode, decode
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


def _unit_of_track(name):
    """The unit a track belongs to: ``load``, ``load #2``, ``load wait`` -> ``load``."""
    return name.split(" #")[0].removesuffix(" wait")


def _spans(trace, cat=None):
    return [e for e in trace["traceEvents"] if e["ph"] == "X" and (cat is None or e["cat"] in cat)]


def _enclosing(trace, tid, ts):
    """The X slices of track ``tid`` that contain time ``ts``."""
    return [e for e in _spans(trace) if e["tid"] == tid and e["ts"] <= ts < e["ts"] + e["dur"]]


def test_one_named_track_per_unit(traced):
    _, _, trace = traced
    names = _threads(trace)
    for unit in UNITS:
        assert unit in names.values()
    # Extra lanes and the wait track of a unit are named after it.
    for name in names.values():
        assert _unit_of_track(name) in UNITS, name
    assert len(set(names.values())) == len(names)
    procs = [e for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"]
    assert [p["args"]["name"] for p in procs] == ["t"]


def test_trace_event_schema(traced):
    """What a Chrome/Perfetto JSON reader needs of every event."""
    _, _, trace = traced
    for e in trace["traceEvents"]:
        for key in ("ph", "ts", "pid", "tid", "name"):
            assert key in e, (key, e)
        assert e["ph"] in ("M", "X", "i", "s", "f"), e
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0, e
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int) and isinstance(e["name"], str), e
        if e["ph"] == "X":
            assert isinstance(e["dur"], int) and e["dur"] >= 0, e
            assert isinstance(e["ts"], int) and isinstance(e["cat"], str), e
    tids = set(_threads(trace))
    assert {e["tid"] for e in trace["traceEvents"] if e["ph"] != "M"} <= tids


def test_every_instruction_once_on_its_unit(traced):
    prog, perf, trace = traced
    names = _threads(trace)
    spans = _spans(trace, UNITS)
    assert sorted(e["args"]["pc"] for e in spans) == list(range(len(prog.words)))
    timeline = {pc: (a, d) for _u, pc, a, d in perf.timeline}
    for e in spans:
        pc = e["args"]["pc"]
        op = decode(prog.words[pc])["opcode"]
        unit = "sequencer" if op == Opcode.HALT else OPCODE_QUEUE[op].name.lower()
        assert e["cat"] == unit and names[e["tid"]].split(" #")[0] == unit, (pc, e)
        assert e["pid"] == 1 and isinstance(e["ts"], int) and isinstance(e["dur"], int)
        a, d = timeline[pc]
        assert e["ts"] == a and e["dur"] == max(1, d - a)
        assert 0 <= e["ts"] and e["ts"] + e["dur"] <= perf.cycles + 1
        assert e["name"] == instruction_label(prog.words[pc], prog.onchip["regions"])


def test_slices_of_a_track_nest(traced):
    """Slices of one track never partly overlap (Perfetto drops those): each is after or inside the previous."""
    _, _, trace = traced
    by_tid = {}
    for e in _spans(trace):
        by_tid.setdefault(e["tid"], []).append((e["ts"], -(e["ts"] + e["dur"])))
    for spans in by_tid.values():
        stack = []
        for start, neg_end in sorted(spans):
            end = -neg_end
            while stack and stack[-1] <= start:
                stack.pop()
            assert not stack or end <= stack[-1], (start, end, stack)
            stack.append(end)
    # Only the sequencer nests (a dispatch stall inside its dispatch).
    names = _threads(trace)
    for tid, spans in by_tid.items():
        if names[tid] != "sequencer":
            spans.sort()
            assert all(-e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:])), names[tid]


def test_sequencer_track_is_fetch_wait_dispatch_and_halt(traced):
    """The sequencer's top-level slices tile [0, cycles): waiting for a word, one dispatch per
    instruction (entered the check stage -> written into its queue), HALT to done. The stalls add up
    to DISPATCH_STALL, and each stalled word's queue holds queue_depth instructions in its last
    stalled cycle."""
    prog, perf, trace = traced
    names = _threads(trace)
    seq = [e for e in _spans(trace) if names[e["tid"]] == "sequencer"]
    stalls = [e for e in seq if e["name"].startswith("dispatch stalled")]
    top = sorted((e for e in seq if e not in stalls), key=lambda e: e["ts"])
    assert top[0]["ts"] == 0 and top[-1]["ts"] + top[-1]["dur"] == perf.cycles
    assert all(a["ts"] + a["dur"] == b["ts"] for a, b in zip(top, top[1:]))
    dispatch = [e for e in top if e["cat"] == "dispatch"]
    assert [e["args"]["pc"] for e in dispatch] == list(range(perf.instructions))
    for e in dispatch:
        pc = e["args"]["pc"]
        assert (e["ts"], e["ts"] + e["dur"]) == (perf.checked[pc], perf.dispatched[pc])
        assert perf.fetched[pc] <= perf.checked[pc]
        assert e["name"] == "dispatch " + instruction_label(prog.words[pc], prog.onchip["regions"])
    assert {e["name"] for e in top if e["cat"] not in ("dispatch", "sequencer")} <= {"wait for fetch"}
    assert sum(e["dur"] for e in stalls) == perf.dispatch_stall == perf.counters["DISPATCH_STALL"]
    take = {pc: a for _u, pc, a, _d in perf.timeline}
    queue_of = {pc: u for u, pc, _a, _d in perf.timeline}
    for e in stalls:
        pc = e["args"]["pc"]
        q = queue_of[pc]
        assert e["name"] == f"dispatch stalled: {q} queue full"
        assert e["ts"] + e["dur"] == perf.dispatched[pc]
        last = perf.dispatched[pc] - 1
        held = [j for j in range(pc) if queue_of[j] == q and perf.dispatched[j] <= last <= take[j]]
        assert len(held) == CFG.queue_depth, (pc, held)
    if isinstance(prog.workload, AttentionWorkload):
        assert stalls, "the attention program fills a queue"


def test_token_waits_add_up_to_the_stall_counters(traced):
    """A wait slice per queue head that waited, on its unit's wait track, from the head cycle to the
    cycle the last popped token (the producer's done + 1) was visible."""
    _, perf, trace = traced
    names = _threads(trace)
    waits = _spans(trace, ("wait",))
    assert waits
    done = {pc: d for _u, pc, _a, d in perf.timeline}
    take = {pc: a for _u, pc, a, _d in perf.timeline}
    for unit in UNITS[1:]:
        mine = [e for e in waits if names[e["tid"]] == f"{unit} wait"]
        assert sum(e["dur"] for e in mine) == perf.stall[unit] == perf.counters[f"{unit.upper()}_STALL"]
    for e in waits:
        pc = e["args"]["pc"]
        assert e["dur"] > 0 and e["ts"] == perf.head[pc]
        ready = max(done[p] + perf.timing.done_to_token for p in perf.producers[pc])
        assert e["ts"] + e["dur"] == perf.tokens[pc] == ready <= take[pc]


def test_flow_arrows_pair_producer_and_consumer(traced):
    """Each popped token is one flow: a start inside its producer's slice, one end inside the
    consumer's, the producer on the consumer's wait mask and the consumer on its signal mask."""
    prog, perf, trace = traced
    starts = {e["id"]: e for e in trace["traceEvents"] if e["ph"] == "s"}
    ends = [e for e in trace["traceEvents"] if e["ph"] == "f"]
    assert len(starts) == len(ends) > 0 and sorted(e["id"] for e in ends) == sorted(starts)
    into = {}
    for f in ends:
        s = starts[f["id"]]
        assert (s["cat"], s["name"]) == (f["cat"], f["name"]) and f.get("bp") == "e"
        assert s["args"] == f["args"] and s["ts"] < f["ts"]
        src, dst = s["args"]["from"], s["args"]["to"]
        (p,) = _enclosing(trace, s["tid"], s["ts"])
        (c,) = _enclosing(trace, f["tid"], f["ts"])
        assert (p["args"]["pc"], c["args"]["pc"]) == (src, dst)
        d_src, d_dst = decode(prog.words[src]), decode(prog.words[dst])
        q_src, q_dst = OPCODE_QUEUE[d_src["opcode"]], OPCODE_QUEUE[d_dst["opcode"]]
        assert src < dst and d_dst["wait"] >> q_src & 1 and d_src["signal"] >> q_dst & 1
        into[dst] = into.get(dst, 0) + 1
    for pc, w in enumerate(prog.words[:perf.instructions]):
        assert into.get(pc, 0) == bin(decode(w)["wait"]).count("1") == len(perf.producers[pc])


def test_done_marker(traced):
    _, perf, trace = traced
    done = [e for e in trace["traceEvents"] if e["ph"] == "i"]
    assert [e["ts"] for e in done] == [perf.cycles]


def test_labels_name_buffers():
    wl = AttentionWorkload(batch=1, heads=1, kv_heads=1, seq_q=128, seq_k=128, head_dim=64)
    prog = compile_workload(wl, CFG)
    labels = [instruction_label(w, prog.onchip["regions"]) for w in prog.words]
    assert labels[:4] == ["load K0", "load Q0", "load V0", "matmul Q0.K0->S0"]   # K first: docs/compiler.md
    assert "vector.exp S0" in labels and "matmul S0.V0->O0" in labels     # P over S, read from the accumulator
    assert labels[-2:] == ["store OUT", "halt"]
    assert instruction_label(prog.words[3]) == "matmul 128x4x4"


def test_assign_lanes():
    timeline = [("load", 0, 0, 10), ("load", 1, 2, 12), ("load", 2, 10, 14), ("load", 3, 12, 13),
                ("matrix", 4, 0, 5)]
    assert assign_lanes(timeline) == [0, 1, 0, 1, 0]
