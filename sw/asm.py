"""Assembler and disassembler of flashnpu programs.

One instruction per line::

    # comment (also after an instruction)
    load        signal=matrix mem=spad dram_addr=0x1000 dram_stride=16 rows=4 chunks=1
    matmul      wait=load signal=vector m_rows=4 k_chunks=1 n_blocks=1 w_addr=4
    vector.exp  wait=matrix rows=4 blocks=1 kv_valid=4 mult=23637 shift=16
    store       wait=vector mem=spad dram_addr=0x2000 dram_stride=4 rows=4 chunks=1
    halt
    .word 0x0000000000000000000000000000000000000000000000000000000000000003

* The mnemonic is the lower-case ``Opcode`` name (``load``, ``store``,
  ``matmul``, ``halt``); a VECTOR instruction is ``vector.<funct>`` with the
  lower-case ``VectorFunct`` name, or ``vector funct=<n>`` for a raw funct.
* ``wait=`` and ``signal=`` take comma-separated queue names (``load``,
  ``store``, ``matrix``, ``vector``) or a number (the 4-bit mask).
* Every other ``key=value`` is a field of the opcode's body view in
  ``spec/isa.py`` (``isa.field_table``, ``isa.FIELD_DOCS``). Fields not written
  are 0. Values are decimal, ``0x`` hex or ``0b`` binary, ``-`` for the signed
  field ``causal_offset``; ``mem`` and ``a_mem`` also take ``spad`` / ``acc``.
* ``.word <n>`` is a raw 256-bit word. The disassembler prints it for words
  that the syntax above cannot express exactly (an illegal opcode, or non-zero
  bits outside the opcode's fields), so ``assemble(disassemble(words)) ==
  words`` for every list of 256-bit words.

Field lists, offsets and ranges all come from ``spec/isa.py``; this module only
derives a fast bit-slicing view of them (:func:`decode_word`,
:func:`encode_word`, tested equal to ``isa.decode`` and ``isa.encode``, which
go through Amaranth and are about 100x slower); the golden model and the token
checker decode through it too.
"""

from __future__ import annotations

import re
from functools import lru_cache

from flashnpu.spec import isa
from flashnpu.spec.isa import INSTR_BITS, INSTR_LAYOUT, BODY_LAYOUT, BODY_OF, Mem, Opcode, Queue, VectorFunct

__all__ = ["AsmError", "instr_fields", "decode_word", "encode_word", "program_bytes", "program_words", "used_mask", "format_instr",
           "disassemble", "assemble", "mnemonic"]


class AsmError(ValueError):
    """A line of assembly that cannot be encoded; the message names the line, field and limit."""

    def __init__(self, line: int, message: str, field: str | None = None):
        self.line = line
        self.field = field
        super().__init__(f"line {line}: {message}")


# ------------------------------------------------------------ field tables
_HEADER = tuple((name, off, width, signed) for name, off, width, signed in isa.field_table(INSTR_LAYOUT)
                if "." not in name and name != "reserved")
_BODY_OFFSET = INSTR_LAYOUT["body"].offset


@lru_cache(maxsize=None)
def instr_fields(opcode: Opcode) -> tuple[tuple[str, int, int, bool], ...]:
    """(name, absolute bit offset, width, signed) of every field of ``opcode``'s word, header first."""
    view = BODY_OF[Opcode(opcode)]
    body = () if view is None else tuple(
        (name, _BODY_OFFSET + off, width, signed)
        for name, off, width, signed in isa.field_table(BODY_LAYOUT[view].shape))
    return _HEADER + body


@lru_cache(maxsize=None)
def used_mask(opcode: Opcode) -> int:
    """The bits of a word that ``opcode``'s fields occupy; the rest must be 0 for an exact round trip."""
    m = 0
    for _, off, width, _ in instr_fields(opcode):
        m |= ((1 << width) - 1) << off
    return m


_OP_SLICE = next((off, (1 << w) - 1) for n, off, w, _ in _HEADER if n == "opcode")


def _make_decoder(op: Opcode | None, fields):
    """A function ``word -> {field: value}`` for the words of ``op`` (``None``: an unknown opcode,
    decoded raw), generated from ``fields`` as one dict display of shifts and masks: the
    performance model decodes every distinct word of a program, and a loop over the field
    table costs twice as much."""
    items = []
    for name, off, width, signed in fields:
        if name == "opcode" and op is not None:
            items.append(f"{name!r}: op")
            continue
        v = f"(w >> {off}) & {(1 << width) - 1:#x}"
        if signed:      # two's complement: flip the sign bit, then subtract its weight
            v = f"(({v}) ^ {1 << (width - 1):#x}) - {1 << (width - 1):#x}"
        items.append(f"{name!r}: {v}")
    namespace = {"op": op}
    exec(f"def decode(w):\n    return {{{', '.join(items)}}}\n", namespace)
    return namespace["decode"]


