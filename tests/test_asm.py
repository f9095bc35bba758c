"""Assembler/disassembler: exact round trips and error messages."""

import random

import pytest

from flashnpu.spec import isa
from flashnpu.sw.asm import (
    AsmError, assemble, decode_word, disassemble, encode_word, format_instr, instr_fields, program_bytes, program_words,
)
from flashnpu.spec.isa import Opcode, VectorFunct


def _random_word(rng: random.Random, op: Opcode, funct=None) -> int:
    body = {}
    for name, _, width, signed in instr_fields(op)[3:]:
        v = rng.getrandbits(width) if rng.random() < 0.7 else rng.choice([0, (1 << width) - 1])
        if signed and v >> (width - 1):
            v -= 1 << width
        body[name] = v
    if funct is not None:
        body["funct"] = int(funct)
    return isa.encode(op, rng.getrandbits(4), rng.getrandbits(4), **body) if op != Opcode.HALT else isa.encode(op)


@pytest.mark.parametrize("op,funct", [(Opcode.LOAD, None), (Opcode.STORE, None), (Opcode.MATMUL, None),
                                      (Opcode.HALT, None)] + [(Opcode.VECTOR, f) for f in VectorFunct])
def test_round_trip_every_opcode(op, funct):
    rng = random.Random(int(op) * 100 + (funct or 0))
    words = [_random_word(rng, op, funct) for _ in range(60)]
    text = disassemble(words)
    assert assemble(text) == words
    assert assemble(disassemble(words, pc=True, all_fields=True)) == words
    mn = op.name.lower() if funct is None else f"vector.{funct.name.lower()}"
    assert all(line.split()[0] == mn for line in text.splitlines())


def test_round_trip_any_word():
    """Words the syntax cannot express (illegal opcode/funct, stray bits) still round-trip."""
    rng = random.Random(7)
    words = [rng.getrandbits(256) for _ in range(200)]
    words += [isa.encode(Opcode.VECTOR, funct=f, rows=3) for f in range(7, 16)]
    words += [0, isa.encode(Opcode.HALT) | (1 << 100), isa.encode(Opcode.LOAD, rows=1) | (1 << 255)]
    text = disassemble(words)
    assert assemble(text) == words
    lines = text.splitlines()
    assert lines[200].startswith("vector ") and "funct=7" in lines[200]
    assert lines[-3].startswith(".word 0x") and lines[-1].startswith(".word 0x")


def test_format_and_syntax():
    w = isa.encode(Opcode.MATMUL, wait=0b1001, signal=0b0010, m_rows=64, k_chunks=4, n_blocks=2,
                   a_addr=0, w_addr=128, accumulate=1)
    assert format_instr(w) == ("matmul         wait=load,vector signal=store accumulate=1 m_rows=64 "
                               "k_chunks=4 n_blocks=2 w_addr=128")
    ld = isa.encode(Opcode.LOAD, mem=1, dram_addr=0x1000, dram_stride=64, rows=2, chunks=1)
    assert format_instr(ld) == "load           mem=acc dram_addr=0x1000 dram_stride=64 rows=2 chunks=1"
    v = isa.encode(Opcode.VECTOR, funct=VectorFunct.EXP, rows=4, blocks=1, causal=1, causal_offset=-3)
    assert format_instr(v) == "vector.exp     rows=4 blocks=1 causal=1 causal_offset=-3"
    text = """
        # a comment line

        LOAD  Mem=ACC dram_addr=0x1000 dram_stride=0b1000000 rows=2 chunks=1   # trailing comment
        matmul wait=9 signal=store m_rows=64 k_chunks=4 n_blocks=2 w_addr=128 accumulate=1
        vector funct=2 rows=4 blocks=1 causal=1 causal_offset=-3
        halt
    """
    ld2 = isa.encode(Opcode.LOAD, mem=1, dram_addr=0x1000, dram_stride=64, rows=2, chunks=1)
    assert assemble(text) == [ld2, w, v, isa.encode(Opcode.HALT)]
    # pc comments
    assert disassemble([ld, w], pc=True).splitlines()[1].rstrip().endswith("# 1")
    assert disassemble([]) == ""


@pytest.mark.parametrize("text,line,words", [
    ("halt\nfoo rows=1", 2, ["unknown mnemonic 'foo'"]),
    ("vector.softmax rows=1", 1, ["unknown vector funct 'softmax'", "exp"]),
    ("load rows=1 bogus=3", 1, ["no field 'bogus'", "dram_addr"]),
    ("\n\nload rows=65536", 3, ["field 'rows' = 65536", "[0, 65535]", "16 bits"]),
    ("vector.exp causal_offset=-524289", 1, ["field 'causal_offset' = -524289", "[-524288, 524287]", "signed"]),
    ("load rows=-1", 1, ["field 'rows' = -1", "[0, 65535]"]),
    ("load rows=12x", 1, ["field 'rows'", "not a number"]),
    ("load wait=loud", 1, ["field 'wait'", "unknown queue 'loud'"]),
    ("load wait=16", 1, ["field 'wait' = 16", "[0, 15]"]),
    ("load wait=store,store", 1, ["queue 'store' named twice"]),
    ("load rows=1 rows=2", 1, ["field 'rows' given twice"]),
    ("vector.exp funct=3", 1, ["field 'funct' given twice"]),
    ("halt rows=1", 1, ["halt has no field 'rows'"]),
    ("load rows", 1, ["'rows' is not key=value"]),
    (".word 1 2", 1, [".word takes exactly one value"]),
    (f".word {1 << 256}", 1, ["field 'word'", "2**256 - 1"]),
    ("matmul opcode=3", 1, ["no field 'opcode'"]),
])
def test_errors(text, line, words):
    with pytest.raises(AsmError) as e:
        assemble(text)
    msg = str(e.value)
    assert msg.startswith(f"line {line}: ") and e.value.line == line, msg
    for w in words:
        assert w in msg, msg


def test_decode_word_is_isa_decode():
    rng = random.Random(3)
    for op in Opcode:
        for _ in range(30):
            w = _random_word(rng, op, rng.choice(list(VectorFunct)) if op == Opcode.VECTOR else None)
            assert decode_word(w) == isa.decode(w)


def test_encode_word_is_isa_encode():
    rng = random.Random(4)
    for op in Opcode:
        for _ in range(30):
            w = _random_word(rng, op, rng.choice(list(VectorFunct)) if op == Opcode.VECTOR else None)
            f = decode_word(w)
            f.pop("opcode")
            assert encode_word(op, **f) == isa.encode(op, **f) == w
    for bad in (dict(rows=1 << 16), dict(rows=-1), dict(bogus=1), dict(wait=16)):
        with pytest.raises(ValueError) as e1:
            isa.encode(Opcode.LOAD, **bad)
        with pytest.raises(ValueError) as e2:
            encode_word(Opcode.LOAD, **bad)
        name = next(iter(bad))
        assert f"'{name}'" in str(e1.value) and f"'{name}'" in str(e2.value)


def test_program_bytes():
    words = assemble("load rows=1 chunks=1 dram_addr=0x40\nhalt")
    data = program_bytes(words)
    assert len(data) == 64 and data[0] == Opcode.LOAD and data[32] == Opcode.HALT
    assert program_words(data) == words
    with pytest.raises(ValueError, match="multiple of 32"):
        program_words(data[:40])
