"""Fuzz category ``golden_programs``: mutated and random programs on the golden model.

A case is made from its seed alone (:func:`make_mutant`): a compiled program
of a small workload on the tiny config (or a random program of legal-looking
words), with one to four mutations: a field of one instruction set to a
boundary, off-by-one, zero, huge or random value (DRAM addresses past the
image, past the DMA windows or into the code, SRAM rows past the end), a
token mask bit flipped, a random opcode or funct, HALT removed or moved,
instructions deleted, duplicated or swapped, ``PROG_ADDR`` pointing into the
data, the host's grant (code window, DMA windows) shrunk, split or closed,
the image cut short. The RTL categories (``flashnpu/fuzz_rtl.py``) run the same
mutants, so ``--replay golden_programs:S`` and ``--replay rtl_programs:S``
show the same program.

On the golden model (with a step budget) each case must end in completion or
an ``NpuError`` with a code and a pc; the budget running out is a hang, any
other exception a crash. Programs the golden model completes also go through
``sw/tokens.check_tokens`` and ``sw/perfmodel.predict``: the token checker
may reject them only for the concurrent worst case (the program-order checks
are the golden model's own), the performance model must not crash and must
count the same instructions. A static or token error of the golden model at
pc ``p`` must be the token checker's error at ``p`` too.
"""

from __future__ import annotations

import inspect
import random
import time
from dataclasses import dataclass, field

import numpy as np

from flashnpu.sw.asm import decode_word, encode_word, instr_fields, program_bytes
from flashnpu.spec.config import NPUConfig, load_config
from flashnpu.fuzz import Budget, Stats, case_seed, exc_text, one_line
from flashnpu.sw.golden import row_ranges
from flashnpu.spec.isa import INSTR_BYTES, OPCODE_QUEUE, ErrorCode, Mem, Opcode, Queue, VectorFunct

__all__ = ["Base", "Mutant", "base_programs", "make_mutant", "golden_outcome", "GoldenOutcome",
           "capabilities", "program_hazards", "scrub_program", "run_category", "replay_case"]

#: Step budget of the golden model: far above any image's words (every word runs at most once).
MAX_INSTRUCTIONS = 200_000

#: Error codes that the golden model finds from the words alone (checks 1-6, tokens), in program order.
STATIC_CODES = frozenset({
    ErrorCode.ILLEGAL_OPCODE, ErrorCode.ILLEGAL_FUNCT, ErrorCode.BAD_TOKEN_MASK, ErrorCode.BAD_FIELD,
    ErrorCode.SPAD_RANGE, ErrorCode.ACC_RANGE, ErrorCode.STATE_RANGE, ErrorCode.DMA_MISALIGNED,
    ErrorCode.TOKEN_OVERFLOW, ErrorCode.TOKEN_UNDERFLOW, ErrorCode.TOKENS_LEFT,
})


# ================================================================ capabilities
_CAPS: dict = {}


def capabilities() -> dict:
    """What the golden model and the register map offer today (others extend them concurrently)."""
    if _CAPS:
        return _CAPS
    from flashnpu.sw import golden
    from flashnpu.spec import regmap
    params = inspect.signature(golden.GoldenNPU.run).parameters
    _CAPS["grant"] = "grant" in params and hasattr(regmap, "DramGrant") and "PROG_END" in regmap.REG
    _CAPS["faults"] = "faults" in params
    _CAPS["undefined"] = "undefined" in inspect.signature(golden.NpuError.__init__).parameters
    return _CAPS


def make_grant(prog_addr: int, prog_end: int, windows):
    from flashnpu.spec.regmap import DramGrant
    return DramGrant(int(prog_addr), int(prog_end), tuple((int(a), int(b)) for a, b in windows))


# ================================================================ base programs
@dataclass
class Base:
    """A compiled program and its packed image: what mutants start from."""
    name: str
    words: list
    data: np.ndarray        # the image up to prog_addr (inputs, outputs)
    prog_addr: int
    image: np.ndarray       # the whole packed image
    program: object = None  # the compiled Program (None for random programs)
    workload: object = None
    tensors: dict | None = None

    @property
    def size(self) -> int:
        return int(self.image.size)


#: The workloads the program categories compile (small: the tiny config runs them in a few thousand cycles).
def _workloads():
    from flashnpu.sw.workload import AttentionWorkload as A, GemmWorkload as G
    return [
        ("attention", A(1, 1, 1, 8, 8, 4)),
        ("attention-causal", A(1, 1, 1, 8, 12, 8, True)),
        ("attention-gqa", A(1, 4, 2, 8, 8, 4, True)),
        ("attention-ragged", A(1, 1, 1, 7, 13, 6, True)),
        ("attention-mqa", A(1, 2, 1, 5, 9, 4)),
        ("gemm", G(8, 12, 20)),
        ("gemm-small", G(4, 4, 4)),
        ("gemm-ragged", G(5, 7, 9)),
    ]


#: How often each base is drawn (the GQA program is 4x longer: drawn less, the golden loop stays fast).
_BASE_WEIGHTS = {"attention": 3, "attention-causal": 3, "attention-gqa": 1, "attention-ragged": 2,
                 "attention-mqa": 2, "gemm": 3, "gemm-small": 3, "gemm-ragged": 2}

_BASES: dict = {}


def base_programs(cfg: NPUConfig) -> list[Base]:
    """The compiled seeds for ``cfg`` (cached per config)."""
    key = tuple(sorted(cfg.to_dict().items()))
    if key in _BASES:
        return _BASES[key]
    from flashnpu.sw.compiler import compile_workload
    from flashnpu.sw.reference import make_tensors
    out = []
    for i, (name, wl) in enumerate(_workloads()):
        prog = compile_workload(wl, cfg)
        t = make_tensors(wl, 100 + i)
        img = prog.pack(t)
        out.append(Base(name, [int(w) for w in prog.words], img[:prog.prog_addr].copy(), int(prog.prog_addr),
                        img, prog, wl, t))
    _BASES[key] = out
    return out


