"""Chrome/Perfetto trace files of a program's execution, one track per unit.

The trace is built from the performance model's timeline (``PerfResult.timeline``;
the RTL has no per-instruction timestamps, only the totals of its counters,
which go into the trace's metadata when given). Each instruction is a complete
event (``"ph": "X"``) on its unit's track, from the cycle its unit took it to
the cycle of its done. One cycle is shown as one microsecond, so the
Perfetto time axis reads in cycles. Open the file in ui.perfetto.dev or
chrome://tracing.

A unit can hold several instructions in flight (the DMA's outstanding bursts,
the array's pipeline latency). Perfetto requires the slices of one track to
nest, so an instruction that overlaps the previous one of its unit goes on a
second lane of the same unit ("load #2"), sorted right below the first.
"""

from __future__ import annotations

import json
from pathlib import Path

from flashnpu.sw.isa import Mem, Opcode, VectorFunct, decode

__all__ = ["UNITS", "instruction_label", "assign_lanes", "trace_events", "write_trace"]

#: The units, in track order: the names ``PerfResult.timeline`` uses.
UNITS = ("sequencer", "load", "store", "matrix", "vector")

#: How many lanes a unit may need before the layout is a bug (outstanding DMA instructions, pipeline depth).
_MAX_LANES = 16


def _region(regions, memory: str, row: int):
    """The name of the buffer of ``regions`` (``Program.onchip["regions"]``) holding ``row`` of ``memory``."""
    for name, (mem, first, rows) in (regions or {}).items():
        if mem == memory and first <= row < first + rows:
            return name
    return None


def instruction_label(word: int, regions: dict | None = None) -> str:
    """A short name of an instruction: ``load``, ``matmul 128x4x4``, ``vector.exp``.

    With ``regions`` (``Program.onchip["regions"]``) the buffers it touches are
    named: ``load K0``, ``matmul Q0.K0->S0``, ``vector.exp S0`` (p over the scores, in place),
    ``matmul S0.V0->O0`` (A from the accumulator, ``a_mem = ACC``), ``vector.output O0->OUT``.
    """
    d = decode(int(word))
    op = d["opcode"]
    if op == Opcode.VECTOR:
        funct = VectorFunct(d["funct"])
        name = f"vector.{funct.name.lower()}"
        if regions is None or funct in (VectorFunct.INIT, VectorFunct.RECIP):
            return name
        acc = _region(regions, "acc", d["acc_addr"]) or "?"
        if funct in (VectorFunct.OUTPUT, VectorFunct.REQUANT):   # these write the scratchpad
            return f"{name} {acc}->{_region(regions, 'spad', d['spad_addr']) or '?'}"
        return f"{name} {acc}"
    if op == Opcode.MATMUL:
        if regions is None:
            return f"matmul {d['m_rows']}x{d['k_chunks']}x{d['n_blocks']}"
        a = _region(regions, "acc" if d["a_mem"] == Mem.ACC else "spad", d["a_addr"]) or "?"
        w = _region(regions, "spad", d["w_addr"]) or "?"
        return f"matmul {a}.{w}->{_region(regions, 'acc', d['out_addr']) or '?'}"
    if op in (Opcode.LOAD, Opcode.STORE) and regions is not None:
        mem = "acc" if d["mem"] == Mem.ACC else "spad"
        return f"{op.name.lower()} {_region(regions, mem, d['sram_addr']) or '?'}"
    return op.name.lower()


def assign_lanes(timeline) -> list[int]:
    """The lane (0, 1, ...) of each ``(unit, pc, accept, done)`` entry: the first lane of its unit
    whose last event ended by the entry's start, so that events of one lane never overlap."""
    ends: dict[str, list[int]] = {}
    lanes = []
    for unit, _pc, accept, done in timeline:
        lane_ends = ends.setdefault(unit, [])
        for i, end in enumerate(lane_ends):
            if end <= accept:
                break
        else:
            i = len(lane_ends)
            if i >= _MAX_LANES:
                raise RuntimeError(f"unit {unit}: more than {_MAX_LANES} instructions in flight "
                                   "at once in the timeline (not sorted by accept?)")
            lane_ends.append(0)
        lane_ends[i] = max(done, accept + 1)
        lanes.append(i)
    return lanes


def _duration(accept: int, done: int) -> int:
    return max(1, done - accept)


def trace_events(perf, words, *, title: str = "flashnpu", regions: dict | None = None,
                 rtl_counters: dict | None = None) -> dict:
    """The trace as a dict in the Chrome trace event format.

    ``perf`` is a ``PerfResult`` of ``words``; ``regions`` (the program's
    ``onchip["regions"]``) names the buffers in the event names;
    ``rtl_counters`` (the RTL's counters of the same program, if it ran) are
    added to the metadata.
    """
    # Timeline entries per unit in the order taken, so that lanes fill left to right.
    order = sorted(range(len(perf.timeline)),
                   key=lambda i: (UNITS.index(perf.timeline[i][0]), perf.timeline[i][2]))
    entries = [perf.timeline[i] for i in order]
    lanes = assign_lanes(entries)
    n_lanes = {u: 1 for u in UNITS}
    for (unit, *_), lane in zip(entries, lanes):
        n_lanes[unit] = max(n_lanes[unit], lane + 1)
    tid_of, meta, tid = {}, [], 0
    for unit in UNITS:
        for lane in range(n_lanes[unit]):
            tid_of[(unit, lane)] = tid
            name = unit if lane == 0 else f"{unit} #{lane + 1}"
            meta.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": name}})
            meta.append({"name": "thread_sort_index", "ph": "M", "pid": 1, "tid": tid,
                         "args": {"sort_index": tid}})
            tid += 1
    events = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": title}}] + meta
    for (unit, pc, accept, done), lane in zip(entries, lanes):
        events.append({
            "name": instruction_label(words[pc], regions), "cat": unit, "ph": "X", "pid": 1,
            "tid": tid_of[(unit, lane)], "ts": accept, "dur": _duration(accept, done),
            "args": {"pc": pc, "accept": accept, "done": done},
        })
    events.append({"name": "done", "ph": "i", "s": "g", "pid": 1, "tid": tid_of[("sequencer", 0)],
                   "ts": perf.cycles})
    other = {"time_unit": "1 us in the viewer = 1 NPU cycle", "source": "performance model timeline",
             "model_cycles": perf.cycles, "model_busy": dict(perf.busy)}
    if rtl_counters is not None:
        other["rtl_counters"] = dict(rtl_counters)
    return {"traceEvents": events, "displayTimeUnit": "ns", "otherData": other}


def write_trace(path, perf, words, *, title: str = "flashnpu", regions: dict | None = None,
                rtl_counters: dict | None = None) -> Path:
    """Write the trace JSON to ``path`` and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(trace_events(perf, words, title=title, regions=regions,
                                            rtl_counters=rtl_counters)))
    return path
