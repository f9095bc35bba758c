"""The bit-exact golden model of the NPU, at the ISA level.

It executes a program in program order, one instruction at a time, exactly as
``docs/architecture.md`` ("Instruction semantics", "Checks") defines it; a
program whose tokens pass ``sw/tokens.py`` gives the same result on the
hardware, whose queues run concurrently. Every fixed-point operation comes from
``spec/numerics.py``; each instruction is one or a few vectorized numpy
operations.

Where the semantics leave an order open because an instruction's own writes
alias (the compiler never emits such programs, but the model must be
deterministic), the model executes the loops of ``docs/architecture.md``
sequentially in the written nesting order: LOAD/STORE ``r`` outer, ``c``
inner; MATMUL ``nb`` outer, ``kc`` inner; VECTOR row ``i`` outer, block ``b``
inner. The last write wins, and a read sees earlier writes of the same
instruction. (Pipelined hardware may differ on such aliasing programs.)

DRAM addresses are never wrapped: a LOAD/STORE or a fetch past the
``axi_addr_bits`` address range is refused at dispatch (``DMA_WINDOW``,
``FETCH_WINDOW``), as are accesses outside the host's :class:`DramGrant`;
any byte at or beyond the end of the image is an ``AXI_DECERR`` (what the
memory model answers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flashnpu.sw.asm import decode_word
from flashnpu.spec.config import NPUConfig, load_config
from flashnpu.spec.checks import ALIGNED_FIELDS, COUNT_FIELDS, FIELD_LIMITS, check_rows
from flashnpu.spec.regmap import DramGrant
from flashnpu.spec.isa import INSTR_BYTES, OPCODE_QUEUE, ErrorCode, Mem, Opcode, Queue, VectorFunct
from flashnpu.spec.numerics import (
    NEG_INF, exp2_fixed, exp_arg, mul_q15, quant_p, recip_fixed, requant, saturate_a, wrap32,
)

__all__ = ["NpuError", "GoldenResult", "GoldenNPU", "check", "check_fields", "check_window",
           "dma_extent", "row_ranges"]


class NpuError(Exception):
    """The NPU stopped with an error: ``code`` (ErrorCode) at instruction index ``pc``.

    Errors are precise (``spec/isa.py``): every older instruction has completed
    and nothing younger has touched DRAM, so the DRAM image is the one at
    ``pc``, except in :attr:`undefined`.
    """

    def __init__(self, code: ErrorCode, pc: int, detail: str = "", *, undefined=()):
        self.code = ErrorCode(code)
        self.pc = pc
        self.detail = detail
        #: ``(lo, hi)`` DRAM byte ranges whose contents the error leaves undefined: the failing
        #: STORE's destination (the hardware may have written part of it). Empty for other errors.
        self.undefined = tuple(undefined)
        super().__init__(f"{self.code.name} at pc {pc}" + (f": {detail}" if detail else ""))


@dataclass
class GoldenResult:
    """What a run leaves: the DRAM image (a copy), instructions executed (HALT included), the trace."""
    dram: np.ndarray
    instructions: int
    trace: list | None = None


_FUNCTS = {int(f): f for f in VectorFunct}
# Enum members as module constants for check_fields' comparisons: an attribute of an Enum class
# costs about 50 ns to read, and the performance model checks every distinct word of a program.
_HALT, _VECTOR, _SPAD = Opcode.HALT, Opcode.VECTOR, Mem.SPAD
_NONE, _BAD_FIELD, _MISALIGNED = ErrorCode.NONE, ErrorCode.BAD_FIELD, ErrorCode.DMA_MISALIGNED


def check_fields(f: dict, config: NPUConfig) -> tuple[ErrorCode, str]:
    """Checks 1-6 of ``docs/architecture.md`` on decoded fields: ``(code, reason)``, ``NONE`` if legal."""
    op = f["opcode"]
    if not isinstance(op, Opcode):
        return ErrorCode.ILLEGAL_OPCODE, f"opcode {op:#x} is not an Opcode"
    wait, signal = f["wait"], f["signal"]
    if op == _HALT:
        if wait or signal:
            return ErrorCode.BAD_TOKEN_MASK, f"HALT has wait={wait:#x} signal={signal:#x}"
        return _NONE, ""
    q = OPCODE_QUEUE[op]
    if (wait | signal) >> q & 1:
        return ErrorCode.BAD_TOKEN_MASK, f"wait={wait:#x}/signal={signal:#x} names its own queue {q.name}"
    funct = None
    if op == _VECTOR:
        funct = _FUNCTS.get(f["funct"])
        if funct is None:
            return ErrorCode.ILLEGAL_FUNCT, f"funct {f['funct']} is not a VectorFunct"
    for name in COUNT_FIELDS[op]:
        if f[name] == 0:
            return _BAD_FIELD, f"field '{name}' = 0: must be >= 1"
    for lim in FIELD_LIMITS:
        if lim.opcode == op and lim.funct in (None, funct) and f[lim.field] >= lim.limit:
            return _BAD_FIELD, f"{lim.funct.name if lim.funct else op.name} field '{lim.field}' = " \
                               f"{f[lim.field]}: must be < {lim.limit}"
    beat = config.dma_beat_bytes
    for name in ALIGNED_FIELDS.get(op, ()):
        if f[name] % beat:
            return _MISALIGNED, f"field '{name}' = {f[name]:#x}: not a multiple of the {beat}-byte beat"
    return check_rows(f, config, op, funct)


def dma_extent(f: dict, config: NPUConfig) -> tuple[int, int]:
    """``[lo, hi)``: the DRAM bytes a LOAD/STORE's rows lie in (rows ascend with ``r`` and ``c``)."""
    rb = config.dim if f["mem"] == _SPAD else 4 * config.dim
    lo = f["dram_addr"]
    return lo, lo + (f["rows"] - 1) * f["dram_stride"] + f["chunks"] * rb


