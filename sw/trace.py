"""Chrome/Perfetto trace files of a program's execution, one track per unit.

The trace is built from the performance model's timeline (``PerfResult.timeline``):
each instruction is a complete event ("ph": "X") on its unit's track, from
the cycle its unit took it to the cycle of its done. One cycle is shown as one
microsecond, so the Perfetto time axis reads in cycles. Open the file in
ui.perfetto.dev or chrome://tracing.
"""

from __future__ import annotations

import json
from pathlib import Path

from flashnpu.sw.isa import Opcode, VectorFunct, decode

__all__ = ["trace_events", "write_trace"]

TRACKS = ("sequencer", "load", "store", "matrix", "vector")


def _label(word: int) -> str:
    d = decode(word)
    op = d["opcode"]
    if op == Opcode.VECTOR:
        return f"vector.{VectorFunct(d['funct']).name.lower()}"
    if op == Opcode.MATMUL:
        return f"matmul {d['m_rows']}x{d['k_chunks']}x{d['n_blocks']}"
    return op.name.lower()


def trace_events(perf, words, *, title: str = "flashnpu") -> dict:
    """The trace as a dict in the Chrome trace event format."""
    events = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": title}}]
    for tid, name in enumerate(TRACKS):
        events.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": name}})
    for unit, pc, accept, done in perf.timeline:
        events.append({
            "name": _label(words[pc]), "ph": "X", "pid": 1, "tid": TRACKS.index(unit),
            "ts": accept, "dur": max(1, done - accept), "args": {"pc": pc},
        })
    events.append({"name": "done", "ph": "i", "s": "g", "pid": 1, "tid": 0, "ts": perf.cycles})
    return {"traceEvents": events, "displayTimeUnit": "ns",
            "otherData": {"time_unit": "1 us in the viewer = 1 NPU cycle", "cycles": perf.cycles}}


def write_trace(path, perf, words, *, title: str = "flashnpu") -> Path:
    """Write the trace JSON to ``path`` and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(trace_events(perf, words, title=title)))
    return path
