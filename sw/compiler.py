"""The compiler: attention (FlashAttention) and GEMM workloads to flashnpu microcode.

``docs/compiler.md`` describes the DRAM layout, the tiling, the token schedule
and the on-chip memory map. In short:

* Every instruction declares the on-chip *buffers* it reads and writes
  (:class:`_Emitter`). Dependency tokens are derived from those declarations:
  for each read-after-write, write-after-read and write-after-write hazard with
  an instruction of another queue, the consumer waits on a token from the
  producer unless the dependency is already implied by tokens it (or an earlier
  instruction of its own queue) waited for. This relies on two facts of the
  machine: a queue starts its instructions in order, and a unit completes
  them in order (``done`` pulses in the order taken), so a token from
  instruction X also vouches for every instruction before X in X's queue.
* Attention is FlashAttention with online softmax: per Q tile of ``Br`` rows,
  for each K/V tile of ``Bc`` keys, ``S = Q K^T`` (MATMUL, transposed weights),
  ``ROWMAX``/``EXP`` (11-bit P written over S in the accumulator), ``SCALE`` of
  the running output, ``O += P V`` (MATMUL reading P from the accumulator,
  ``a_mem = ACC``); at the end ``RECIP``/``OUTPUT``/``STORE``. K/V, S (= P), O,
  Q and the vector state are double-buffered so that the array runs
  ``QK_0, QK_1, PV_0, QK_2, PV_1, ...`` back to back while the vector unit does
  the softmax of tile ``j`` under ``QK_{j+1}`` and the DMA prefetches.
* GEMM is weight-stationary: B tiles are the weights, A rows stream through,
  C accumulates over K tiles in the accumulator and leaves by STORE (INT32).

Every program is checked with :func:`flashnpu.sw.tokens.check_tokens` before
it is returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from flashnpu.sw.asm import encode_word
from flashnpu.spec.config import NPUConfig, load_config
from flashnpu.spec.isa import INSTR_BYTES, OPCODE_QUEUE, Mem, Opcode, Queue, VectorFunct
from flashnpu.spec.numerics import EXP_FRAC, MAX_SEQ_K, RECIP_MULT_LIMIT, RECIP_SHIFT, fold_scale
from flashnpu.sw.program import Program, TensorPlacement, align_up
from flashnpu.sw.tokens import TokenError, check_tokens
from flashnpu.sw.workload import AttentionWorkload, GemmWorkload, WorkloadError

__all__ = ["CompileError", "compile_attention", "compile_gemm", "compile_workload", "attention_tiles",
           "softmax_fold", "output_fold"]

#: Bits of the ROWMAX/EXP multiplier (an unsigned 32-bit field; 31 keeps it clear of the sign bit).
EXP_MULT_BITS = 31
#: Bits of the RECIP numerator multiplier (must stay below RECIP_MULT_LIMIT = 2**16).
RECIP_MULT_BITS = RECIP_MULT_LIMIT.bit_length() - 1


class CompileError(WorkloadError):
    """A workload that cannot be compiled for a config. The message names the field and the limit."""


# ============================================================ token emitter
@dataclass
class _Instr:
    opcode: Opcode
    fields: dict
    queue: Queue
    pos: int             # index within its queue
    know: list           # per queue: highest position known complete when this instruction starts
    wait: int = 0
    signal: int = 0


class _Emitter:
    """Collects instructions and derives their dependency tokens from buffer hazards.

    ``emit(opcode, reads=..., writes=..., **fields)``: ``reads``/``writes`` are
    buffer names (any hashable). Hazards with instructions of the same queue
    are left to the unit, which executes its queue in order.
    """

    def __init__(self, config: NPUConfig):
        self.config = config
        self.instrs: list[_Instr] = []
        self.count = {q: 0 for q in Queue}
        self.last = {q: None for q in Queue}
        self.writer = {}
        self.readers = {}
        self.macs_issued = 0

    def emit(self, opcode, reads=(), writes=(), **fields):
        q = OPCODE_QUEUE[opcode]
        deps = []
        for b in reads:
            if b in self.writer:
                deps.append(self.writer[b])
        for b in writes:
            if b in self.writer:
                deps.append(self.writer[b])
            deps.extend(self.readers.get(b, ()))
        prev = self.last[q]
        know = list(prev.know) if prev is not None else [-1] * len(Queue)
        need = {}
        for d in deps:
            if d.queue != q and d.pos > need.get(d.queue, (-1, None))[0]:
                need[d.queue] = (d.pos, d)
        ins = _Instr(Opcode(opcode), fields, q, self.count[q], know)
        for src in sorted(need):
            pos, d = need[src]
            if know[src] >= pos:
                continue                    # implied by an earlier token
            assert not d.signal >> q & 1, "a producer pushes to one queue at most once"
            d.signal |= 1 << q
            ins.wait |= 1 << src
            for k in range(len(know)):
                know[k] = max(know[k], d.know[k])
            know[src] = max(know[src], pos)
        for b in reads:
            self.readers.setdefault(b, []).append(ins)
        for b in writes:
            self.writer[b] = ins
            self.readers[b] = []
        self.instrs.append(ins)
        self.count[q] += 1
        self.last[q] = ins
        if opcode == Opcode.MATMUL:
            d = self.config.dim
            self.macs_issued += fields["m_rows"] * fields["k_chunks"] * fields["n_blocks"] * d * d
        return ins

    def words(self) -> list[int]:
        out = [encode_word(i.opcode, i.wait, i.signal, **i.fields) for i in self.instrs]
        out.append(encode_word(Opcode.HALT))
        return out


def _checked(words, config) -> list[int]:
    try:
        check_tokens(words, config)
    except TokenError as e:   # a compiler bug, not a user error: fail loudly
        raise RuntimeError(f"compiler emitted a program that fails the token check: {e}") from e
    return words


class _Dram:
    """Allocates tensors in the DRAM image: beat-aligned bases (at least 64 B)."""

    def __init__(self, config: NPUConfig):
        self.align = max(64, config.dma_beat_bytes)
        self.top = 0
        self.layout = {}

    def add(self, name, shape, padded_shape, dtype, output=False) -> TensorPlacement:
        p = TensorPlacement(name, self.top, tuple(shape), tuple(padded_shape), dtype, output)
        self.layout[name] = p
        self.top = align_up(self.top + p.nbytes, self.align)
        return p

    def finish(self, n_words: int, config: NPUConfig) -> tuple[int, int]:
        prog_addr = align_up(self.top, max(self.align, INSTR_BYTES))
        size = align_up(prog_addr + INSTR_BYTES * n_words, self.align)
        if size > 1 << config.axi_addr_bits:
            raise CompileError(f"DRAM image of {size} bytes exceeds the {config.axi_addr_bits}-bit AXI "
                               f"address space (config field 'axi_addr_bits' = {config.axi_addr_bits})")
        return prog_addr, size


class _Onchip:
    """Sequential allocation of named regions in the scratchpad, accumulator and vector state."""

    def __init__(self):
        self.top = {"spad": 0, "acc": 0, "state": 0}
        self.regions = {}

    def add(self, name, mem, rows) -> int:
        base = self.top[mem]
        self.regions[name] = (mem, base, rows)
        self.top[mem] += rows
        return base

    def usage(self, config: NPUConfig) -> dict:
        return {
            "spad_rows": self.top["spad"], "acc_rows": self.top["acc"], "state_rows": self.top["state"],
            "spad_bytes": self.top["spad"] * config.spad_row_bytes,
            "acc_bytes": self.top["acc"] * config.acc_row_bytes,
            "state_bytes": self.top["state"] * 16,    # M, L (INT32) and F (48 bits), rounded to 16 B
            "regions": dict(self.regions),
        }


# ============================================================ attention
def softmax_fold(wl: AttentionWorkload) -> tuple[int, int]:
    """``(mult, shift)`` of ROWMAX/EXP: score difference -> exp2 argument with EXP_FRAC fraction bits."""
    real = wl.q_scale * wl.k_scale * wl.softmax_scale * math.log2(math.e) * (1 << EXP_FRAC)
    try:
        return fold_scale(real, EXP_MULT_BITS)
    except ValueError as e:
        raise CompileError(f"q_scale*k_scale*softmax_scale*log2(e)*2**{EXP_FRAC} = {real!r} cannot be "
                           f"folded into a {EXP_MULT_BITS}-bit multiplier and a shift in 0..63 ({e})") from None


def output_fold(wl: AttentionWorkload) -> tuple[int, int]:
    """``(recip_mult, output_shift)``: OUTPUT gives ``O * (mult << 31) / L >> shift ~= O / L * v_scale/out_scale``."""
    r = wl.v_scale / wl.out_scale
    try:
        mult, s = fold_scale(r, RECIP_MULT_BITS, max_shift=63 - RECIP_SHIFT)
    except ValueError as e:
        raise CompileError(f"v_scale/out_scale = {r!r}: must be in [2**-{63 - RECIP_SHIFT}, 2**{RECIP_MULT_BITS}) "
                           f"to fold into RECIP's mult (< 2**{RECIP_MULT_BITS}) and OUTPUT's shift (<= 63) ({e})") from None
    return mult, s + RECIP_SHIFT


def _attention_footprint(Br, Bc, nd, dim):
    nbc = Bc // dim
    spad = 2 * Br * nd + 4 * Bc * nd + Br * nd                    # Q x2, K x2, V x2, output staging
    acc = 2 * Br * nbc + 2 * Br * nd                              # S (then P, in place) x2, O x2
    state = 2 * Br
    return spad, acc, state


def attention_tiles(wl: AttentionWorkload, config) -> tuple[int, int]:
    """The ``(Br, Bc)`` the compiler uses: the largest tiles whose double buffers fit the config.

    Independent of the sequence lengths, so that on-chip memory does not grow
    with them. Raises :class:`CompileError` naming ``head_dim`` and the limit if
    even the smallest tiles do not fit.
    """
    cfg = load_config(config)
    dim = cfg.dim
    dpad = align_up(wl.head_dim, dim)
    nd = dpad // dim
    if nd > 255:
        raise CompileError(f"field 'head_dim' = {wl.head_dim}: must be at most {255 * dim} on config "
                           f"'{cfg.name}' (255 chunks of dim = {dim}: the 8-bit chunk fields)")
    brs = [b for b in (128, 64, 32, 16, 8, 4, 2) if b >= dim] or [dim]
    bcs = [b for b in (64, 32, 16, 8, 4, 2) if b >= dim and b % dim == 0] or [dim]
    cands = sorted(((br, bc) for br in brs for bc in bcs), key=lambda t: (-t[0] * t[1], -t[0]))
    for br, bc in cands:
        spad, acc, state = _attention_footprint(br, bc, nd, dim)
        if spad <= cfg.spad_rows and acc <= cfg.acc_rows and state <= cfg.vector_state_rows:
            return br, bc
    br, bc = min(brs), min(bcs)
    spad, acc, state = _attention_footprint(br, bc, nd, dim)
    for need, have, field in ((spad, cfg.spad_rows, "spad_rows"), (acc, cfg.acc_rows, "acc_rows"),
                              (state, cfg.vector_state_rows, "vector_state_rows")):
        if need > have:
            raise CompileError(
                f"field 'head_dim' = {wl.head_dim}: too large for config '{cfg.name}': even the smallest "
                f"tiles (Br={br}, Bc={bc}) need {need} rows of {field}, the config has {have}")
    raise AssertionError("unreachable")


_SPAD, _ACC = int(Mem.SPAD), int(Mem.ACC)

#: Rows of one OUTPUT + STORE pair at the end of a Q tile (docs/compiler.md, "End of a Q tile").
OUTPUT_CHUNK_ROWS = 32


def _row_chunks(rows, chunk):
    """``(first row, rows)`` of ``rows`` rows cut into pieces of ``chunk``."""
    return [(r0, min(chunk, rows - r0)) for r0 in range(0, rows, chunk)]


def _causal_bands(i0, trows, kv_valid, coff0, dim):
    """The causal step's rows ``i0 .. trows-1`` cut into bands that each compute only the key blocks
    their last row sees: ``(first row, rows, columns, causal, causal_offset)`` per band.

    Row ``i`` of the tile sees key column ``c`` of the step iff ``c <= i + coff0``, so
    it needs ``ceil(min(kv_valid, i + coff0 + 1) / dim)`` blocks, which grows with
    ``i``: a band is a run of rows needing the same blocks, at least ``dim`` rows
    (the matrix unit streams ``max(m_rows, dim)`` rows per tile, so a shorter band
    would cost as much), and the diagonal waste shrinks from a triangle of the
    whole tile to triangles of ``dim x dim``. The masked columns a band leaves out
    contribute nothing (the vector unit masks them), so the output is unchanged.
    """
    def need(i):
        return -(-max(1, min(kv_valid, i + coff0 + 1)) // dim)
    bands, s = [], i0
    while s < trows:
        e = min(trows, s + dim)
        while e < trows and need(e) == need(e - 1):
            e += 1
        cols = min(kv_valid, max(1, (e - 1) + coff0 + 1))
        coff = coff0 + s
        causal = int(min(kv_valid, align_up(cols, dim)) - 1 > coff)
        bands.append((s, e - s, cols, causal, coff))
        s = e
    return bands


def compile_attention(wl: AttentionWorkload, config) -> Program:
    """Compile FlashAttention for ``wl`` on ``config`` (see the module docstring and docs/compiler.md)."""
    cfg = load_config(config)
    if not isinstance(wl, AttentionWorkload):
        raise TypeError(f"compile_attention needs an AttentionWorkload, got {type(wl).__name__}")
    dim = cfg.dim
    if wl.seq_k > MAX_SEQ_K:
        raise CompileError(f"field 'seq_k' = {wl.seq_k}: must be at most {MAX_SEQ_K} (MAX_SEQ_K: beyond it "
                           f"the INT32 output accumulator O = sum p*v, p <= P_SCALE, could wrap)")
    Br, Bc = attention_tiles(wl, cfg)
    dpad = align_up(wl.head_dim, dim)
    nd = dpad // dim
    nbc = Bc // dim
    exp_mult, exp_shift = softmax_fold(wl)
    recip_mult, out_shift = output_fold(wl)
    seq_k_pad = align_up(wl.seq_k, dim)

    # ---------------------------------------------------------- DRAM layout
    dram = _Dram(cfg)
    sh = wl.shapes()
    tensors = {
        "Q": dram.add("Q", sh["Q"], (wl.batch, wl.heads, wl.seq_q, dpad), "int8"),
        "K": dram.add("K", sh["K"], (wl.batch, wl.kv_heads, seq_k_pad, dpad), "int8"),
        "V": dram.add("V", sh["V"], (wl.batch, wl.kv_heads, seq_k_pad, dpad), "int8"),
        "O": dram.add("O", sh["O"], (wl.batch, wl.heads, wl.seq_q, dpad), "int8", output=True),
    }

    # ---------------------------------------------------------- on-chip map
    mem = _Onchip()
    bufs = {name: [mem.add(f"{name}{i}", kind, rows) for i in range(2)]
            for name, kind, rows in (("Q", "spad", Br * nd), ("K", "spad", Bc * nd), ("V", "spad", Bc * nd))}
    bufs["OUT"] = mem.add("OUT", "spad", Br * nd)
    bufs.update({name: [mem.add(f"{name}{i}", kind, rows) for i in range(2)]
                 for name, kind, rows in (("S", "acc", Br * nbc), ("O", "acc", Br * nd), ("STATE", "state", Br))})
    usage = mem.usage(cfg)
    assert usage["spad_rows"] <= cfg.spad_rows and usage["acc_rows"] <= cfg.acc_rows

    tiles, steps = _attention_steps(wl, Br, Bc, dim)
    a = _AttentionEmitter(cfg, Br, Bc, nd, tiles, steps, tensors, bufs,
                          folds=(exp_mult, exp_shift, recip_mult, out_shift))
    a.program()

    words = _checked(a.em.words(), cfg)
    prog_addr, size = dram.finish(len(words), cfg)
    return Program(words=words, layout=dram.layout, prog_addr=prog_addr, dram_bytes=size, onchip=usage,
                   macs_useful=wl.macs, macs_issued=a.em.macs_issued, config=cfg, workload=wl,
                   tiling={"Br": Br, "Bc": Bc, "head_dim_padded": dpad, "q_tiles": len(tiles),
                           "kv_steps": len(steps), "exp_mult": exp_mult, "exp_shift": exp_shift,
                           "recip_mult": recip_mult, "out_shift": out_shift})


class _QTile(NamedTuple):
    b: int
    h: int
    kvh: int          # its key/value head
    q0: int           # first query row
    rows: int


class _Step(NamedTuple):
    t: int            # Q tile
    j: int            # KV tile
    kv_valid: int     # real keys of the KV tile
    bands: list       # (first row, rows, columns, causal, causal_offset): docs/compiler.md "Causal"

    @property
    def i0(self):
        """The first row of the tile that sees a key of the step."""
        return self.bands[0][0]

    @property
    def rows(self):
        """Rows from ``i0`` (the bands cover them in order)."""
        return sum(b[1] for b in self.bands)

    @property
    def cols(self):
        """Key columns the step computes: those of its last band, whose rows see the most."""
        return self.bands[-1][2]


def _attention_steps(wl: AttentionWorkload, Br: int, Bc: int, dim: int) -> tuple[list, list]:
    """The Q tiles (batch, head, rows of Br) and, per Q tile, its KV steps (the causal ones trimmed)."""
    off = wl.causal_shift
    n_kv = -(-wl.seq_k // Bc)
    tiles, steps = [], []
    for b in range(wl.batch):
        for h in range(wl.heads):
            for q0 in range(0, wl.seq_q, Br):
                rows = min(Br, wl.seq_q - q0)
                t = len(tiles)
                tiles.append(_QTile(b, h, h // wl.group, q0, rows))
                last_key = q0 + rows - 1 + off          # the last query row of the tile sees keys <= this
                n = n_kv if not wl.causal else max(1, min(n_kv, last_key // Bc + 1 if last_key >= 0 else 0))
                for j in range(n):
                    k0 = j * Bc
                    kv_valid = min(Bc, wl.seq_k - k0)
                    if wl.causal:
                        i0 = max(0, k0 - q0 - off)      # rows above see no key of this tile
                        if i0 >= rows:                  # a tile no row sees (only the clamped j = 0)
                            i0 = 0
                        bands = _causal_bands(i0, rows, kv_valid, q0 + off - k0, dim)
                    else:
                        bands = [(0, rows, kv_valid, 0, 0)]
                    steps.append(_Step(t, j, kv_valid, bands))
    return tiles, steps


class _AttentionEmitter:
    """The instructions of one attention program, step by step (docs/compiler.md, "Attention:
    instructions of one step"); :meth:`program` emits them in program order."""

    def __init__(self, cfg, Br, Bc, nd, tiles, steps, tensors, bufs, folds):
        self.em = _Emitter(cfg)
        self.dim, self.Br, self.Bc, self.nd = cfg.dim, Br, Bc, nd
        self.dpad = nd * cfg.dim
        self.tiles, self.steps, self.T, self.B = tiles, steps, tensors, bufs
        self.exp_mult, self.exp_shift, self.recip_mult, self.out_shift = folds
        # The Q buffers' rows in the first step's bands: tile 0 loads them one by one, the other
        # tiles at once; the hazards are tracked per part (a LOAD of a whole tile writes every part).
        parts = [(i0, rows) for i0, rows, *_ in steps[0].bands]
        parts[0] = (0, parts[0][0] + parts[0][1])           # rows above the first band, if any
        self.q_parts = parts

    def program(self):
        """Program order (a correct sequential program; the tokens let the queues overlap it): step
        g = QK_g, PV_{g-1}, prefetch of g+1 (into the K/V buffers QK_{g-1} and PV_{g-1} just read),
        softmax of g, then SCALE_g (or the finish of the previous Q tile, which waits for PV_{g-1})."""
        steps, G = self.steps, len(self.steps)
        self.loads(0)
        for g in range(G):
            self.qk(g)
            if g:
                self.pv(g - 1)
            if g + 1 < G:
                self.loads(g + 1)
            self.softmax(g)
            if g and steps[g].j == 0:
                self.finish(steps[g - 1].t)
        self.pv(G - 1)
        self.finish(steps[G - 1].t)

    def q_loads(self, t):
        return self.q_parts if t == 0 else [(0, self.tiles[t].rows)]

    def q_names(self, t, i0, rows):
        return [("Q", t % 2, p) for p, (r0, n) in enumerate(self.q_parts) if r0 < i0 + rows and i0 < r0 + n]

    def loads(self, g):
        em, T, B, s = self.em, self.T, self.B, self.steps[g]
        tile = self.tiles[s.t]
        krows = align_up(s.cols, self.dim)

        def kv_load(name):
            em.emit(Opcode.LOAD, writes=[(name, g % 2)], mem=_SPAD,
                    dram_addr=T[name].offset(tile.b, tile.kvh, s.j * self.Bc), dram_stride=self.dpad,
                    rows=krows, chunks=self.nd, sram_addr=B[name][g % 2], sram_chunk_stride=self.Bc)

        if g == 0:
            # Nothing hides the first loads: K first, then Q in the first step's row bands, so that
            # the first QK band starts after K and one band of Q rather than after the whole Q tile.
            kv_load("K")
        if s.j == 0:
            for r0, rows in self.q_loads(s.t):
                em.emit(Opcode.LOAD, writes=self.q_names(s.t, r0, rows), mem=_SPAD,
                        dram_addr=T["Q"].offset(tile.b, tile.h, tile.q0 + r0), dram_stride=self.dpad, rows=rows,
                        chunks=self.nd, sram_addr=B["Q"][s.t % 2] + r0, sram_chunk_stride=self.Br)
        if g != 0:
            kv_load("K")
        kv_load("V")

    def qk(self, g):
        B, s, t = self.B, self.steps[g], self.steps[g].t
        for i0, rows, cols, _, _ in s.bands:
            self.em.emit(Opcode.MATMUL, reads=self.q_names(t, i0, rows) + [("K", g % 2)], writes=[("S", g % 2)],
                         accumulate=0, transpose_w=1, m_rows=rows, k_chunks=self.nd, n_blocks=-(-cols // self.dim),
                         a_addr=B["Q"][t % 2] + i0, a_kstride=self.Br, w_addr=B["K"][g % 2], w_kstride=self.Bc,
                         w_nstride=self.dim, out_addr=B["S"][g % 2] + i0, out_nstride=self.Br)

    def pv(self, g):
        B, s, t = self.B, self.steps[g], self.steps[g].t
        for i0, rows, cols, _, _ in s.bands:
            self.em.emit(Opcode.MATMUL, reads=[("S", g % 2), ("V", g % 2)] + ([("O", t % 2)] if s.j else []),
                         writes=[("O", t % 2)], accumulate=int(s.j > 0), transpose_w=0, a_mem=_ACC, m_rows=rows,
                         k_chunks=-(-cols // self.dim), n_blocks=self.nd, a_addr=B["S"][g % 2] + i0,
                         a_kstride=self.Br, w_addr=B["V"][g % 2], w_kstride=self.dim, w_nstride=self.Bc,
                         out_addr=B["O"][t % 2] + i0, out_nstride=self.Br)

    def softmax(self, g):
        em, B, s = self.em, self.B, self.steps[g]
        t, Br, state = s.t, self.Br, B["STATE"][s.t % 2]
        trows = self.tiles[t].rows
        if s.j == 0:
            em.emit(Opcode.VECTOR, funct=int(VectorFunct.INIT), rows=trows, blocks=1, state_addr=state)
        for bi0, brows, bcols, causal, coff in s.bands:
            common = dict(rows=brows, blocks=-(-bcols // self.dim), acc_addr=B["S"][g % 2] + bi0,
                          acc_block_stride=Br, state_addr=state + bi0, kv_valid=s.kv_valid, causal=causal,
                          causal_offset=coff, mult=self.exp_mult, shift=self.exp_shift)
            em.emit(Opcode.VECTOR, reads=[("S", g % 2)], funct=int(VectorFunct.ROWMAX), **common)
            # P overwrites S in place: PV_g reads it from the accumulator (a_mem = ACC).
            em.emit(Opcode.VECTOR, reads=[("S", g % 2)], writes=[("S", g % 2)], funct=int(VectorFunct.EXP),
                    **common)
        if s.j > 0:
            em.emit(Opcode.VECTOR, reads=[("O", t % 2)], writes=[("O", t % 2)], funct=int(VectorFunct.SCALE),
                    rows=s.rows, blocks=self.nd, acc_addr=B["O"][t % 2] + s.i0, acc_block_stride=Br,
                    state_addr=state + s.i0)
        if g + 1 == len(self.steps) or self.steps[g + 1].t != t:
            # L is final: the reciprocal runs now, under QK_{g+1} and PV_g, rather than just before
            # OUTPUT, where PV_{g+2} would wait for it.
            em.emit(Opcode.VECTOR, funct=int(VectorFunct.RECIP), rows=trows, blocks=1, state_addr=state,
                    mult=self.recip_mult)

    def finish(self, t):
        # In row chunks, so that STORE of one chunk overlaps OUTPUT of the next: the last
        # tile's output reaches DRAM about one chunk's STORE after its last OUTPUT row.
        em, B, tile, Br = self.em, self.B, self.tiles[t], self.Br
        for c, (r0, rows) in enumerate(_row_chunks(tile.rows, OUTPUT_CHUNK_ROWS)):
            em.emit(Opcode.VECTOR, reads=[("O", t % 2)], writes=[("OUT", c)], funct=int(VectorFunct.OUTPUT),
                    rows=rows, blocks=self.nd, acc_addr=B["O"][t % 2] + r0, acc_block_stride=Br,
                    state_addr=B["STATE"][t % 2] + r0, spad_addr=B["OUT"] + r0, spad_block_stride=Br,
                    shift=self.out_shift)
            em.emit(Opcode.STORE, reads=[("OUT", c)], mem=_SPAD,
                    dram_addr=self.T["O"].offset(tile.b, tile.h, tile.q0 + r0), dram_stride=self.dpad,
                    rows=rows, chunks=self.nd, sram_addr=B["OUT"] + r0, sram_chunk_stride=Br)


# ============================================================ GEMM
def _pow2_sizes(dim, cap, top):
    out, s = set(), dim
    while s < top:
        out.add(min(s, cap))
        s *= 2
    out.add(min(top, cap))
    return sorted(out)


def _dma_cycles(cfg: NPUConfig, rows: int, row_bytes: int, stride: int) -> float:
    """Rough cycles of one LOAD/STORE: beats, with a floor per burst (short bursts are latency-bound)."""
    beat, blen = cfg.dma_beat_bytes, cfg.dma_burst_len
    floor = 12 / cfg.dma_max_outstanding
    if stride == row_bytes:
        beats = rows * row_bytes // beat
        full, rest = divmod(beats, blen)
        return full * max(blen, floor) + (max(rest, floor) if rest else 0)
    per = row_bytes // beat
    full, rest = divmod(per, blen)
    return rows * (full * max(blen, floor) + (max(rest, floor) if rest else 0))


def _gemm_plan(wl: GemmWorkload, cfg: NPUConfig):
    """Pick ``(Mt, Nt, Kt)`` minimizing an estimate of the run time; raise CompileError if nothing fits.

    The estimate: the busiest of the array (``max(m_rows, dim)`` cycles per weight tile), the LOAD
    queue and the STORE queue, plus the first loads and the last store, which cannot overlap.
    """
    dim = cfg.dim
    Np, Kp = align_up(wl.N, dim), align_up(wl.K, dim)
    best = None
    for Mt in _pow2_sizes(dim, wl.M, 1024):
        for Nt in _pow2_sizes(dim, Np, 255 * dim):
            for Kt in _pow2_sizes(dim, Kp, 255 * dim):
                spad = 2 * Mt * (Kt // dim) + 2 * Kt * (Nt // dim)
                acc = 2 * Mt * (Nt // dim)
                if spad > cfg.spad_rows or acc > cfg.acc_rows:
                    continue
                nm, nn, nk = -(-wl.M // Mt), -(-Np // Nt), -(-Kp // Kt)
                steps = nm * nn * nk
                mat = nn * nk * sum(max(min(Mt, wl.M - m0), dim) for m0 in range(0, wl.M, Mt)) \
                    * (Nt // dim) * (Kt // dim)
                a_one = _dma_cycles(cfg, Mt, Kt, Kp)
                b_one = _dma_cycles(cfg, Kt, Nt, Np)
                c_one = _dma_cycles(cfg, Mt, 4 * Nt, 4 * Np)
                a_loads = nm if nk == 1 else steps          # A stays across n when K is one tile
                b_loads = 1 if nk == 1 and nn == 1 else steps
                load = a_loads * a_one + b_loads * b_one
                store = nm * nn * c_one
                est = max(mat, load, store) + a_one + b_one + c_one + 2 * dim * steps   # per-MATMUL fill/drain
                key = (est, steps)
                if best is None or key < best[0]:
                    best = (key, Mt, Nt, Kt)
    if best is None:
        raise CompileError(f"GEMM M={wl.M} N={wl.N} K={wl.K}: no tile of at least dim = {dim} fits config "
                           f"'{cfg.name}' (spad_rows = {cfg.spad_rows} must hold {4 * dim} rows, "
                           f"acc_rows = {cfg.acc_rows} must hold {2 * dim})")
    return best[1:]


def compile_gemm(wl: GemmWorkload, config) -> Program:
    """Compile ``C = A @ B`` (INT8 x INT8 -> INT32, wrapping) for ``config``: weight-stationary, double-buffered."""
    cfg = load_config(config)
    if not isinstance(wl, GemmWorkload):
        raise TypeError(f"compile_gemm needs a GemmWorkload, got {type(wl).__name__}")
    dim = cfg.dim
    Mt, Nt, Kt = _gemm_plan(wl, cfg)
    Np, Kp = align_up(wl.N, dim), align_up(wl.K, dim)

    dram = _Dram(cfg)
    Ap = dram.add("A", (wl.M, wl.K), (wl.M, Kp), "int8")
    Bp = dram.add("B", (wl.K, wl.N), (Kp, Np), "int8")
    Cp = dram.add("C", (wl.M, wl.N), (wl.M, Np), "int32", output=True)

    mem = _Onchip()
    Ab = [mem.add(f"A{i}", "spad", Mt * (Kt // dim)) for i in range(2)]
    Bb = [mem.add(f"B{i}", "spad", Kt * (Nt // dim)) for i in range(2)]
    Cb = [mem.add(f"C{i}", "acc", Mt * (Nt // dim)) for i in range(2)]
    usage = mem.usage(cfg)

    em = _Emitter(cfg)
    SPAD, ACC = int(Mem.SPAD), int(Mem.ACC)
    steps = []      # (u, m0, n0, k0, last k)
    u = 0
    for m0 in range(0, wl.M, Mt):
        for n0 in range(0, Np, Nt):
            for k0 in range(0, Kp, Kt):
                steps.append((u, m0, n0, k0, k0 + Kt >= Kp))
            u += 1
    slot = {"A": [None, 1], "B": [None, 1]}     # operand -> [tile key loaded last, its slot]

    def operand(name, key, g):
        """The slot holding tile ``key`` of ``name``, loading it into the other slot if it is new."""
        s = slot[name]
        if s[0] == key:
            return s[1], False
        s[0], s[1] = key, 1 - s[1]
        return s[1], True

    plan = []
    for g, (u, m0, n0, k0, last) in enumerate(steps):
        a_slot, a_new = operand("A", (m0, k0), g)
        b_slot, b_new = operand("B", (k0, n0), g)
        plan.append((a_slot, a_new, b_slot, b_new))

    def loads(g):
        u, m0, n0, k0, last = steps[g]
        a_slot, a_new, b_slot, b_new = plan[g]
        mr, kr, nr = min(Mt, wl.M - m0), min(Kt, Kp - k0), min(Nt, Np - n0)
        if a_new:
            em.emit(Opcode.LOAD, writes=[("A", a_slot)], mem=SPAD, dram_addr=Ap.offset(m0, k0), dram_stride=Kp,
                    rows=mr, chunks=kr // dim, sram_addr=Ab[a_slot], sram_chunk_stride=Mt)
        if b_new:
            em.emit(Opcode.LOAD, writes=[("B", b_slot)], mem=SPAD, dram_addr=Bp.offset(k0, n0), dram_stride=Np,
                    rows=kr, chunks=nr // dim, sram_addr=Bb[b_slot], sram_chunk_stride=Kt)

    G = len(steps)
    loads(0)
    for g in range(G):
        if g + 1 < G:
            loads(g + 1)
        u, m0, n0, k0, last = steps[g]
        a_slot, _, b_slot, _ = plan[g]
        mr, kr, nr = min(Mt, wl.M - m0), min(Kt, Kp - k0), min(Nt, Np - n0)
        c = ("C", u % 2)
        em.emit(Opcode.MATMUL, reads=[("A", a_slot), ("B", b_slot)] + ([c] if k0 else []), writes=[c],
                accumulate=int(k0 > 0), transpose_w=0, m_rows=mr, k_chunks=kr // dim, n_blocks=nr // dim,
                a_addr=Ab[a_slot], a_kstride=Mt, w_addr=Bb[b_slot], w_kstride=dim, w_nstride=Kt,
                out_addr=Cb[u % 2], out_nstride=Mt)
        if last:
            em.emit(Opcode.STORE, reads=[c], mem=ACC, dram_addr=Cp.offset(m0, n0), dram_stride=4 * Np,
                    rows=mr, chunks=nr // dim, sram_addr=Cb[u % 2], sram_chunk_stride=Mt)

    words = _checked(em.words(), cfg)
    prog_addr, size = dram.finish(len(words), cfg)
    return Program(words=words, layout=dram.layout, prog_addr=prog_addr, dram_bytes=size, onchip=usage,
                   macs_useful=wl.macs, macs_issued=em.macs_issued, config=cfg, workload=wl,
                   tiling={"Mt": Mt, "Nt": Nt, "Kt": Kt, "steps": G})


def compile_workload(wl, config) -> Program:
    """Dispatch on the workload's type."""
    if isinstance(wl, AttentionWorkload):
        return compile_attention(wl, config)
    if isinstance(wl, GemmWorkload):
        return compile_gemm(wl, config)
    raise TypeError(f"no compiler for {type(wl).__name__}")


# ============================================================ command line