def check_window(f: dict, config: NPUConfig, grant: DramGrant | None) -> tuple[ErrorCode, str]:
    """The DRAM checks of a LOAD/STORE at dispatch: bus range, DMA window, code window."""
    lo, hi = dma_extent(f, config)
    if hi > 1 << config.axi_addr_bits:
        return ErrorCode.DMA_WINDOW, (f"DRAM bytes [{lo:#x}, {hi:#x}) pass the "
                                      f"{config.axi_addr_bits}-bit AXI address range")
    if grant is None:
        return _NONE, ""
    if not grant.dma_allowed(lo, hi):
        return ErrorCode.DMA_WINDOW, f"DRAM bytes [{lo:#x}, {hi:#x}) are not inside one granted DMA window"
    if f["opcode"] == Opcode.STORE and grant.touches_code(lo, hi):
        return ErrorCode.CODE_WRITE, (f"STORE to [{lo:#x}, {hi:#x}) overlaps the code window "
                                      f"[{grant.prog_addr:#x}, {grant.prog_end:#x})")
    return _NONE, ""


def row_ranges(start: np.ndarray, rb: int) -> tuple:
    """Byte ranges ``(lo, hi)`` of DMA rows starting at ``start``, adjacent ones merged."""
    out = []
    for a in np.sort(start).tolist():
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], a + rb)
        else:
            out.append([a, a + rb])
    return tuple((lo, hi) for lo, hi in out)


def _parse_faults(faults) -> tuple:
    out = []
    for i, item in enumerate(faults or ()):
        try:
            lo, hi, code = item
        except (TypeError, ValueError):
            raise ValueError(f"faults[{i}] = {item!r}: must be (lo, hi, code)") from None
        if isinstance(code, str):
            code = {"SLVERR": ErrorCode.AXI_SLVERR, "DECERR": ErrorCode.AXI_DECERR}.get(code.upper(), code)
        if code not in (ErrorCode.AXI_SLVERR, ErrorCode.AXI_DECERR):
            raise ValueError(f"faults[{i}]: code {code!r} must be AXI_SLVERR or AXI_DECERR")
        if not 0 <= int(lo) < int(hi):
            raise ValueError(f"faults[{i}]: [{lo}, {hi}) is not a non-empty byte range")
        out.append((int(lo), int(hi), ErrorCode(code)))
    return tuple(out)


def check(word: int, config: NPUConfig) -> ErrorCode:
    """Checks 1-6 of ``docs/architecture.md`` (static, first failure wins) on one instruction word."""
    return check_fields(decode_word(word), load_config(config))[0]


