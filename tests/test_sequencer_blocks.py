"""Each block of the sequencer alone in Amaranth's simulator: fetch, dispatch, tokens.

tests/test_sequencer.py runs them together; these pin each block's own contract.
"""

from flashnpu.hw.sequencer_dispatch import SequencerDispatch
from flashnpu.hw.sequencer_fetch import SequencerFetch
from flashnpu.hw.sequencer_tokens import SequencerTokens
from flashnpu.spec.config import load_config
from flashnpu.spec.isa import ErrorCode, Opcode, Queue, decode, encode
from flashnpu.spec.timing import timing

from support.sim import simulate as run

TINY = load_config("tiny")
T = timing(TINY)


def test_fetch_keeps_depth_outstanding_and_drops_stale():
    """fetch_depth requests in flight, words in order with their pc, stale responses dropped after go."""
    dut = SequencerFetch(TINY)
    base = 0x1000

    async def tb(ctx):
        ctx.set(dut.grant.prog_addr, base)
        ctx.set(dut.grant.prog_end, base + 32 * 100)
        ctx.set(dut.go, 1)
        await ctx.tick()
        ctx.set(dut.go, 0)
        reqs = []
        ctx.set(dut.fetch.req.ready, 1)
        for _ in range(T.fetch_depth + 3):        # nothing answers: at most fetch_depth requests
            if ctx.get(dut.fetch.req.valid):
                reqs.append(ctx.get(dut.fetch.req.payload.addr))
            await ctx.tick()
        assert reqs == [base + 32 * k for k in range(T.fetch_depth)]
        # Answer three; F takes word 0, then holds it while dispatch is not ready.
        got = []
        ctx.set(dut.fetch.req.ready, 0)
        for k in range(3):
            ctx.set(dut.fetch.resp.valid, 1)
            ctx.set(dut.fetch.resp.payload.word, 100 + k)
            ctx.set(dut.fetch.resp.payload.error, k == 2)
            ctx.set(dut.word.ready, 1)
            while True:
                if ctx.get(dut.word.valid):
                    got.append((ctx.get(dut.word.payload.pc), ctx.get(dut.word.payload.word.as_value()),
                                ctx.get(dut.word.payload.fetch_error)))
                hs = ctx.get(dut.fetch.resp.ready)
                await ctx.tick()
                if hs:
                    break
        ctx.set(dut.fetch.resp.valid, 0)
        while ctx.get(dut.word.valid):
            got.append((ctx.get(dut.word.payload.pc), ctx.get(dut.word.payload.word.as_value()),
                        ctx.get(dut.word.payload.fetch_error)))
            await ctx.tick()
        assert sorted(set(got)) == [(0, 100, 0), (1, 101, 0), (2, 102, 1)]
        assert ctx.get(dut.next_pc) == 3
        # A new run: the fetch_depth - 3 outstanding responses are dropped, then pc 0 again.
        ctx.set(dut.word.ready, 0)
        ctx.set(dut.go, 1)
        await ctx.tick()
        ctx.set(dut.go, 0)
        for k in range(T.fetch_depth - 3):
            ctx.set(dut.fetch.resp.valid, 1)
            ctx.set(dut.fetch.resp.payload.word, 7)
            assert ctx.get(dut.fetch.resp.ready)
            await ctx.tick()
            assert not ctx.get(dut.word.valid)
        ctx.set(dut.fetch.resp.payload.word, 55)
        await ctx.tick()
        ctx.set(dut.fetch.resp.valid, 0)
        assert ctx.get(dut.word.valid) and ctx.get(dut.word.payload.pc) == 0
        assert ctx.get(dut.word.payload.word.as_value()) == 55

    run(dut, tb)


def test_fetch_window_end_is_a_window_error():
    """Past prog_end nothing is requested; the next pc is offered as a window error."""
    dut = SequencerFetch(TINY)

    async def tb(ctx):
        ctx.set(dut.grant.prog_addr, 0)
        ctx.set(dut.grant.prog_end, 32)
        ctx.set(dut.go, 1)
        await ctx.tick()
        ctx.set(dut.go, 0)
        ctx.set(dut.fetch.req.ready, 1)
        n = 0
        for _ in range(5):
            n += ctx.get(dut.fetch.req.valid)
            await ctx.tick()
        assert n == 1
        ctx.set(dut.fetch.resp.valid, 1)
        ctx.set(dut.word.ready, 1)
        await ctx.tick()
        ctx.set(dut.fetch.resp.valid, 0)
        assert ctx.get(dut.word.payload.pc) == 0 and not ctx.get(dut.word.payload.window_error)
        await ctx.tick()
        assert ctx.get(dut.word.valid) and ctx.get(dut.word.payload.pc) == 1
        assert ctx.get(dut.word.payload.window_error)

    run(dut, tb)


def _word(opcode, wait=0, signal=0, **f):
    return encode(opcode, wait=wait, signal=signal, **f)