def _cover(n: int, r: int):
    """(addr, rows, blocks, stride) of VECTOR instructions whose rows cover ``[0, n)``, at most ``r`` rows each."""
    if n <= 0:
        return []
    if n <= r:
        return [(0, n, 1, 0)]
    out = []
    full = n // r
    while full:
        b = min(full, 255)
        a = out[-1][0] + out[-1][1] * out[-1][2] if out else 0
        out.append((a, r, b, r))
        full -= b
    if n % r:
        out.append((n - r, r, 1, 0))
    return out


def scrub_program(cfg: NPUConfig, spad_n: int | None = None, acc_n: int | None = None,
                  state_n: int | None = None):
    """(image, prog_addr, grant or None): INIT the first ``state_n`` state rows, zero the first ``acc_n``
    accumulator rows (SCALE by F = 0) and ``spad_n`` scratchpad rows (REQUANT with mult 0); None: all.

    The RTL categories run it before each case on the rows the case reads, so
    that a case's outcome does not depend on the case before it (the golden
    model starts from the same state: :func:`scrubbed_state`). Vector
    instructions only, one queue: a few cycles per row, no DMA.
    """
    spad_n = cfg.spad_rows if spad_n is None else min(int(spad_n), cfg.spad_rows)
    acc_n = cfg.acc_rows if acc_n is None else min(int(acc_n), cfg.acc_rows)
    state_n = cfg.vector_state_rows if state_n is None else min(int(state_n), cfg.vector_state_rows)
    r = min(cfg.vector_state_rows, cfg.acc_rows)
    if acc_n:
        state_n = max(state_n, min(r, acc_n))       # SCALE needs F = 0 on the state rows it uses
    words = []
    if state_n:
        words.append(encode_word(Opcode.VECTOR, funct=VectorFunct.INIT, rows=state_n, blocks=1, state_addr=0))
    for a, rows, blocks, stride in _cover(acc_n, r):
        words.append(encode_word(Opcode.VECTOR, funct=VectorFunct.SCALE, rows=rows, blocks=blocks,
                                 acc_addr=a, acc_block_stride=stride, state_addr=0))
    for a, rows, blocks, stride in _cover(spad_n, r):
        words.append(encode_word(Opcode.VECTOR, funct=VectorFunct.REQUANT, rows=rows, blocks=blocks,
                                 spad_addr=a, spad_block_stride=stride, acc_addr=0, acc_block_stride=0,
                                 state_addr=0, mult=0, shift=0))
    words.append(encode_word(Opcode.HALT))
    code = program_bytes(words)
    img = np.zeros(_align(len(code), 64) + 64, dtype=np.uint8)
    img[:len(code)] = np.frombuffer(code, dtype=np.uint8)
    grant = make_grant(0, len(code), ((len(code), img.size),)) if capabilities()["grant"] else None
    return img, 0, grant


def scrubbed_state(npu):
    """Set a golden model's state to what the full scrub program leaves (zeros, M = NEG_INF, L = F = 0)."""
    from flashnpu.spec.numerics import NEG_INF
    npu.spad[:] = 0
    npu.acc[:] = 0
    npu.M[:] = NEG_INF
    npu.L[:] = 0
    npu.F[:] = 0
    return npu


# ================================================================ words and fields
def _fields(op) -> dict:
    return {name: (off, width, signed) for name, off, width, signed in instr_fields(op)}


_FIELDS = {op: _fields(op) for op in Opcode}
_OPCODE_OFF, _OPCODE_W, _ = _FIELDS[Opcode.HALT]["opcode"]
_FUNCT = _FIELDS[Opcode.VECTOR]["funct"]


def fget(word: int, spec) -> int:
    off, width, signed = spec
    v = (word >> off) & ((1 << width) - 1)
    if signed and v >> (width - 1):
        v -= 1 << width
    return v


def fset(word: int, spec, value: int) -> int:
    off, width, _ = spec
    m = ((1 << width) - 1) << off
    return (word & ~m) | ((int(value) & ((1 << width) - 1)) << off)


def opcode_of(word: int):
    raw = (word >> _OPCODE_OFF) & ((1 << _OPCODE_W) - 1)
    try:
        return Opcode(raw)
    except ValueError:
        return None


