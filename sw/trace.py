"""Chrome/Perfetto trace files of a program's execution, one track per unit.

The trace is built from the performance model's ``PerfResult`` (the RTL has no
per-instruction timestamps, only the totals of its counters, which go into the
trace's metadata when given). One cycle is shown as one microsecond, so the
Perfetto time axis reads in cycles. Open the file in ui.perfetto.dev or
chrome://tracing.

* Each instruction is a complete event (``"ph": "X"``) on its unit's track,
  from the cycle its unit took it to the cycle of its done.
* The ``sequencer`` track is the check/dispatch stage, cycle by cycle: a
  slice per instruction from the cycle its word entered the check stage to
  the cycle it was written into its queue (with a child slice
  ``dispatch stalled: <queue> queue full`` for the cycles it waited for
  room, which add up to ``DISPATCH_STALL``), ``wait for fetch`` where the
  stage was empty, and HALT from its dispatch to done.
* A ``<unit> wait`` track below a unit holds the cycles its queue's head
  waited for dependency tokens (they add up to the unit's ``*_STALL``
  counter), and a flow arrow (``"ph": "s"`` / ``"f"``) goes from each
  instruction whose token was popped to the instruction that popped it.

A unit can hold several instructions in flight (the DMA's outstanding bursts,
the array's pipeline latency). Perfetto requires the slices of one track to
nest, so an instruction that overlaps the previous one of its unit goes on a
second lane of the same unit ("load #2"), sorted right below the first.
Flow events sit half a cycle inside the slices they bind to (Perfetto binds
a flow to the slice enclosing its timestamp).
"""

from __future__ import annotations

import json
from pathlib import Path

from flashnpu.spec.isa import Mem, Opcode, VectorFunct, decode

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


def _slice(name, cat, tid, ts, dur, args):
    return {"name": name, "cat": cat, "ph": "X", "pid": 1, "tid": tid, "ts": ts, "dur": dur, "args": args}


def _meta(name, tid, args):
    return {"name": name, "ph": "M", "pid": 1, "tid": tid, "ts": 0, "args": args}


def trace_events(perf, words, *, title: str = "flashnpu", regions: dict | None = None,
                 rtl_counters: dict | None = None) -> dict:
    """The trace as a dict in the Chrome trace event format.

    ``perf`` is a ``PerfResult`` of ``words``; ``regions`` (the program's
    ``onchip["regions"]``) names the buffers in the event names;
    ``rtl_counters`` (the RTL's counters of the same program, if it ran) are
    added to the metadata.
    """
    n = perf.instructions
    labels = [instruction_label(words[pc], regions) for pc in range(n)]
    unit_of = {pc: unit for unit, pc, _a, _d in perf.timeline}
    waits = {unit: [] for unit in UNITS}      # per unit: pcs whose head waited for tokens
    for pc in range(n - 1):
        if perf.tokens[pc] > perf.head[pc]:
            waits[unit_of[pc]].append(pc)

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
        tracks = [(lane, unit if lane == 0 else f"{unit} #{lane + 1}") for lane in range(n_lanes[unit])]
        if waits[unit]:
            tracks.append(("wait", f"{unit} wait"))
        for lane, name in tracks:
            tid_of[(unit, lane)] = tid
            meta.append(_meta("thread_name", tid, {"name": name}))
            meta.append(_meta("thread_sort_index", tid, {"sort_index": tid}))
            tid += 1
    events = [_meta("process_name", 0, {"name": title})] + meta

    # Instructions on their units, from take to done.
    exec_of = {}                               # pc -> (tid, ts, dur) of its slice
    for (unit, pc, accept, done), lane in zip(entries, lanes):
        dur = _duration(accept, done)
        exec_of[pc] = (tid_of[(unit, lane)], accept, dur)
        events.append(_slice(labels[pc], unit, tid_of[(unit, lane)], accept, dur,
                             {"pc": pc, "accept": accept, "done": done}))

    # The sequencer's check/dispatch stage: waiting for a word, checking and dispatching it.
    seq = tid_of[("sequencer", 0)]
    chk = perf.timing.check_to_dispatch
    free = 0                                   # the cycle the stage is empty again
    for pc in range(n):
        checked, dispatched = perf.checked[pc], perf.dispatched[pc]
        if checked > free:
            events.append(_slice("wait for fetch", "fetch", seq, free, checked - free,
                                 {"pc": pc, "fetched": perf.fetched[pc]}))
        queue = unit_of[pc] if pc < n - 1 else "sequencer"
        events.append(_slice(f"dispatch {labels[pc]}", "dispatch", seq, checked, dispatched - checked,
                             {"pc": pc, "queue": queue, "fetched": perf.fetched[pc], "checked": checked,
                              "dispatched": dispatched}))
        if dispatched > checked + chk:
            events.append(_slice(f"dispatch stalled: {queue} queue full", "dispatch", seq, checked + chk,
                                 dispatched - checked - chk, {"pc": pc}))
        free = dispatched

    # Token waits of each queue's head, and a flow arrow from each token's producer to its consumer.
    for unit in UNITS:
        for pc in waits[unit]:
            srcs = ", ".join(dict.fromkeys(unit_of[p] for p in perf.producers[pc]))
            events.append(_slice(f"{labels[pc]}: wait for {srcs}", "wait", tid_of[(unit, "wait")],
                                 perf.head[pc], perf.tokens[pc] - perf.head[pc],
                                 {"pc": pc, "head": perf.head[pc], "tokens": perf.tokens[pc],
                                  "producers": list(perf.producers[pc])}))
    flow = 0
    for pc in range(n - 1):
        c_tid, c_ts, _ = exec_of[pc]
        for p in perf.producers[pc]:
            p_tid, p_ts, p_dur = exec_of[p]
            flow += 1
            events.append({"name": "token", "cat": "token", "ph": "s", "id": flow, "pid": 1, "tid": p_tid,
                           "ts": p_ts + p_dur - 0.5, "args": {"from": p, "to": pc}})
            events.append({"name": "token", "cat": "token", "ph": "f", "bp": "e", "id": flow, "pid": 1,
                           "tid": c_tid, "ts": c_ts + 0.5, "args": {"from": p, "to": pc}})

    events.append({"name": "done", "ph": "i", "s": "g", "pid": 1, "tid": seq, "ts": perf.cycles})
    other = {"time_unit": "1 us in the viewer = 1 NPU cycle", "source": "performance model",
             "model_cycles": perf.cycles, "model_busy": dict(perf.busy), "model_stall": dict(perf.stall),
             "model_dispatch_stall": perf.dispatch_stall}
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