def _has_dup(idx: np.ndarray) -> bool:
    return idx.size > 1 and np.unique(idx).size != idx.size


class GoldenNPU:
    """The NPU's architectural state and an executor of its instructions.

    Parameters
    ----------
    config : NPUConfig or config name

    Members
    -------
    spad : np.ndarray, int8 [spad_rows, dim]
    acc : np.ndarray, int64 holding INT32 values [acc_rows, dim]
    M, L, F : np.ndarray, int64 [vector_state_rows]
        The vector unit's per-row state (running max, running sum, factor).
    tokens : dict (src Queue, dst Queue) -> int
        The dependency-token counters.
    dram : np.ndarray, uint8
        The DRAM image that LOAD/STORE use (set by :meth:`run`).

    Memories and state start at zero and persist across :meth:`run` calls (as
    SRAM does); :meth:`run` starts with all token counters at zero.
    """

    def __init__(self, config):
        self.config = load_config(config)
        c = self.config
        self.dim = c.dim
        self.spad = np.zeros((c.spad_rows, c.dim), dtype=np.int8)
        self.acc = np.zeros((c.acc_rows, c.dim), dtype=np.int64)
        self.M = np.zeros(c.vector_state_rows, dtype=np.int64)
        self.L = np.zeros(c.vector_state_rows, dtype=np.int64)
        self.F = np.zeros(c.vector_state_rows, dtype=np.int64)
        self.tokens = {(s, d): 0 for s in Queue for d in Queue if s != d}
        self.token_max = (1 << c.token_bits) - 1
        self.dram = np.zeros(0, dtype=np.uint8)
        self.halted = False
        self.grant = None
        self.faults = ()

    def reset(self):
        """Zero every memory, the vector state and the token counters."""
        self.__init__(self.config)

    # ---------------------------------------------------------------- run
    def run(self, dram: np.ndarray, prog_addr: int | None = None, max_instructions: int = 10_000_000,
            trace: bool = False, *, grant: DramGrant | None = None, faults=()) -> GoldenResult:
        """Run the program at byte ``prog_addr`` of ``dram`` until HALT; raise :class:`NpuError` on an error.

        ``dram`` (a uint8 array, or bytes) is not modified; the result holds the new image. With
        ``trace``, the result lists every executed instruction's decoded
        fields (with its ``pc``).

        ``grant`` (:class:`~flashnpu.spec.regmap.DramGrant`) is what the host
        allows: the code window and the DMA windows, checked as the hardware
        checks them (``FETCH_WINDOW``, ``DMA_WINDOW``, ``CODE_WRITE``). Its
        ``prog_addr`` is the program's. Without a grant only the image's bounds
        and the AXI address range are checked (the RTL always runs with one).
        ``faults`` are ``(lo, hi, code)`` byte ranges that the memory answers
        with ``code`` (``AXI_SLVERR`` or ``AXI_DECERR``): a LOAD that reads, a
        STORE that writes, or a fetch whose beats touch one stops with that
        code (a fetch with ``FETCH_ERROR``).
        """
        if isinstance(dram, (bytes, bytearray, memoryview)):
            dram = np.frombuffer(dram, dtype=np.uint8)
        dram = np.asarray(dram)
        if dram.dtype != np.uint8 or dram.ndim != 1:
            raise ValueError(f"dram must be a 1-D uint8 array, got {dram.dtype} of shape {dram.shape}")
        if grant is not None:
            if prog_addr is not None and int(prog_addr) != grant.prog_addr:
                raise ValueError(f"prog_addr = {prog_addr:#x} differs from grant.prog_addr = {grant.prog_addr:#x}")
            prog_addr = grant.prog_addr
        if prog_addr is None:
            raise ValueError("prog_addr: give the program's address (or a grant)")
        prog_addr = int(prog_addr)
        if prog_addr < 0 or prog_addr % INSTR_BYTES:
            raise ValueError(f"prog_addr = {prog_addr:#x}: must be a non-negative multiple of {INSTR_BYTES}")
        self.grant = grant
        self.faults = _parse_faults(faults)
        self.dram = dram.copy()
        for k in self.tokens:
            self.tokens[k] = 0
        self.halted = False
        log = [] if trace else None
        beat = self.config.dma_beat_bytes
        bus_end = 1 << self.config.axi_addr_bits
        pc = 0
        while not self.halted:
            if pc >= max_instructions:
                raise RuntimeError(f"max_instructions = {max_instructions} reached without HALT")
            a = prog_addr + INSTR_BYTES * pc
            if (grant is not None and a + INSTR_BYTES > grant.prog_end) or a + INSTR_BYTES > bus_end:
                end = grant.prog_end if grant is not None else bus_end
                raise NpuError(ErrorCode.FETCH_WINDOW, pc, f"instruction at {a:#x} is outside the code window "
                               f"[{prog_addr:#x}, {end:#x}) or the {self.config.axi_addr_bits}-bit bus")
            if a + INSTR_BYTES > self.dram.size:
                raise NpuError(ErrorCode.FETCH_ERROR, pc, f"fetch at {a:#x} beyond the {self.dram.size}-byte image")
            lo = a - a % beat                     # the bus reads whole beats
            if self._fault(lo, max(a + INSTR_BYTES, lo + beat)):
                raise NpuError(ErrorCode.FETCH_ERROR, pc, f"fetch at {a:#x} answered with an error")
            word = int.from_bytes(self.dram[a:a + INSTR_BYTES].tobytes(), "little")
            f = self.execute(word, pc)
            if log is not None:
                log.append({"pc": pc, **f})
            pc += 1
        return GoldenResult(dram=self.dram.copy(), instructions=pc, trace=log)

    def _fault(self, lo: int, hi: int) -> ErrorCode:
        """The fault code of the first fault range that ``[lo, hi)`` touches (``NONE`` if none)."""
        for f_lo, f_hi, code in self.faults:
            if lo < f_hi and f_lo < hi:
                return code
        return ErrorCode.NONE

    def execute(self, word: int, pc: int = 0) -> dict:
        """Check and execute one instruction (tokens included); return its decoded fields.

        The checks run in the hardware's dispatch order: the static checks,
        the DRAM windows, then the tokens in program order (pops, then pushes),
        all before the instruction has any effect.
        """
        f = decode_word(word)
        code, why = check_fields(f, self.config)
        if code != ErrorCode.NONE:
            raise NpuError(code, pc, why)
        op = f["opcode"]
        if op == Opcode.HALT:
            left = {f"{s.name}->{d.name}": n for (s, d), n in self.tokens.items() if n}
            if left:
                raise NpuError(ErrorCode.TOKENS_LEFT, pc, f"counters not zero at HALT: {left}")
            self.halted = True
            return f
        if op == Opcode.LOAD or op == Opcode.STORE:
            code, why = check_window(f, self.config, getattr(self, "grant", None))
            if code != ErrorCode.NONE:
                raise NpuError(code, pc, why)
        q = OPCODE_QUEUE[op]
        waits = [src for src in Queue if f["wait"] >> src & 1]
        signals = [dst for dst in Queue if f["signal"] >> dst & 1]
        for src in waits:
            if self.tokens[(src, q)] == 0:
                raise NpuError(ErrorCode.TOKEN_UNDERFLOW, pc,
                               f"pops {src.name}->{q.name} before any push in program order")
        for dst in signals:
            if self.tokens[(q, dst)] >= self.token_max:
                raise NpuError(ErrorCode.TOKEN_OVERFLOW, pc,
                               f"counter {q.name}->{dst.name} above {self.token_max}")
        for src in waits:
            self.tokens[(src, q)] -= 1
        if op == Opcode.LOAD:
            self._load(f, pc)
        elif op == Opcode.STORE:
            self._store(f, pc)
        elif op == Opcode.MATMUL:
            self._matmul(f)
        else:
            self._vector(f)
        for dst in signals:
            self.tokens[(q, dst)] += 1
        return f

    # ---------------------------------------------------------------- DMA
    def _dma_layout(self, f: dict, pc: int):
        """SRAM row and DRAM start byte of every (r, c) in order (r outer), and the row bytes."""
        rb = self.dim if f["mem"] == Mem.SPAD else 4 * self.dim
        r = np.arange(f["rows"], dtype=np.int64)[:, None]
        c = np.arange(f["chunks"], dtype=np.int64)[None, :]
        sram = (f["sram_addr"] + c * f["sram_chunk_stride"] + r).ravel()
        start = (f["dram_addr"] + r * f["dram_stride"] + c * rb).ravel()
        end = int(start[-1]) + rb   # the largest start is the last one (all terms are non-negative)
        undefined = row_ranges(start, rb) if f["opcode"] == Opcode.STORE else ()
        if end > self.dram.size:
            raise NpuError(ErrorCode.AXI_DECERR, pc,
                           f"DRAM bytes up to {end:#x} beyond the {self.dram.size}-byte image",
                           undefined=undefined)
        for lo, hi in (row_ranges(start, rb) if self.faults else ()):
            code = self._fault(lo, hi)
            if code:
                raise NpuError(code, pc, f"DRAM bytes [{lo:#x}, {hi:#x}) answered {code.name}",
                               undefined=undefined)
        return sram, start, rb

    def _load(self, f: dict, pc: int):
        sram, start, rb = self._dma_layout(f, pc)
        data = self.dram[start[:, None] + np.arange(rb)]           # [n, rb] uint8
        if f["mem"] == Mem.SPAD:
            mem, rows = self.spad, data.view(np.int8)
        else:
            mem, rows = self.acc, data.view("<i4").astype(np.int64)
        if _has_dup(sram):
            _, first = np.unique(sram[::-1], return_index=True)     # last write wins
            keep = sram.size - 1 - first
            mem[sram[keep]] = rows[keep]
        else:
            mem[sram] = rows

    def _store(self, f: dict, pc: int):
        sram, start, rb = self._dma_layout(f, pc)
        if f["mem"] == Mem.SPAD:
            data = self.spad[sram].view(np.uint8)
        else:
            data = self.acc[sram].astype("<i4").view(np.uint8)
        idx = start[:, None] + np.arange(rb)
        s = np.sort(start)
        if s.size > 1 and np.any(np.diff(s) < rb):                  # overlapping DRAM rows: in order
            for k in range(start.size):
                self.dram[idx[k]] = data[k]
        else:
            self.dram[idx] = data

    # ------------------------------------------------------------- MATMUL
    def _matmul(self, f: dict):
        dim = self.dim
        kcs, nbs, m = f["k_chunks"], f["n_blocks"], f["m_rows"]
        kc = np.arange(kcs)
        nb = np.arange(nbs)
        a_idx = f["a_addr"] + kc[:, None] * f["a_kstride"] + np.arange(m)[None, :]     # [kc, m]
        base = f["w_addr"] + kc[:, None] * f["w_kstride"] + nb[None, :] * f["w_nstride"]  # [kc, nb]
        w = self.spad[base[..., None] + np.arange(dim)]                                  # [kc, nb, j, col]
        if f["transpose_w"]:
            w = w.swapaxes(-1, -2)                                                       # W[k][n] = S[base+n][k]
        w = w.transpose(0, 2, 1, 3).reshape(kcs * dim, nbs * dim).astype(np.float64)
        out = f["out_addr"] + nb[:, None] * f["out_nstride"] + np.arange(m)[None, :]     # [nb, m]
        a_acc = f["a_mem"] == Mem.ACC

        # Exact in float64: |sum| <= 255*64 * 2048*128 < 2**53.
        if a_acc and np.intersect1d(a_idx, out).size:
            # A read from rows this instruction writes: the loops of docs/architecture.md,
            # each tile reading the accumulator as the earlier tiles left it.
            for b in range(nbs):
                for k in range(kcs):
                    a = saturate_a(self.acc[a_idx[k]]).astype(np.float64)
                    p = (a @ w[k * dim:(k + 1) * dim, b * dim:(b + 1) * dim]).astype(np.int64)
                    old = self.acc[out[b]] if (k or f["accumulate"]) else 0
                    self.acc[out[b]] = wrap32(old + p)
            return
        a = saturate_a(self.acc[a_idx]) if a_acc else self.spad[a_idx]                   # [kc, m, k]
        a = a.transpose(1, 0, 2).reshape(m, kcs * dim).astype(np.float64)
        p = (a @ w).astype(np.int64).reshape(m, nbs, dim)
        if _has_dup(out):               # overlapping output blocks: block after block
            for b in range(nbs):
                old = self.acc[out[b]] if f["accumulate"] else 0
                self.acc[out[b]] = wrap32(old + p[:, b])
        else:
            old = self.acc[out] if f["accumulate"] else 0
            self.acc[out] = wrap32(old + p.transpose(1, 0, 2))

    # ------------------------------------------------------------- VECTOR
    def _vector(self, f: dict):
        funct = VectorFunct(f["funct"])
        rows, blocks, dim = f["rows"], f["blocks"], self.dim
        s = slice(f["state_addr"], f["state_addr"] + rows)
        if funct == VectorFunct.INIT:
            self.M[s], self.L[s], self.F[s] = NEG_INF, 0, 0
            return
        if funct == VectorFunct.RECIP:
            self.F[s] = recip_fixed(self.L[s], f["mult"])
            return
        i = np.arange(rows)
        b = np.arange(blocks)
        acc_idx = f["acc_addr"] + i[:, None] + b[None, :] * f["acc_block_stride"]       # [i, b], (i, b) order
        x = self.acc[acc_idx].reshape(rows, blocks * dim)                                 # column c = b*dim + l
        if funct in (VectorFunct.ROWMAX, VectorFunct.EXP):
            c = np.arange(blocks * dim)
            valid = np.broadcast_to(c[None, :] < f["kv_valid"], (rows, blocks * dim))
            if f["causal"]:
                valid = valid & (c[None, :] <= i[:, None] + f["causal_offset"])
        if funct == VectorFunct.ROWMAX:
            mx = np.where(valid, x, NEG_INF).max(axis=1)
            m = np.maximum(self.M[s], mx)
            self.F[s] = exp2_fixed(exp_arg(self.M[s] - m, f["mult"], f["shift"]))
            self.M[s] = m
            return
        if funct == VectorFunct.SCALE:
            if _has_dup(acc_idx):
                for ii in range(rows):
                    for bb in range(blocks):
                        r = acc_idx[ii, bb]
                        self.acc[r] = wrap32(mul_q15(self.acc[r], self.F[s][ii]))
                return
            y = wrap32(mul_q15(x, self.F[s][:, None]))
            self.acc[acc_idx] = y.reshape(rows, blocks, dim)
            return
        if funct == VectorFunct.EXP:
            # p overwrites the scores in place (the P operand of P@V, read with a_mem = ACC).
            if _has_dup(acc_idx):       # rows alias: element by element, each reading the latest row
                valid = valid.reshape(rows, blocks, dim)
                for ii in range(rows):
                    total = 0
                    for bb in range(blocks):
                        r = acc_idx[ii, bb]
                        e = exp2_fixed(exp_arg(self.acc[r] - self.M[s][ii], f["mult"], f["shift"]))
                        p = np.where(valid[ii, bb], quant_p(e), 0)
                        self.acc[r] = p
                        total += int(p.sum())
                    self.L[s.start + ii] = wrap32(mul_q15(int(self.L[s][ii]), int(self.F[s][ii])) + total)
                return
            e = exp2_fixed(exp_arg(x - self.M[s][:, None], f["mult"], f["shift"]))
            p = np.where(valid, quant_p(e), 0)
            self.L[s] = wrap32(mul_q15(self.L[s], self.F[s]) + p.sum(axis=1))
            self.acc[acc_idx] = p.reshape(rows, blocks, dim)
            return
        if funct == VectorFunct.OUTPUT:
            y = requant(x, self.F[s][:, None], f["shift"])
        else:   # REQUANT
            y = requant(x, f["mult"], f["shift"])
        sp_idx = f["spad_addr"] + i[:, None] + b[None, :] * f["spad_block_stride"]       # [i, b]
        y = y.reshape(rows * blocks, dim).astype(np.int8)
        sp_idx = sp_idx.ravel()
        if _has_dup(sp_idx):
            _, first = np.unique(sp_idx[::-1], return_index=True)
            keep = sp_idx.size - 1 - first
            self.spad[sp_idx[keep]] = y[keep]
        else:
            self.spad[sp_idx] = y