def test_dispatch_queues_in_order_and_checks_tokens():
    """Words go to their queues in order; a pop of an empty program-order counter stops at its pc."""
    dut = SequencerDispatch(TINY)
    mm = 1 << Queue.MATRIX
    words = [
        _word(Opcode.LOAD, signal=mm, dram_addr=0, rows=1, chunks=1, dram_stride=0),
        _word(Opcode.MATMUL, wait=1 << Queue.LOAD, m_rows=1, k_chunks=1, n_blocks=1),
        _word(Opcode.MATMUL, wait=1 << Queue.LOAD, m_rows=1, k_chunks=1, n_blocks=1),
    ]
    stops = []

    async def tb(ctx):
        ctx.set(dut.grant.windows[0].base, 0)
        ctx.set(dut.grant.windows[0].limit, 1 << 20)
        ctx.set(dut.go, 1)
        await ctx.tick()
        ctx.set(dut.go, 0)
        ctx.set(dut.active, 1)
        for pc, w in enumerate(words):
            ctx.set(dut.word.valid, 1)
            ctx.set(dut.word.payload.word.as_value(), w)
            ctx.set(dut.word.payload.pc, pc)
            assert ctx.get(dut.word.ready)
            if ctx.get(dut.stop.valid):
                stops.append((ctx.get(dut.stop.payload.code), ctx.get(dut.stop.payload.pc)))
            await ctx.tick()
        ctx.set(dut.word.valid, 0)
        assert ctx.get(dut.load.valid) and ctx.get(dut.load.payload.pc) == 0
        assert ctx.get(dut.matrix.valid) and ctx.get(dut.matrix.payload.pc) == 1
        assert decode(ctx.get(dut.matrix.payload.word.as_value()))["opcode"] == Opcode.MATMUL
        assert not ctx.get(dut.store.valid) and not ctx.get(dut.tokens_left)
        ctx.set(dut.matrix.ready, 1)
        await ctx.tick()
        assert not ctx.get(dut.matrix.valid)      # the head left; the third word never entered

    run(dut, tb)
    assert stops == [(ErrorCode.TOKEN_UNDERFLOW, 2)]


def test_tokens_issue_after_done_and_in_order():
    """A MATRIX head waiting on LOAD issues the cycle after the LOAD's done; the counter is popped."""
    dut = SequencerTokens(TINY)
    load = encode(Opcode.LOAD, signal=1 << Queue.MATRIX, dram_addr=0, rows=1, chunks=1, dram_stride=0)
    mat = encode(Opcode.MATMUL, wait=1 << Queue.LOAD, m_rows=1, k_chunks=1, n_blocks=1)

    async def tb(ctx):
        ctx.set(dut.go, 1)
        await ctx.tick()
        ctx.set(dut.go, 0)
        ctx.set(dut.busy, 1)
        ctx.set(dut.load.instr.ready, 1)
        ctx.set(dut.matrix.instr.ready, 1)
        ctx.set(dut.load_q.valid, 1)
        ctx.set(dut.load_q.payload.word.as_value(), load)
        ctx.set(dut.load_q.payload.pc, 0)
        ctx.set(dut.matrix_q.valid, 1)
        ctx.set(dut.matrix_q.payload.word.as_value(), mat)
        ctx.set(dut.matrix_q.payload.pc, 1)
        assert ctx.get(dut.load.instr.valid) and ctx.get(dut.load_q.ready)
        assert not ctx.get(dut.matrix.instr.valid) and ctx.get(dut.stall) == 1 << Queue.MATRIX
        assert not ctx.get(dut.heads[Queue.MATRIX].tokens_ok)
        await ctx.tick()
        ctx.set(dut.load_q.valid, 0)
        assert ctx.get(dut.oldest[Queue.LOAD].valid) and ctx.get(dut.oldest[Queue.LOAD].pc) == 0
        for _ in range(3):                                      # the LOAD runs
            assert not ctx.get(dut.matrix.instr.valid)
            await ctx.tick()
        ctx.set(dut.load.done, 1)
        assert not ctx.get(dut.matrix.instr.valid)
        await ctx.tick()
        ctx.set(dut.load.done, 0)
        assert not ctx.get(dut.oldest[Queue.LOAD].valid)
        assert ctx.get(dut.matrix.instr.valid) and ctx.get(dut.matrix_q.ready)
        await ctx.tick()
        ctx.set(dut.matrix_q.valid, 0)
        # A pending stop older than the head keeps it from issuing.
        ctx.set(dut.matrix_q.valid, 1)
        ctx.set(dut.matrix_q.payload.word.as_value(), encode(Opcode.MATMUL, m_rows=1, k_chunks=1, n_blocks=1))
        ctx.set(dut.matrix_q.payload.pc, 5)
        ctx.set(dut.stopping, 1)
        ctx.set(dut.stop_pc, 5)
        assert not ctx.get(dut.heads[Queue.MATRIX].eligible) and not ctx.get(dut.matrix.instr.valid)
        ctx.set(dut.stop_pc, 6)
        assert ctx.get(dut.matrix.instr.valid)

    run(dut, tb)