_DECODERS = {int(op): _make_decoder(op, instr_fields(op)) for op in Opcode}
_DECODE_UNKNOWN = _make_decoder(None, _HEADER)


def decode_word(word: int) -> dict:
    """Same result as ``isa.decode(word)``, by plain bit slicing (fast)."""
    word = int(word)
    return _DECODERS.get((word >> _OP_SLICE[0]) & _OP_SLICE[1], _DECODE_UNKNOWN)(word)


def encode_word(opcode: Opcode, wait: int = 0, signal: int = 0, **body) -> int:
    """Same result and errors as ``isa.encode``, by plain bit shifting (fast)."""
    op = Opcode(opcode)
    fields = instr_fields(op)
    known = {name: (off, width, signed) for name, off, width, signed in fields}
    word = 0
    for name, v in (("opcode", int(op)), ("wait", wait), ("signal", signal), *body.items()):
        spec = known.get(name)
        if spec is None or (name == "opcode" and v != int(op)):
            raise ValueError(f"{op.name} has no field '{name}' (fields: "
                             f"{', '.join(n for n, *_ in fields[len(_HEADER):])})")
        off, width, signed = spec
        v = int(v)
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
        if not lo <= v <= hi:
            raise ValueError(f"{op.name} field '{name}' = {v}: must be in [{lo}, {hi}]")
        word |= (v & ((1 << width) - 1)) << off
    return word


