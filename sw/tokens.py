"""Static checker of a program's dependency tokens.

A program passes :func:`check_tokens` when, on the hardware, it can neither
deadlock nor overflow a token counter, whatever the timing of the units.

Why program-order non-negativity is enough to exclude deadlock
---------------------------------------------------------------
Walk the program in order, counting pushes and pops per counter ``src -> dst``.
If no counter ever goes negative, then the k-th pop of every counter comes
after at least k pushes of that counter in program order. Now take any state of
the concurrent machine in which some instruction has not started, and let
``I`` be the oldest such instruction (program order). Every instruction older
than ``I`` has started, and a started instruction always completes (units do
not wait on anything once they run), pushing its tokens. ``I`` is at the head
of its queue: the dispatcher is in program order and every older instruction of
``I``'s queue has left the queue by starting, so ``I`` can be dispatched and
reaches the head even with a queue of depth 1. Each of ``I``'s pops is the k-th
pop of its counter, which has at least k pushes from older instructions; all of
them complete, and pops of younger instructions cannot take them first
(younger instructions of the same destination queue are behind ``I``). So
``I`` starts. By induction every instruction starts and completes: no deadlock,
for any queue depth. Conversely, a pop before its push in program order can
hang the machine (e.g. two queues whose first instructions wait on each other).

Worst-case counter values
-------------------------
Counter ``src -> dst`` has one consumer, ``dst``, so it is largest when
``dst`` is slow and everything else runs ahead. For each destination queue
``D`` and each position ``j`` of ``D`` (its first ``j`` instructions done, the
``j``-th not yet started), let every other queue run greedily: execute its
head whenever the head's tokens are available, pushes counted at once. Tokens
only ever enable progress, so the greedy fixpoint is the furthest any
schedule can get with ``D`` at ``j`` and gives the largest pushes into ``D``.
The bound of ``src -> D`` is the maximum over ``j`` of its value there. The
fixpoint for ``j + 1`` contains the one for ``j`` (progress is monotone), so
the sweep continues from the previous state: O(n) per destination. The
dispatcher's queue-depth limit is ignored, which can only overestimate, so the
bound holds for every ``queue_depth``. A bound above ``2**token_bits - 1`` is
rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flashnpu.sw.asm import decode_word
from flashnpu.spec.config import NPUConfig, load_config
from flashnpu.sw.golden import check_fields
from flashnpu.spec.isa import OPCODE_QUEUE, ErrorCode, Opcode, Queue

__all__ = ["TokenError", "TokenReport", "check_tokens"]


class TokenError(ValueError):
    """A program whose tokens can deadlock or overflow; ``pc`` is the offending instruction's index."""

    def __init__(self, pc: int, message: str):
        self.pc = pc
        super().__init__(f"pc {pc}: {message}")


@dataclass
class TokenReport:
    """What :func:`check_tokens` found for a program that passes.

    * ``instructions``: instructions up to and including the first HALT.
    * ``halt_pc``: index of that HALT.
    * ``pushes``: tokens pushed per counter ``(src, dst)``.
    * ``program_order_max``: the largest value of each counter in program-order execution.
    * ``max_count``: the worst-case value of each counter under concurrent execution (the bound).
    """
    instructions: int
    halt_pc: int
    pushes: dict = field(default_factory=dict)
    program_order_max: dict = field(default_factory=dict)
    max_count: dict = field(default_factory=dict)


_PAIRS = [(s, d) for s in Queue for d in Queue if s != d]


#: mask -> the queues whose bits it sets (a table: the check runs on every instruction).
_BITS = tuple(tuple(q for q in Queue if mask >> q & 1) for mask in range(1 << len(Queue)))


def _bits(mask: int) -> tuple[Queue, ...]:
    return _BITS[mask]