def _align(x: int, a: int) -> int:
    return -(-x // a) * a


# ================================================================ mutants
@dataclass
class Mutant:
    """One case: an image (program included), where the program starts, the host's grant and AXI faults."""
    seed: int
    base: str
    muts: list
    image: np.ndarray
    prog_addr: int
    grant: object = None
    faults: tuple = ()
    n_words: int = 0                         # words written at the base's prog_addr
    code_addr: int = 0                       # where those words are
    meta: dict = field(default_factory=dict)

    def describe(self) -> str:
        g = self.grant
        gs = (f"grant code [{g.prog_addr:#x}, {g.prog_end:#x}) windows "
              + ", ".join(f"[{a:#x}, {b:#x})" for a, b in g.windows)) if g is not None else "no grant"
        fs = ("; faults " + ", ".join(f"[{a:#x}, {b:#x}) {k}" for a, b, k in self.faults)) if self.faults else ""
        return (f"base {self.base}; {'; '.join(self.muts) or 'unmutated'}; image {self.image.size} B, "
                f"prog_addr {self.prog_addr:#x}; {gs}{fs}")


class _Builder:
    """The mutable state of a mutant while mutations apply."""

    def __init__(self, rng: random.Random, cfg: NPUConfig, base: Base):
        self.rng, self.cfg, self.base = rng, cfg, base
        self.words = list(base.words)
        self.data = base.data
        self.code_addr = base.prog_addr
        self.prog_addr = base.prog_addr
        self.extra = 0                # zero bytes after the code (0: align to 64)
        self.cut = None               # image size if truncated
        self.prog_end = None          # None: code_addr.. end of the words
        self.windows = None           # None: the whole image
        self.muts = []

    def size(self) -> int:
        if self.cut is not None:
            return self.cut
        return _align(self.code_addr + INSTR_BYTES * len(self.words), 64) + self.extra

    def image(self) -> np.ndarray:
        code = np.frombuffer(program_bytes(self.words), dtype=np.uint8)
        end = self.code_addr + code.size
        img = np.zeros(max(self.size(), end), dtype=np.uint8)
        img[:self.data.size] = self.data
        img[self.code_addr:end] = code
        return img[:self.size()].copy() if self.cut is not None else img


def _value_for(rng: random.Random, b: _Builder, name: str, spec, cur: int) -> int:
    """A new value for field ``name`` (current ``cur``): boundaries, off-by-one, zero, huge, random, specials."""
    off, width, signed = spec
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    cfg = b.cfg
    beat = cfg.dma_beat_bytes
    size = b.size()
    choices = [0, 1, cur - 1, cur + 1, hi, hi - 1, lo, rng.randint(lo, hi), rng.randint(0, min(hi, 64)),
               cur * 2, cur + rng.choice((-beat, beat, -INSTR_BYTES, INSTR_BYTES))]
    if name in ("dram_addr",):
        choices += [size, size - beat, size - 4 * cfg.dim, size + beat, b.code_addr, b.prog_addr,
                    (1 << cfg.axi_addr_bits) - beat, (1 << 32) - beat, rng.randrange(0, max(size, 1), beat),
                    rng.randrange(0, max(size, 1)), b.code_addr - beat, b.code_addr - 4 * cfg.dim]
        if b.windows:
            for a, z in b.windows:
                choices += [a - beat, z - beat, z, a]
    elif name == "dram_stride":
        choices += [beat, 4 * cfg.dim, cfg.dim, size, rng.randrange(0, 4096, beat), 1 << 31, beat + 1]
    elif name in ("sram_addr", "a_addr", "w_addr", "out_addr", "acc_addr", "spad_addr"):
        choices += [cfg.spad_rows - 1, cfg.spad_rows, cfg.acc_rows - 1, cfg.acc_rows, cfg.spad_rows - cfg.dim,
                    cfg.acc_rows - cfg.dim, rng.randrange(0, cfg.acc_rows)]
    elif name == "state_addr":
        choices += [cfg.vector_state_rows - 1, cfg.vector_state_rows, rng.randrange(0, cfg.vector_state_rows)]
    elif name in ("rows", "m_rows", "chunks", "k_chunks", "n_blocks", "blocks"):
        choices += [cfg.spad_rows, cfg.acc_rows, cfg.vector_state_rows, cfg.dim, cfg.dim + 1, 2, 3]
    elif name in ("sram_chunk_stride", "a_kstride", "w_kstride", "w_nstride", "out_nstride", "acc_block_stride",
                  "spad_block_stride"):
        choices += [cfg.dim, cfg.dim - 1, cfg.dim + 1, 0]
    elif name == "kv_valid":
        choices += [cfg.dim, cfg.dim - 1, cfg.dim + 1, 0]
    elif name == "mult":
        choices += [1 << 16, (1 << 16) - 1, 1 << 31, (1 << 32) - 1]
    elif name == "shift":
        choices += [63, 62, 31, 32, 15, 16]
    elif name == "causal_offset":
        choices += [-1, -cfg.dim, cfg.dim, lo, hi]
    v = rng.choice(choices)
    return min(max(int(v), lo), hi)


def _pick(rng, words, *, legal_only=False, non_halt=False):
    idx = [i for i, w in enumerate(words)
           if (not legal_only or opcode_of(w) is not None) and (not non_halt or opcode_of(w) not in (None, Opcode.HALT))]
    return rng.choice(idx) if idx else None


def _mut_field(rng, b: _Builder):
    i = _pick(rng, b.words, legal_only=True)
    if i is None:
        return
    op = opcode_of(b.words[i])
    names = [n for n in _FIELDS[op] if n != "opcode"]
    if op != Opcode.HALT and rng.random() < 0.85:
        names = [n for n in names if n not in ("wait", "signal")] or names
    name = rng.choice(names)
    spec = _FIELDS[op][name]
    cur = fget(b.words[i], spec)
    v = _value_for(rng, b, name, spec, cur)
    b.words[i] = fset(b.words[i], spec, v)
    b.muts.append(f"pc {i} {op.name}.{name} {cur} -> {v}")


def _mut_tokens(rng, b: _Builder):
    i = _pick(rng, b.words, legal_only=True, non_halt=rng.random() < 0.9)
    if i is None:
        return
    op = opcode_of(b.words[i])
    name = rng.choice(("wait", "signal"))
    spec = _FIELDS[op][name]
    cur = fget(b.words[i], spec)
    v = cur ^ (1 << rng.randrange(4)) if rng.random() < 0.8 else rng.randrange(16)
    b.words[i] = fset(b.words[i], spec, v)
    b.muts.append(f"pc {i} {op.name}.{name} {cur:#x} -> {v:#x}")


def _mut_opcode(rng, b: _Builder):
    i = rng.randrange(len(b.words))
    v = rng.randrange(1 << _OPCODE_W)
    old = (b.words[i] >> _OPCODE_OFF) & ((1 << _OPCODE_W) - 1)
    b.words[i] = fset(b.words[i], (_OPCODE_OFF, _OPCODE_W, False), v)
    b.muts.append(f"pc {i} opcode {old:#x} -> {v:#x}")


def _mut_funct(rng, b: _Builder):
    idx = [i for i, w in enumerate(b.words) if opcode_of(w) == Opcode.VECTOR]
    if not idx:
        return _mut_opcode(rng, b)
    i = rng.choice(idx)
    v = rng.randrange(16)
    old = fget(b.words[i], _FUNCT)
    b.words[i] = fset(b.words[i], _FUNCT, v)
    b.muts.append(f"pc {i} VECTOR.funct {old} -> {v}")


def _mut_halt(rng, b: _Builder):
    halts = [i for i, w in enumerate(b.words) if opcode_of(w) == Opcode.HALT]
    r = rng.random()
    if halts and r < 0.4:                          # no HALT: run off the end
        i = halts[-1]
        del b.words[i]
        b.extra = rng.choice((0, 0, 32, 64, 256))
        b.muts.append(f"HALT at pc {i} removed (+{b.extra} zero bytes)")
    elif halts and r < 0.55:                       # HALT replaced by another instruction
        i = halts[-1]
        j = rng.randrange(len(b.words))
        b.words[i] = b.words[j]
        b.muts.append(f"HALT at pc {i} replaced by a copy of pc {j}")
    elif r < 0.85:                                 # an early HALT
        i = rng.randrange(len(b.words))
        b.words.insert(i, encode_word(Opcode.HALT))
        b.muts.append(f"HALT inserted at pc {i}")
    else:                                          # HALT with a mask
        i = halts[-1] if halts else rng.randrange(len(b.words))
        w = encode_word(Opcode.HALT)
        name = rng.choice(("wait", "signal"))
        v = 1 << rng.randrange(4)
        b.words[i] = fset(w, _FIELDS[Opcode.HALT][name], v)
        b.muts.append(f"pc {i} HALT with {name} {v:#x}")


def _mut_edit(rng, b: _Builder):
    n = len(b.words)
    r = rng.random()
    if r < 0.4 and n > 1:
        i = rng.randrange(n)
        del b.words[i]
        b.muts.append(f"pc {i} deleted")
    elif r < 0.7:
        i = rng.randrange(n)
        b.words.insert(i, b.words[i])
        b.muts.append(f"pc {i} duplicated")
    elif n > 1:
        i, j = rng.sample(range(n), 2)
        b.words[i], b.words[j] = b.words[j], b.words[i]
        b.muts.append(f"pc {i} and {j} swapped")


def _mut_word(rng, b: _Builder):
    i = rng.randrange(len(b.words))
    r = rng.random()
    if r < 0.3:
        w = rng.getrandbits(256)
        what = "random bits"
    elif r < 0.5:
        w = 0
        what = "zero"
    else:
        w = random_instruction(rng, b.cfg, b.size())
        what = "a random instruction"
    b.words[i] = w
    b.muts.append(f"pc {i} replaced by {what}")


def _mut_prog_addr(rng, b: _Builder):
    size = b.size()
    r = rng.random()
    if r < 0.5 and b.code_addr > 0:
        v = rng.randrange(0, b.code_addr, INSTR_BYTES)          # into the data
    elif r < 0.7:
        v = b.code_addr + INSTR_BYTES * rng.choice((1, -1, len(b.words) - 1, len(b.words), len(b.words) + 1))
    elif r < 0.85:
        v = _align(size, INSTR_BYTES) + INSTR_BYTES * rng.randrange(4)   # at or past the end of the image
    else:
        v = rng.randrange(0, 1 << 32, INSTR_BYTES)
    v = min(max(v, 0), (1 << 32) - INSTR_BYTES)
    b.muts.append(f"prog_addr {b.prog_addr:#x} -> {v:#x}")
    b.prog_addr = v


def _mut_grant(rng, b: _Builder):
    size = b.size()
    n = len(b.words)
    beat = b.cfg.dma_beat_bytes
    r = rng.random()
    if r < 0.3:
        k = rng.choice((0, 1, n - 1, n - 2, n + 1, n + 8, rng.randrange(0, n + 1)))
        b.prog_end = max(0, b.prog_addr + INSTR_BYTES * k)
        b.muts.append(f"code window of {k} words")
    elif r < 0.45:
        b.prog_end = max(0, b.prog_addr - INSTR_BYTES * rng.randrange(0, 3))
        b.muts.append(f"PROG_END {b.prog_end:#x} at or below PROG_ADDR")
    else:
        cut = rng.choice((rng.randrange(0, size + 1, beat), b.code_addr, rng.randrange(0, size + 1),
                          size - beat, size))
        kind = rng.choice(("low", "high", "split", "closed", "none", "beyond", "bus"))
        if kind == "low":
            w = ((0, cut),)
        elif kind == "high":
            w = ((cut, size),)
        elif kind == "split":
            w = ((0, cut), (cut, size))
        elif kind == "closed":
            w = ((cut, cut), (size, 0))
        elif kind == "none":
            w = ()
        elif kind == "beyond":
            w = ((0, size + rng.choice((beat, 4096, 1 << 20))),)
        else:
            w = ((0, (1 << 32) - 1),)
        b.windows = tuple((max(0, min(x, (1 << 32) - 1)), max(0, min(y, (1 << 32) - 1))) for x, y in w)
        b.muts.append(f"DMA windows {kind} at {cut:#x}")


def _mut_image(rng, b: _Builder):
    size = b.size()
    r = rng.random()
    if r < 0.6:
        b.cut = rng.choice((b.code_addr + INSTR_BYTES * len(b.words), rng.randrange(min(b.code_addr, size), size + 1),
                            rng.randrange(0, size + 1, 64)))
        b.cut = max(b.cut, 32)
        b.muts.append(f"image cut to {b.cut} B")
    else:
        b.extra = rng.choice((32, 4096, 1 << 16))
        b.muts.append(f"image grown by {b.extra} B")


_MUTATIONS = (
    (_mut_field, 40), (_mut_tokens, 12), (_mut_opcode, 5), (_mut_funct, 4), (_mut_halt, 8), (_mut_edit, 9),
    (_mut_word, 5), (_mut_prog_addr, 5), (_mut_grant, 9), (_mut_image, 3),
)


def random_instruction(rng: random.Random, cfg: NPUConfig, size: int) -> int:
    """A word with a legal opcode and fields drawn mostly inside the config's ranges."""
    op = rng.choice((Opcode.LOAD, Opcode.LOAD, Opcode.STORE, Opcode.MATMUL, Opcode.VECTOR, Opcode.VECTOR))
    beat, dim = cfg.dma_beat_bytes, cfg.dim
    small = lambda: rng.choice((1, 1, 2, 3, 4, dim, rng.randint(1, 16)))
    if op in (Opcode.LOAD, Opcode.STORE):
        mem = rng.choice((Mem.SPAD, Mem.ACC))
        rows, chunks = small(), rng.choice((1, 1, 2))
        top = cfg.spad_rows if mem == Mem.SPAD else cfg.acc_rows
        f = dict(mem=mem, dram_addr=rng.randrange(0, max(beat, size), beat), dram_stride=rng.choice((0, beat, 4 * dim, 8 * dim)),
                 rows=rows, chunks=chunks, sram_addr=rng.randrange(0, max(1, top - rows * chunks)),
                 sram_chunk_stride=rng.choice((0, rows, dim)))
    elif op == Opcode.MATMUL:
        f = dict(accumulate=rng.randrange(2), transpose_w=rng.randrange(2), a_mem=rng.choice((0, 0, 1)),
                 m_rows=small(), k_chunks=rng.choice((1, 1, 2)), n_blocks=rng.choice((1, 1, 2)),
                 a_addr=rng.randrange(0, cfg.acc_rows - 40), a_kstride=rng.choice((0, dim, 16)),
                 w_addr=rng.randrange(0, cfg.spad_rows - 40), w_kstride=rng.choice((0, dim)),
                 w_nstride=rng.choice((0, dim)), out_addr=rng.randrange(0, cfg.acc_rows - 40),
                 out_nstride=rng.choice((0, dim, 16)))
    else:
        funct = rng.choice(list(VectorFunct))
        f = dict(funct=funct, rows=small(), blocks=rng.choice((1, 1, 2)),
                 acc_addr=rng.randrange(0, cfg.acc_rows - 40), acc_block_stride=rng.choice((0, dim, 16)),
                 state_addr=rng.randrange(0, cfg.vector_state_rows - 20),
                 spad_addr=rng.randrange(0, cfg.spad_rows - 40), spad_block_stride=rng.choice((0, dim)),
                 kv_valid=rng.randrange(0, 3 * dim), causal=rng.randrange(2), causal_offset=rng.randint(-dim, dim),
                 mult=rng.choice((1 << 20, 1 << 30, 12345, 1 << 15)) if funct != VectorFunct.RECIP else rng.randrange(1 << 16),
                 shift=rng.randrange(0, 40))
    q = OPCODE_QUEUE[op]
    wait = signal = 0
    if rng.random() < 0.2:
        wait = rng.randrange(16) & ~(1 << q)
    if rng.random() < 0.2:
        signal = rng.randrange(16) & ~(1 << q)
    return encode_word(op, wait, signal, **f)


def _random_base(rng: random.Random, cfg: NPUConfig) -> Base:
    size = rng.choice((256, 1024, 4096))
    data = np.frombuffer(rng.randbytes(size), dtype=np.uint8).copy()
    n = rng.randint(1, 12)
    words = [random_instruction(rng, cfg, size) for _ in range(n)] + [encode_word(Opcode.HALT)]
    img = np.concatenate([data, np.frombuffer(program_bytes(words), dtype=np.uint8)])
    return Base("random", words, data, size, img)


def make_mutant(seed: int, cfg: NPUConfig, *, grants: bool | None = None, faults: bool | None = None,
                mutate: bool = True) -> Mutant:
    """The case of ``seed``: a mutated compiled program (85 %) or a random program (15 %).

    ``faults``: add an AXI fault (None: in 5 % of the cases, drawn from the seed)."""
    caps = capabilities()
    grants = caps["grant"] if grants is None else grants and caps["grant"]
    rng = random.Random(f"mutant:{seed}")
    bases = base_programs(cfg)
    if rng.random() < 0.15:
        base = _random_base(rng, cfg)
    else:
        base = rng.choices(bases, weights=[_BASE_WEIGHTS.get(b.name, 1) for b in bases])[0]
    b = _Builder(rng, cfg, base)
    if mutate and rng.random() > 0.03:
        fns = [f for f, _ in _MUTATIONS if grants or f is not _mut_grant]
        ws = [w for f, w in _MUTATIONS if grants or f is not _mut_grant]
        k = rng.choices((1, 2, 3, 4), weights=(70, 18, 8, 4))[0]
        for fn in rng.choices(fns, weights=ws, k=k):
            fn(rng, b)
    img = b.image()
    grant = None
    if grants:
        pa = b.prog_addr
        pe = b.prog_end if b.prog_end is not None else pa + INSTR_BYTES * len(b.words)
        wins = b.windows if b.windows is not None else ((0, img.size),)
        grant = make_grant(pa, min(pe, (1 << 32) - 1), wins)
    m = Mutant(seed, base.name, b.muts, img, b.prog_addr, grant, (), len(b.words), b.code_addr)
    want_faults = rng.random() < 0.05
    if (want_faults if faults is None else faults) and caps["faults"]:
        m.faults = tuple(pick_faults(rng, cfg, m))
        if m.faults:
            m.muts.append("faults " + ", ".join(f"[{a:#x}, {z:#x}) {k}" for a, z, k in m.faults))
    return m


def _words_at(image: np.ndarray, addr: int, n: int) -> list[int]:
    out = []
    for k in range(n):
        a = addr + INSTR_BYTES * k
        if a < 0 or a + INSTR_BYTES > image.size:
            break
        out.append(int.from_bytes(image[a:a + INSTR_BYTES].tobytes(), "little"))
    return out


def dma_rows(f: dict, cfg: NPUConfig):
    """(lo, hi) byte range of every DRAM row of a LOAD/STORE, in execution order."""
    rb = cfg.dim if f["mem"] == Mem.SPAD else 4 * cfg.dim
    for r in range(f["rows"]):
        for c in range(f["chunks"]):
            a = f["dram_addr"] + r * f["dram_stride"] + c * rb
            yield a, a + rb


def pick_faults(rng: random.Random, cfg: NPUConfig, m: Mutant, *, target: str | None = None):
    """One AXI fault: SLVERR or DECERR on the first, last or a random beat of a LOAD's source, an
    instruction word (fetch) or a STORE's destination, among the program's first words."""
    beat = cfg.dma_beat_bytes
    words = _words_at(m.image, m.prog_addr, min(m.n_words, 4096))
    kinds = {"load": [], "store": [], "fetch": list(range(len(words)))}
    for pc, w in enumerate(words):
        op = opcode_of(w)
        if op in (Opcode.LOAD, Opcode.STORE):
            kinds["load" if op == Opcode.LOAD else "store"].append(pc)
    target = target or rng.choice([k for k in ("load", "store", "fetch") if kinds[k]] or ["fetch"])
    if not kinds[target]:
        return []
    pc = rng.choice(kinds[target])
    where = rng.choice(("first", "last", "random"))
    if target == "fetch":
        lo = m.prog_addr + INSTR_BYTES * pc
        beats = [lo + j for j in range(0, INSTR_BYTES, beat)] if beat <= INSTR_BYTES else [lo - lo % beat]
    else:
        f = decode_word(words[pc])
        if not f["rows"] or not f["chunks"]:
            return []
        rb = cfg.dim if f["mem"] == Mem.SPAD else 4 * cfg.dim
        r, c, j = ((0, 0, 0) if where == "first" else
                   (f["rows"] - 1, f["chunks"] - 1, rb // beat - 1) if where == "last" else
                   (rng.randrange(f["rows"]), rng.randrange(f["chunks"]), rng.randrange(max(1, rb // beat))))
        beats = [f["dram_addr"] + r * f["dram_stride"] + c * rb + j * beat]
    a = beats[0] if where == "first" else beats[-1] if where == "last" else rng.choice(beats)
    kind = rng.choice(("SLVERR", "DECERR"))
    m.meta["fault"] = {"target": target, "pc": pc, "beat": where, "kind": kind}
    return [(a, a + beat, kind)]


# ================================================================ golden outcome
@dataclass
class GoldenOutcome:
    """How the golden model ended a case: ``done`` with ``dram``, or ``error`` (an ``NpuError``)."""
    kind: str                  # "done", "error", "hang", "crash"
    dram: np.ndarray | None = None
    error: object = None
    instructions: int = 0
    message: str = ""
    words: list = field(default_factory=list)   # the words the model executed (from the image)

    @property
    def code(self):
        return self.error.code if self.error is not None else ErrorCode.NONE

    @property
    def pc(self):
        return self.error.pc if self.error is not None else None

    @property
    def undefined(self) -> tuple:
        return tuple(getattr(self.error, "undefined", ()) or ())


def golden_outcome(cfg: NPUConfig, m: Mutant, npu=None) -> GoldenOutcome:
    """Run ``m`` on the golden model (``npu``: a prepared ``GoldenNPU``, e.g. after the scrub)."""
    from flashnpu.sw.golden import GoldenNPU, NpuError
    caps = capabilities()
    kw = {}
    if m.grant is not None:
        kw["grant"] = m.grant
    if m.faults:
        kw["faults"] = m.faults
    g = npu if npu is not None else GoldenNPU(cfg)
    try:
        res = g.run(m.image, m.prog_addr, max_instructions=MAX_INSTRUCTIONS, **kw)
    except NpuError as e:
        n = int(e.pc) + 1 if isinstance(e.pc, int) else 0
        return GoldenOutcome("error", dram=getattr(g, "dram", None), error=e, instructions=n,
                             words=_words_at(m.image, m.prog_addr, n))
    except RuntimeError as e:
        if "max_instructions" in str(e):
            return GoldenOutcome("hang", message=exc_text(e))
        return GoldenOutcome("crash", message=exc_text(e))
    except Exception as e:
        return GoldenOutcome("crash", message=exc_text(e))
    del caps
    return GoldenOutcome("done", dram=res.dram, instructions=res.instructions,
                         words=_words_at(m.image, m.prog_addr, res.instructions))


def _check_error_object(e, cfg) -> str | None:
    """What is wrong with an ``NpuError`` (None if it is well formed)."""
    if not isinstance(e.code, ErrorCode) or e.code == ErrorCode.NONE:
        return f"NpuError with code {e.code!r}"
    if not isinstance(e.pc, int) or e.pc < 0:
        return f"NpuError {e.code.name} with pc {e.pc!r}"
    for r in getattr(e, "undefined", ()) or ():
        if not (isinstance(r, tuple) and len(r) == 2 and 0 <= r[0] < r[1]):
            return f"NpuError {e.code.name}: undefined range {r!r} is not (lo, hi)"
    return None


def _code_modified(m: Mutant, out: GoldenOutcome) -> bool:
    """A STORE changed one of the executed words (possible without a code window)."""
    if out.dram is None:
        return False
    lo, hi = m.prog_addr, m.prog_addr + INSTR_BYTES * max(out.instructions, 1)
    hi = min(hi, m.image.size, out.dram.size)
    return lo < hi and not np.array_equal(m.image[lo:hi], out.dram[lo:hi])


def judge_golden(cfg: NPUConfig, m: Mutant, st: Stats, *, predict_check: bool = True) -> GoldenOutcome:
    """Run one mutant on the golden model and count its outcome (with the token and performance checks)."""
    from flashnpu.sw.tokens import TokenError, check_tokens
    out = golden_outcome(cfg, m)
    if out.kind == "hang":
        st.fail("hangs", m.seed, "golden-step-budget", f"{out.message}; {m.describe()}")
        return out
    if out.kind == "crash":
        st.fail("crashes", m.seed, "golden", f"{out.message}; {m.describe()}")
        return out
    if out.kind == "error":
        bad = _check_error_object(out.error, cfg)
        if bad:
            st.fail("crashes", m.seed, "golden-error-object", f"{bad}; {m.describe()}")
            return out
        st.info[f"error {out.code.name}"] += 1
        # The token checker must find a static/token error at the same pc (same checks, same order).
        if out.code in STATIC_CODES and not _code_modified(m, out):
            try:
                check_tokens(out.words, cfg)
                st.fail("disagreements", m.seed, "tokens-vs-golden",
                        f"golden {out.code.name} at pc {out.pc}, check_tokens passes the same words; {m.describe()}")
                return out
            except TokenError as e:
                if e.pc != out.pc:
                    st.fail("disagreements", m.seed, "tokens-vs-golden",
                            f"golden {out.code.name} at pc {out.pc}, check_tokens at pc {e.pc}: {e}; {m.describe()}")
                    return out
            except Exception as e:
                st.fail("crashes", m.seed, "check_tokens", f"{exc_text(e)}; {m.describe()}")
                return out
        st.reported()
        return out
    st.info["done"] += 1
    words = out.words
    if _code_modified(m, out):
        st.info["done, code rewritten by a STORE"] += 1
        st.ok()
        return out
    try:
        check_tokens(words, cfg)
    except TokenError as e:
        if "can reach" not in str(e):
            st.fail("disagreements", m.seed, "tokens-vs-golden",
                    f"golden completes, check_tokens rejects in program order: {e}; {m.describe()}")
            return out
        st.info["done, token checker's worst case rejects"] += 1
    except Exception as e:
        st.fail("crashes", m.seed, "check_tokens", f"{exc_text(e)}; {m.describe()}")
        return out
    if predict_check:
        from flashnpu.sw.perfmodel import predict
        try:
            p = predict(cfg, words)
            if p.instructions != out.instructions:
                st.fail("disagreements", m.seed, "predict-vs-golden",
                        f"predict counts {p.instructions} instructions, golden {out.instructions}; {m.describe()}")
                return out
            if not p.cycles > 0:
                st.fail("crashes", m.seed, "predict", f"predict gives {p.cycles} cycles; {m.describe()}")
                return out
        except ValueError as e:
            if "pc" not in str(e):
                st.fail("crashes", m.seed, "predict-bad-message",
                        f"predict rejects a program golden completes, without naming a pc: {exc_text(e)}; "
                        f"{m.describe()}")
                return out
            st.info["done, predict rejects (names a pc)"] += 1
        except Exception as e:
            st.fail("crashes", m.seed, "predict", f"{exc_text(e)}; {m.describe()}")
            return out
    st.ok()
    return out


# ================================================================ hazards (for the RTL comparison)
def _rows_mask(start: int, n: int) -> int:
    return ((1 << n) - 1) << start if n > 0 else 0


def _ivs_overlap(a: tuple, b: tuple) -> bool:
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][0] < b[j][1] and b[j][0] < a[i][1]:
            return True
        if a[i][1] <= b[j][1]:
            i += 1
        else:
            j += 1
    return False


def _footprint(f: dict, cfg: NPUConfig):
    """(reads, writes, self_alias): per resource ('S', 'A', 'V') bit masks of rows; 'D' (DRAM) byte ranges."""
    R = {"S": 0, "A": 0, "V": 0, "D": ()}
    W = {"S": 0, "A": 0, "V": 0, "D": ()}
    alias = False
    op, dim = f["opcode"], cfg.dim
    if op in (Opcode.LOAD, Opcode.STORE):
        mem = "S" if f["mem"] == Mem.SPAD else "A"
        rb = dim if mem == "S" else 4 * dim
        srows = 0
        for c in range(f["chunks"]):
            srows |= _rows_mask(f["sram_addr"] + c * f["sram_chunk_stride"], f["rows"])
        n = f["rows"] * f["chunks"]
        r = np.arange(f["rows"], dtype=np.int64)[:, None]
        c = np.arange(f["chunks"], dtype=np.int64)[None, :]
        starts = (f["dram_addr"] + r * f["dram_stride"] + c * rb).ravel()
        dram = row_ranges(starts, rb)
        if op == Opcode.LOAD:
            W[mem] |= srows
            R["D"] = dram
            alias = srows.bit_count() < n
        else:
            R[mem] |= srows
            W["D"] = dram
            alias = sum(hi - lo for lo, hi in dram) < n * rb
    elif op == Opcode.MATMUL:
        a_mem = "S" if f["a_mem"] == Mem.SPAD else "A"
        a = 0
        for kc in range(f["k_chunks"]):
            a |= _rows_mask(f["a_addr"] + kc * f["a_kstride"], f["m_rows"])
        w = 0
        for kc in range(f["k_chunks"]):
            for nb in range(f["n_blocks"]):
                w |= _rows_mask(f["w_addr"] + kc * f["w_kstride"] + nb * f["w_nstride"], dim)
        o = 0
        for nb in range(f["n_blocks"]):
            o |= _rows_mask(f["out_addr"] + nb * f["out_nstride"], f["m_rows"])
        R[a_mem] |= a
        R["S"] |= w
        R["A"] |= o
        W["A"] |= o
        alias = o.bit_count() < f["n_blocks"] * f["m_rows"] or (a_mem == "A" and (a & o) != 0)
    elif op == Opcode.VECTOR:
        funct = VectorFunct(f["funct"])
        st = _rows_mask(f["state_addr"], f["rows"])
        acc = 0
        for bk in range(f["blocks"]):
            acc |= _rows_mask(f["acc_addr"] + bk * f["acc_block_stride"], f["rows"])
        sp = 0
        for bk in range(f["blocks"]):
            sp |= _rows_mask(f["spad_addr"] + bk * f["spad_block_stride"], f["rows"])
        dup_acc = acc.bit_count() < f["rows"] * f["blocks"]
        if funct == VectorFunct.INIT:
            W["V"] |= st
        elif funct == VectorFunct.RECIP:
            R["V"] |= st
            W["V"] |= st
        elif funct == VectorFunct.ROWMAX:
            R["V"] |= st
            W["V"] |= st
            R["A"] |= acc
        elif funct == VectorFunct.EXP:
            R["V"] |= st
            W["V"] |= st
            R["A"] |= acc
            W["A"] |= acc
            alias = dup_acc
        elif funct == VectorFunct.SCALE:
            R["V"] |= st
            R["A"] |= acc
            W["A"] |= acc
            alias = dup_acc
        else:   # OUTPUT, REQUANT
            if funct == VectorFunct.OUTPUT:
                R["V"] |= st
            R["A"] |= acc
            W["S"] |= sp
            alias = sp.bit_count() < f["rows"] * f["blocks"]
    return R, W, alias


def read_extent(words: list, cfg: NPUConfig) -> tuple[int, int, int]:
    """(spad, acc, state): one past the highest row of each that ``words`` (legal ones) read."""
    spad = acc = state = 0
    for w in words:
        op = opcode_of(w)
        if op is None or op == Opcode.HALT:
            continue
        f = decode_word(w)
        if op == Opcode.VECTOR and f["funct"] not in _FUNCT_VALUES:
            continue
        R, _, _ = _footprint(f, cfg)
        spad, acc, state = max(spad, R["S"].bit_length()), max(acc, R["A"].bit_length()), \
            max(state, R["V"].bit_length())
    return spad, acc, state


_FUNCT_VALUES = frozenset(int(f) for f in VectorFunct)


def program_hazards(words: list, cfg: NPUConfig, prog_addr: int, *, fetch_margin_words: int = 64) -> list[str]:
    """Why a program's result may depend on the timing of the concurrent hardware (empty: it may not).

    The contract (``spec/isa.py``) makes a program equal to sequential execution
    when every conflicting pair of instructions of different queues is ordered
    by tokens (or by the rule that a STORE starts only after every older LOAD
    and STORE has completed), and no instruction's own reads and writes alias
    (``sw/golden.py``: "Pipelined hardware may differ on such aliasing
    programs"). ``words`` are the executed words (program order); a STORE into
    them or the next ``fetch_margin_words`` words (self-modifying code) is a
    hazard too.
    """
    reasons = []
    n = len(words)
    decoded = [decode_word(w) for w in words]
    qidx = [0] * n
    count = [0, 0, 0, 0]
    vc = [None] * n                      # per instruction: completed-before-start index per queue
    last_vc = [[-1] * 4 for _ in range(4)]
    fifo = {}                            # (src, dst) -> list of producer pcs, consumed in order
    last_load = None
    foot = [None] * n
    code = ((prog_addr, prog_addr + INSTR_BYTES * (n + fetch_margin_words)),)
    for pc, f in enumerate(decoded):
        op = f["opcode"]
        if not isinstance(op, Opcode) or op == Opcode.HALT:
            continue
        q = int(OPCODE_QUEUE[op])
        qidx[pc] = count[q]
        count[q] += 1
        v = list(last_vc[q])
        for src in range(4):
            if f["wait"] >> src & 1:
                lst = fifo.get((src, q))
                if lst:
                    x = lst.pop(0)
                    xv = vc[x]
                    for k in range(4):
                        v[k] = max(v[k], xv[k])
                    v[src] = max(v[src], qidx[x])
        if op == Opcode.STORE and last_load is not None:
            xv = vc[last_load]
            for k in range(4):
                v[k] = max(v[k], xv[k])
            v[int(Queue.LOAD)] = max(v[int(Queue.LOAD)], qidx[last_load])
        vc[pc] = v
        last_vc[q] = v
        for dst in range(4):
            if f["signal"] >> dst & 1:
                fifo.setdefault((q, dst), []).append(pc)
        if op == Opcode.LOAD:
            last_load = pc
        R, W, alias = _footprint(f, cfg)
        foot[pc] = (q, R, W)
        if alias:
            reasons.append(f"pc {pc} {op.name} reads/writes alias within the instruction")
        if op == Opcode.STORE and _ivs_overlap(W["D"], code):
            reasons.append(f"pc {pc} STORE writes the program's words (self-modifying code)")
    by_queue = [[] for _ in range(4)]
    for pc in range(n):
        if foot[pc] is not None:
            by_queue[foot[pc][0]].append(pc)
    for j in range(n):
        if foot[j] is None:
            continue
        qj, Rj, Wj = foot[j]
        for p in range(4):
            if p == qj:
                continue
            done_before = vc[j][p]
            for i in by_queue[p]:
                if i >= j:
                    break
                if qidx[i] <= done_before:
                    continue
                _, Ri, Wi = foot[i]
                for res in ("S", "A", "V"):
                    if (Wi[res] & (Rj[res] | Wj[res])) or (Ri[res] & Wj[res]):
                        reasons.append(f"pc {i} and pc {j} touch the same {res} rows without a token between them")
                        break
                else:
                    if (_ivs_overlap(Wi["D"], Rj["D"]) or _ivs_overlap(Wi["D"], Wj["D"])
                            or _ivs_overlap(Ri["D"], Wj["D"])):
                        reasons.append(f"pc {i} and pc {j} touch the same DRAM bytes without a token between them")
                if len(reasons) > 8:
                    return reasons
    return reasons


# ================================================================ the category
def run_category(name: str, st: Stats, budget: Budget, *, seed: int, cfg: NPUConfig, out, progress=print):
    cfg = load_config("tiny") if cfg is None else cfg
    base_programs(cfg)
    caps = capabilities()
    if not caps["grant"]:
        st.unavailable("golden GoldenNPU.run(grant=...) / regmap PROG_END: no DramGrant mutations")
    if not caps["faults"]:
        st.unavailable("golden GoldenNPU.run(faults=...): no AXI faults in golden_programs")
    i = 0
    t_report = time.monotonic()
    while budget.left() > 0:
        s = case_seed(seed, i)
        i += 1
        try:
            m = make_mutant(s, cfg)
        except Exception as e:
            st.fail("crashes", s, "generator", f"the mutant generator raised {exc_text(e)}")
            continue
        judge_golden(cfg, m, st)
        if time.monotonic() - t_report > 30:
            t_report = time.monotonic()
            progress(f"[fuzz] {name}: {st.tried} programs, {st.failed} failures")


def replay_case(name: str, st: Stats, seed: int, *, cfg, out, progress=print):
    m = make_mutant(seed, cfg)
    progress(f"case: {m.describe()}")
    o = judge_golden(cfg, m, st)
    progress(f"golden: {o.kind}" + (f" {o.code.name} at pc {o.pc}: {o.error}" if o.error is not None else
                                    f" after {o.instructions} instructions" if o.kind == "done" else f" {o.message}"))
    from flashnpu.sw.asm import disassemble
    progress("executed words:\n" + disassemble(o.words, pc=True) if o.words else "no words executed")