def program_bytes(words) -> bytes:
    """The DRAM bytes of a program: word *k* at byte ``32*k``, little-endian."""
    return b"".join(int(w).to_bytes(INSTR_BITS // 8, "little") for w in words)


def program_words(data) -> list[int]:
    """Inverse of :func:`program_bytes` (``len(data)`` must be a multiple of 32)."""
    data = bytes(data)
    n = INSTR_BITS // 8
    if len(data) % n:
        raise ValueError(f"program of {len(data)} bytes: must be a multiple of {n}")
    return [int.from_bytes(data[k:k + n], "little") for k in range(0, len(data), n)]


# ------------------------------------------------------------ disassembler
_QUEUE_NAMES = {q: q.name.lower() for q in Queue}
_QUEUE_BY_NAME = {v: k for k, v in _QUEUE_NAMES.items()}
_HEX_FIELDS = {"dram_addr"}
#: Fields holding a Mem, printed and accepted by name (``mem`` always printed, ``a_mem`` when not spad).
_MEM_FIELDS = ("mem", "a_mem")


def _mask_text(mask: int) -> str:
    return ",".join(_QUEUE_NAMES[q] for q in Queue if mask >> q & 1)


def mnemonic(f: dict) -> str:
    """``load``, ``matmul``, ``vector.exp``, ... for decoded fields ``f`` (``vector`` for a raw funct)."""
    op = f["opcode"]
    if op == Opcode.VECTOR:
        try:
            return f"vector.{VectorFunct(f['funct']).name.lower()}"
        except ValueError:
            return "vector"
    return Opcode(op).name.lower()


def format_instr(word: int, *, all_fields: bool = False) -> str:
    """One line of assembly for ``word`` (without comment); ``.word`` if not expressible."""
    word = int(word)
    if not 0 <= word < 1 << INSTR_BITS:
        raise ValueError(f"word {word:#x} is not a {INSTR_BITS}-bit instruction")
    f = decode_word(word)
    op = f["opcode"]
    if not isinstance(op, Opcode) or word & ~used_mask(op):
        return f".word {word:#066x}"
    mn = mnemonic(f)
    parts = [f"{mn:<14}"]
    for key in ("wait", "signal"):
        if f[key]:
            parts.append(f"{key}={_mask_text(f[key])}")
    for name, _, _, _ in instr_fields(op)[len(_HEADER):]:
        v = f[name]
        if name == "funct" and mn != "vector":
            continue
        if v == 0 and not all_fields and name != "mem":
            continue
        if name in _MEM_FIELDS:
            text = Mem(v).name.lower()
        elif name in _HEX_FIELDS:
            text = f"{v:#x}"
        else:
            text = str(v)
        parts.append(f"{name}={text}")
    return " ".join(parts).rstrip()


def disassemble(words, *, pc: bool = False, all_fields: bool = False) -> str:
    """One line per word; ``pc=True`` appends ``# <index>`` to each line."""
    lines = []
    for k, w in enumerate(words):
        line = format_instr(w, all_fields=all_fields)
        lines.append(f"{line:<60} # {k}" if pc else line)
    return "\n".join(lines) + ("\n" if lines else "")


# --------------------------------------------------------------- assembler
_MNEMONICS = {op.name.lower(): op for op in Opcode}
_FUNCTS = {fn.name.lower(): fn for fn in VectorFunct}
_NUM = re.compile(r"^[+-]?(0x[0-9a-f_]+|0b[01_]+|0o[0-7_]+|[0-9][0-9_]*)$", re.IGNORECASE)


def _number(text: str, lineno: int, field: str) -> int:
    if not _NUM.match(text):
        raise AsmError(lineno, f"field '{field}': '{text}' is not a number", field)
    return int(text, 0) if not re.match(r"^[+-]?0[0-9]", text) else int(text, 10)


def _mask(text: str, lineno: int, field: str) -> int:
    if _NUM.match(text):
        v = _number(text, lineno, field)
    else:
        v = 0
        for name in text.split(","):
            q = _QUEUE_BY_NAME.get(name.strip().lower())
            if q is None:
                raise AsmError(lineno, f"field '{field}': unknown queue '{name}' "
                               f"(queues: {', '.join(_QUEUE_BY_NAME)})", field)
            if v >> q & 1:
                raise AsmError(lineno, f"field '{field}': queue '{name}' named twice", field)
            v |= 1 << q
    if not 0 <= v < 16:
        raise AsmError(lineno, f"field '{field}' = {v}: must be a 4-bit queue mask in [0, 15]", field)
    return v


def _assemble_line(text: str, lineno: int) -> int | None:
    text = text.split("#", 1)[0].strip()
    if not text:
        return None
    head, *args = text.split()
    head_l = head.lower()
    if head_l == ".word":
        if len(args) != 1:
            raise AsmError(lineno, ".word takes exactly one value", "word")
        v = _number(args[0], lineno, "word")
        if not 0 <= v < 1 << INSTR_BITS:
            raise AsmError(lineno, f"field 'word' = {v}: must be in [0, 2**{INSTR_BITS} - 1]", "word")
        return v
    funct = None
    if head_l.startswith("vector."):
        op = Opcode.VECTOR
        funct = _FUNCTS.get(head_l[len("vector."):])
        if funct is None:
            raise AsmError(lineno, f"unknown vector funct '{head[len('vector.'):]}' "
                           f"(functs: {', '.join(_FUNCTS)})", "funct")
    else:
        op = _MNEMONICS.get(head_l)
        if op is None:
            raise AsmError(lineno, f"unknown mnemonic '{head}' (mnemonics: "
                           f"{', '.join(m for m in _MNEMONICS if m != 'vector')}, "
                           f"vector.<{'|'.join(_FUNCTS)}>, .word)", "opcode")
    fields = {name: (off, width, signed) for name, off, width, signed in instr_fields(op)}
    values: dict[str, int] = {}
    seen: set[str] = set()
    if funct is not None:
        values["funct"] = int(funct)
    for arg in args:
        if "=" not in arg:
            raise AsmError(lineno, f"'{arg}' is not key=value", None)
        key, val = arg.split("=", 1)
        key = key.strip().lower()
        if key == "opcode" or key not in fields:
            known = [n for n in fields if n != "opcode"]
            raise AsmError(lineno, f"{head_l} has no field '{key}' (fields: {', '.join(known)})", key)
        if key == "funct" and funct is not None:
            raise AsmError(lineno, f"field 'funct' given twice (mnemonic {head_l} sets it)", key)
        if key in seen:
            raise AsmError(lineno, f"field '{key}' given twice", key)
        seen.add(key)
        if key in ("wait", "signal"):
            v = _mask(val, lineno, key)
        elif key in _MEM_FIELDS and val.lower() in ("spad", "acc"):
            v = int(Mem[val.upper()])
        else:
            v = _number(val, lineno, key)
        _, width, signed = fields[key]
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
        if not lo <= v <= hi:
            raise AsmError(lineno, f"field '{key}' = {v}: must be in [{lo}, {hi}] "
                           f"({'signed' if signed else 'unsigned'} {width} bits)", key)
        values[key] = v
    wait, signal = values.pop("wait", 0), values.pop("signal", 0)
    return encode_word(op, wait, signal, **values)


def assemble(text: str) -> list[int]:
    """Assemble ``text`` into 256-bit words; raises :class:`AsmError` on the first bad line."""
    words = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        w = _assemble_line(line, lineno)
        if w is not None:
            words.append(w)
    return words