def check_tokens(words, config) -> TokenReport:
    """Check the tokens of ``words`` (a program ending with HALT) for ``config``; raise :class:`TokenError`.

    Instructions after the first HALT are ignored. An instruction that fails
    checks 1-6 (``golden.check_fields``) also raises, naming its ErrorCode.
    """
    config: NPUConfig = load_config(config)
    limit = (1 << config.token_bits) - 1
    # ------------------------------------------------ program order, up to HALT
    count = {p: 0 for p in _PAIRS}
    po_max = dict(count)
    pushes = dict(count)
    per_queue: dict[Queue, list] = {q: [] for q in Queue}   # (pc, wait queues, signal queues)
    halt_pc = None
    for pc, w in enumerate(words):
        f = decode_word(w)
        code, why = check_fields(f, config)
        if code != ErrorCode.NONE:
            raise TokenError(pc, f"{code.name}: {why}")
        op = f["opcode"]
        if op == Opcode.HALT:
            left = {f"{s.name}->{d.name}": n for (s, d), n in count.items() if n}
            if left:
                raise TokenError(pc, f"tokens left at HALT (the NPU stops with TOKENS_LEFT): {left}")
            halt_pc = pc
            break
        q = OPCODE_QUEUE[op]
        waits, signals = _bits(f["wait"]), _bits(f["signal"])
        for src in waits:
            if count[(src, q)] == 0:
                raise TokenError(pc, f"{op.name} pops {src.name}->{q.name} before a matching push in "
                                 "program order (the queues can deadlock)")
            count[(src, q)] -= 1
        for dst in signals:
            count[(q, dst)] += 1
            pushes[(q, dst)] += 1
            po_max[(q, dst)] = max(po_max[(q, dst)], count[(q, dst)])
            if count[(q, dst)] > limit:
                raise TokenError(pc, f"counter {q.name}->{dst.name} reaches {count[(q, dst)]} in program "
                                 f"order, above 2**token_bits - 1 = {limit}")
        per_queue[q].append((pc, waits, signals))
    if halt_pc is None:
        raise TokenError(len(words), "no HALT: the program runs off its end")

    # ------------------------------------------------ worst case, per consumer
    bound = {p: 0 for p in _PAIRS}
    for dst in Queue:
        others = [q for q in Queue if q != dst]
        pos = {q: 0 for q in Queue}
        cnt = {p: 0 for p in _PAIRS}
        over = {}                       # (src, dst) -> (pc of the first push above limit, dst's pc then)

        def run_ahead(d_pc):
            moved = True
            while moved:
                moved = False
                for q in others:
                    lst, k = per_queue[q], pos[q]
                    while k < len(lst):
                        pc, waits, signals = lst[k]
                        if not all([cnt[(s, q)] for s in waits]):
                            break
                        for s in waits:
                            cnt[(s, q)] -= 1
                        for d in signals:
                            cnt[(q, d)] += 1
                            if d == dst and cnt[(q, d)] > bound[(q, d)]:
                                bound[(q, d)] = cnt[(q, d)]
                                if cnt[(q, d)] == limit + 1:
                                    over[(q, d)] = (pc, d_pc)
                        k += 1
                        moved = True
                    pos[q] = k

        dl = per_queue[dst]
        for j in range(len(dl) + 1):
            run_ahead(dl[j][0] if j < len(dl) else halt_pc)
            if j == len(dl):
                break
            pc, waits, signals = dl[j]
            for s in waits:
                # Cannot fail after the program-order pass (see the module docstring).
                assert cnt[(s, dst)] > 0, (pc, s, dst)
                cnt[(s, dst)] -= 1
            for d in signals:
                cnt[(dst, d)] += 1
        for src in others:
            if bound[(src, dst)] > limit:
                push_pc, d_pc = over[(src, dst)]
                raise TokenError(push_pc, f"counter {src.name}->{dst.name} can reach {limit + 1} at this push "
                                 f"(worst case {bound[(src, dst)]}), above 2**token_bits - 1 = {limit}: "
                                 f"{src.name} runs ahead while {dst.name} still waits at pc {d_pc}")
    return TokenReport(instructions=halt_pc + 1, halt_pc=halt_pc, pushes=pushes,
                       program_order_max=po_max, max_count=bound)
