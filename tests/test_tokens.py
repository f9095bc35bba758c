"""Static token checker: accepts pipelined programs, rejects deadlocks, leftovers and overflows."""

import pytest

from flashnpu.sw.asm import assemble
from flashnpu.bench import TILE_STEPS, pipelined_tiles
from flashnpu.spec.config import load_config
from flashnpu.spec.isa import Queue
from flashnpu.sw.tokens import TokenError, check_tokens

LD, MM, VE, ST = TILE_STEPS


def pipeline(n: int, *, double_buffer=True) -> list[int]:
    return pipelined_tiles(n, double_buffer=double_buffer)


def test_accepts_pipelined_program():
    words = pipeline(12)
    r = check_tokens(words, "tiny")
    assert r.instructions == len(words) and r.halt_pc == len(words) - 1
    # Double buffering: a producer runs at most two tiles ahead of its consumer.
    assert r.max_count[(Queue.LOAD, Queue.MATRIX)] == 2
    assert r.max_count[(Queue.MATRIX, Queue.LOAD)] == 2
    assert r.max_count[(Queue.VECTOR, Queue.STORE)] == 2
    assert r.program_order_max[(Queue.LOAD, Queue.MATRIX)] == 1
    assert r.pushes[(Queue.LOAD, Queue.MATRIX)] == 12
    assert r.max_count[(Queue.LOAD, Queue.STORE)] == 0


def test_rejects_deadlock():
    """MATRIX waits for VECTOR first and VECTOR waits for MATRIX first: neither can start."""
    words = assemble(f"""
        {MM.format(a=0, o=0)} wait=vector signal=vector
        {VE.format(o=0, s=200)} wait=matrix signal=matrix
        halt
    """)
    with pytest.raises(TokenError) as e:
        check_tokens(words, "tiny")
    assert e.value.pc == 0
    assert "pops VECTOR->MATRIX before a matching push" in str(e.value) and "deadlock" in str(e.value)


def test_rejects_pop_before_push_later():
    words = pipeline(3)
    words.insert(5, assemble(ST.format(s=200) + " wait=matrix")[0])   # MATRIX->STORE is never pushed
    with pytest.raises(TokenError) as e:
        check_tokens(words, "tiny")
    assert e.value.pc == 5 and "MATRIX->STORE" in str(e.value)


def test_rejects_leftover_tokens_and_missing_halt():
    words = assemble(f"""
        {LD.format(a=0)} signal=matrix
        {LD.format(a=8)} signal=matrix
        {MM.format(a=0, o=0)} wait=load
        halt
    """)
    with pytest.raises(TokenError) as e:
        check_tokens(words, "tiny")
    assert e.value.pc == 3 and "tokens left at HALT" in str(e.value) and "LOAD->MATRIX" in str(e.value)
    with pytest.raises(TokenError) as e:
        check_tokens(words[:3], "tiny")
    assert e.value.pc == 3 and "no HALT" in str(e.value)
    # Instructions after HALT are not part of the program.
    assert check_tokens(words[:1] + words[2:3] + words[3:] + words[:2], "tiny").instructions == 3


def test_rejects_runahead_overflow():
    """In program order LOAD->MATRIX never exceeds 1, but LOAD never waits: it can run 20 ahead."""
    lines = []
    for i in range(20):
        lines += [LD.format(a=8 * (i % 2)) + " signal=matrix", MM.format(a=8 * (i % 2), o=0) + " wait=load"]
    words = assemble("\n".join(lines + ["halt"]))
    with pytest.raises(TokenError) as e:
        check_tokens(words, "tiny")          # token_bits = 4: at most 15
    assert e.value.pc == 2 * 15                # the 16th LOAD's push
    assert "LOAD->MATRIX can reach 16" in str(e.value) and "worst case 20" in str(e.value)
    wide = load_config("tiny").replace(token_bits=5)
    assert check_tokens(words, wide).max_count[(Queue.LOAD, Queue.MATRIX)] == 20
    # 15 ahead is still fine with 4 bits.
    assert check_tokens(words[:30] + words[-1:], "tiny").max_count[(Queue.LOAD, Queue.MATRIX)] == 15


def test_runahead_through_a_chain():
    """VECTOR->STORE fills when STORE is frozen, even though VECTOR depends on MATRIX and LOAD."""
    words = pipeline(20, double_buffer=False)
    with pytest.raises(TokenError) as e:
        check_tokens(words, load_config("tiny").replace(token_bits=4))
    assert "can reach 16" in str(e.value)
    r = check_tokens(pipeline(15, double_buffer=False), "tiny")
    assert r.max_count[(Queue.VECTOR, Queue.STORE)] == 15


def test_rejects_illegal_instruction():
    words = assemble("load rows=0 chunks=1\nhalt")
    with pytest.raises(TokenError) as e:
        check_tokens(words, "tiny")
    assert e.value.pc == 0 and "BAD_FIELD" in str(e.value)


def test_30k_instruction_pipeline():
    """Its speed target (< 1 s) is a bench row (TOOL_SPEED); here only that it is accepted."""
    words = pipeline(7500)            # 30001 instructions
    r = check_tokens(words, "default")
    assert r.instructions == len(words) and r.max_count[(Queue.LOAD, Queue.MATRIX)] == 2
