"""The hardware configuration: one validated object that drives every part.

The generator, the compiler's tiling, the golden model and the performance
model all read :class:`NPUConfig`. A config that cannot work is rejected here,
at load time, with :class:`ConfigError` naming the field, its value and the
limit, never by a crash deep inside the generator.

A config *file* (or YAML text, :func:`validate_config_text`) must state every
field in :data:`HARDWARE_FIELDS`; ``NPUConfig(...)`` and
``NPUConfig.from_dict`` in Python keep the dataclass defaults.
"""

from __future__ import annotations

import dataclasses
import re
import reprlib
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

#: The named hardware configurations shipped with the project (package data of flashnpu.spec).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

__all__ = ["ConfigError", "NPUConfig", "HARDWARE_FIELDS", "MICROARCH_FIELDS", "load_config", "validate_config_text",
           "config_path", "config_names"]


class ConfigError(ValueError):
    """An invalid hardware configuration. The message names the field and the limit."""


def _is_pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 3


def _show(v) -> str:
    """A short one-line ``repr`` of a user's value (bounded: values come from untrusted files)."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 128:
        return f"<integer of {v.bit_length()} bits>"
    try:
        return _REPR.repr(v)
    except Exception:                                   # e.g. an int too long to print, nested
        return f"<{type(v).__name__}>"


#: A config name becomes a folder name (``build/<name>``): no path separators, no leading dot.
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}")


@dataclass(frozen=True)
class NPUConfig:
    """A validated NPU configuration.

    All sizes are in rows of the memory they describe: a scratchpad row holds
    ``array_cols`` operands of ``input_bits`` each, an accumulator row holds
    ``array_cols`` accumulators of ``acc_bits`` each.
    """

    name: str = "custom"
    #: Systolic array height R (reduction depth of one pass) and width C.
    array_rows: int = 16
    array_cols: int = 16
    #: Operand width (signed) and accumulator width (signed, wrapping).
    input_bits: int = 8
    acc_bits: int = 32
    #: Scratchpad: rows of ``array_cols`` operands, split into banks.
    spad_rows: int = 4096
    spad_banks: int = 4
    #: Accumulator SRAM: rows of ``array_cols`` accumulators, split into banks.
    acc_rows: int = 2048
    acc_banks: int = 4
    #: Vector unit lanes; one accumulator row per cycle.
    vector_lanes: int = 16
    #: Entries of the vector unit's per-row state (running max, sum, factor).
    vector_state_rows: int = 512
    #: AXI4 master data width and maximum INCR burst length (beats).
    dma_data_bits: int = 128
    dma_burst_len: int = 16
    #: Read bursts the DMA may have in flight at once.
    dma_max_outstanding: int = 4
    #: AXI address and ID widths.
    axi_addr_bits: int = 32
    axi_id_bits: int = 4
    #: Depth of each unit's instruction queue (LOAD, STORE, MATRIX, VECTOR).
    queue_depth: int = 8
    #: Width of each dependency-token counter; overflow is an error.
    token_bits: int = 4

    # ------------------------------------------- microarchitecture knobs (MICROARCH_FIELDS)
    #: Instruction fetch requests in flight (the sequencer's limit, the DMA's fetch FIFO depth).
    fetch_depth: int = 8
    #: Instructions a unit may have taken and not completed (the sequencer's in-flight FIFOs).
    inflight_depth: int = 8
    #: Quotient bits per cycle of the RECIP divider (1 = radix 2, 2 = radix 4, ...).
    divider_bits_per_cycle: int = 2
    #: RECIP dividers working on successive rows at once (round robin): more rows per cycle.
    recip_dividers: int = 8
    #: STORE bursts whose AW went out and whose W beats are not all sent (burst-length FIFO).
    store_burst_fifo_depth: int = 4

    # ----------------------------------------------------------------- derived
    @property
    def dim(self) -> int:
        """The array is square; this is its side."""
        return self.array_rows

    @property
    def spad_row_bytes(self) -> int:
        return self.array_cols * self.input_bits // 8

    @property
    def acc_row_bytes(self) -> int:
        return self.array_cols * self.acc_bits // 8

    @property
    def dma_beat_bytes(self) -> int:
        return self.dma_data_bits // 8

    @property
    def spad_bytes(self) -> int:
        return self.spad_rows * self.spad_row_bytes

    @property
    def acc_bytes(self) -> int:
        return self.acc_rows * self.acc_row_bytes

    @property
    def pes(self) -> int:
        return self.array_rows * self.array_cols

    # -------------------------------------------------------------- validation
    def __post_init__(self):
        cname = _show(self.name)

        def fail(name, limit):
            raise ConfigError(f"config {cname}: field '{name}' = {_show(getattr(self, name))}: {limit}")

        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "name":
                if not isinstance(v, str) or not v:
                    fail(f.name, "must be a non-empty string")
                if not _NAME_RE.fullmatch(v):
                    fail(f.name, "must be at most 100 letters, digits, '_', '.', '+' or '-', not "
                         "starting with '.', '+' or '-' (it names the build folder build/<name>)")
                continue
            if isinstance(v, bool) or not isinstance(v, int):
                fail(f.name, "must be an integer")
            if v <= 0:
                fail(f.name, "must be positive")

        if self.array_rows < 4 or self.array_rows > 64:
            fail("array_rows", "must be between 4 and 64 (a scratchpad row, 8*array_rows bits, "
                 "must hold a whole DMA beat, and dma_data_bits is at least 32)")
        if self.array_cols != self.array_rows:
            fail("array_cols", f"must equal array_rows ({self.array_rows}): the array is square, "
                 "because one scratchpad row feeds both its left edge and its weights")
        if not _is_pow2(self.array_rows):
            fail("array_rows", "must be a power of two")
        if self.input_bits not in (4, 8):
            fail("input_bits", "must be 4 or 8 (scratchpad rows are whole bytes per operand group)")
        if self.input_bits != 8:
            fail("input_bits", "must be 8: the ISA's P quantization and the DMA byte lanes assume INT8")
        need = 2 * self.input_bits + (self.array_rows - 1).bit_length()
        if self.acc_bits != 32:
            fail("acc_bits", f"must be 32 (at least {need} to hold one pass without overflow; "
                 "the vector unit's numerics are defined on INT32)")
        if self.vector_lanes != self.array_cols:
            fail("vector_lanes", f"must equal array_cols ({self.array_cols}): the vector unit "
                 "processes one accumulator row per cycle")
        if not _is_pow2(self.spad_banks):
            fail("spad_banks", "must be a power of two")
        if not _is_pow2(self.acc_banks):
            fail("acc_banks", "must be a power of two")
        if self.spad_rows % self.spad_banks:
            fail("spad_rows", f"must be a multiple of spad_banks ({self.spad_banks})")
        if self.acc_rows % self.acc_banks:
            fail("acc_rows", f"must be a multiple of acc_banks ({self.acc_banks})")
        # A one-row bank would have a zero-width address port (Verilog [-1:0], Verilator ASCRANGE).
        if self.spad_rows < 2 * self.spad_banks:
            fail("spad_banks", f"must be at most spad_rows / 2 = {self.spad_rows // 2}: each bank needs "
                 "at least 2 rows (a 1-row bank has a zero-width address)")
        if self.acc_rows < 2 * self.acc_banks:
            fail("acc_banks", f"must be at most acc_rows / 2 = {self.acc_rows // 2}: each bank needs "
                 "at least 2 rows (a 1-row bank has a zero-width address)")
        if self.spad_rows > 1 << 16:
            fail("spad_rows", "must be at most 65536 (16-bit row addresses in the ISA)")
        if self.acc_rows > 1 << 16:
            fail("acc_rows", "must be at most 65536 (16-bit row addresses in the ISA)")
        # One tile: weights (dim rows) plus one streamed A row must fit twice (double buffering).
        if self.spad_rows < 4 * self.dim:
            fail("spad_rows", f"must be at least {4 * self.dim} (two weight tiles and two operand "
                 f"tiles of {self.dim} rows, for double buffering)")
        if self.acc_rows < 2 * self.dim:
            fail("acc_rows", f"must be at least {2 * self.dim} (two output tiles of {self.dim} rows)")
        if self.vector_state_rows > 1 << 12:
            fail("vector_state_rows", "must be at most 4096 (12-bit state index in the ISA)")
        if self.vector_state_rows < self.dim:
            fail("vector_state_rows", f"must be at least {self.dim} (one tile of rows)")
        if not _is_pow2(self.dma_data_bits) or not 32 <= self.dma_data_bits <= 1024:
            fail("dma_data_bits", "must be a power of two between 32 and 1024")
        if self.dma_data_bits > self.spad_row_bytes * 8:
            fail("dma_data_bits", f"must be at most the scratchpad row width "
                 f"({self.spad_row_bytes * 8} bits), so that a beat never spans two rows")
        if not 1 <= self.dma_burst_len <= 256:
            fail("dma_burst_len", "must be between 1 and 256 (AXI4 INCR)")
        fetch_beats = max(1, 32 // self.dma_beat_bytes)
        if self.dma_burst_len < fetch_beats:
            fail("dma_burst_len", f"must be at least {fetch_beats}: an instruction fetch reads one "
                 f"32-byte word in one burst of {self.dma_beat_bytes}-byte beats")
        if self.dma_burst_len * self.dma_beat_bytes > 4096:
            fail("dma_burst_len", f"times the beat size ({self.dma_beat_bytes} B) must be at most "
                 "4096 B (an AXI burst may not cross 4 KiB)")
        if not 16 <= self.axi_addr_bits <= 32:
            fail("axi_addr_bits", "must be between 16 and 32 (DRAM addresses are 32-bit in the ISA)")
        if not 1 <= self.axi_id_bits <= 8:
            fail("axi_id_bits", "must be between 1 and 8")
        if not 1 <= self.dma_max_outstanding <= (1 << self.axi_id_bits) - 1:
            fail("dma_max_outstanding", f"must be between 1 and {(1 << self.axi_id_bits) - 1} "
                 "(one AXI ID each, ID 0 is the instruction fetch)")
        if not 2 <= self.queue_depth <= 256:
            fail("queue_depth", "must be between 2 and 256")
        if not 2 <= self.token_bits <= 8:
            fail("token_bits", "must be between 2 and 8")
        if not 2 <= self.fetch_depth <= 32:
            fail("fetch_depth", "must be between 2 and 32")
        if not 2 <= self.inflight_depth <= 32:
            fail("inflight_depth", "must be between 2 and 32")
        from flashnpu.spec.timing import DIVIDER_QUOTIENT_BITS as qbits, division_cycles
        if not 1 <= self.divider_bits_per_cycle <= qbits:
            fail("divider_bits_per_cycle", f"must be between 1 and {qbits} (a division has {qbits} quotient bits)")
        division = division_cycles(self.divider_bits_per_cycle)
        if not 1 <= self.recip_dividers <= division:
            fail("recip_dividers", f"must be between 1 and {division}, the cycles of one division at "
                 f"divider_bits_per_cycle = {self.divider_bits_per_cycle} (more dividers would sit idle)")
        if not 2 <= self.store_burst_fifo_depth <= 16:
            fail("store_burst_fifo_depth", "must be between 2 and 16")

    # ------------------------------------------------------------------- I/O
    @classmethod
    def from_dict(cls, d: dict, *, name: str | None = None, require_all: bool = False) -> "NPUConfig":
        """A validated config from a mapping of field names to values.

        Anything but a mapping of known field names to valid values raises
        :class:`ConfigError` (one line, naming the field). ``name`` is the
        config's name unless ``d`` has one. With ``require_all`` (what config
        files get) every field in :data:`HARDWARE_FIELDS` must be present;
        without it a missing field takes the dataclass default.
        """
        own = d.get("name") if isinstance(d, dict) else None
        cname = _show(own if isinstance(own, str) else name)
        if not isinstance(d, dict):
            raise ConfigError(f"config {cname}: top level must be a mapping of field names to values, "
                              f"not {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        for k in d:
            if not isinstance(k, str):
                raise ConfigError(f"config {cname}: field name {_show(k)} is a {type(k).__name__}, "
                                  "must be a string (one of the known fields)")
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"config {cname}: unknown field {_show(unknown[0])} "
                              f"(known: {', '.join(sorted(known))})")
        if require_all:
            missing = [f for f in HARDWARE_FIELDS if f not in d]
            if missing:
                raise ConfigError(f"config {cname}: missing field{'s' if len(missing) > 1 else ''} "
                                  f"{', '.join(repr(f) for f in missing)}: a config file must state "
                                  f"every hardware field ({', '.join(HARDWARE_FIELDS)})")
        d = dict(d)
        if name is not None:
            d.setdefault("name", name)
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "NPUConfig":
        return dataclasses.replace(self, **changes)

    def summary(self) -> dict:
        """Headline numbers of the generated design."""
        return {
            "pes": self.pes,
            "peak_macs_per_cycle": self.pes,
            "spad_bytes": self.spad_bytes,
            "acc_bytes": self.acc_bytes,
            "sram_bytes": self.spad_bytes + self.acc_bytes,
            "dma_bytes_per_cycle": self.dma_beat_bytes,
        }


#: Microarchitecture knobs: a config file may leave them out, and then they take their defaults
#: (spec/timing.py derives the pipeline from them).
MICROARCH_FIELDS = ("fetch_depth", "inflight_depth", "divider_bits_per_cycle", "recip_dividers",
                    "store_burst_fifo_depth")

#: The fields a config file must state: every field of :class:`NPUConfig` but ``name`` and the
#: microarchitecture knobs.
HARDWARE_FIELDS = tuple(f.name for f in fields(NPUConfig) if f.name != "name" and f.name not in MICROARCH_FIELDS)


def config_path(name: str) -> Path:
    return CONFIG_DIR / f"{name}.yaml"


def config_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key, line, first_line):
        super().__init__(f"duplicate field {_show(key)} at line {line} (first at line {first_line})")


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key stated twice in one mapping (instead of keeping the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:           # unhashable: the SafeLoader reports it
                    continue
                if first is not None:
                    raise _DuplicateKey(key, line, first)
                seen[key] = line
        return super().construct_mapping(node, deep)


def _yaml_problem(e: yaml.YAMLError) -> str:
    if isinstance(e, _DuplicateKey):
        return str(e)
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    text = problem or (str(e).splitlines() or [type(e).__name__])[0]
    if mark is not None:
        text += f" (line {mark.line + 1}, column {mark.column + 1})"
    return f"not valid YAML: {text}"


def _load_text(text: str, name: str, where: str) -> NPUConfig:
    try:
        d = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: {_yaml_problem(e)}") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid YAML: nested too deeply") from None
    except Exception as e:      # a scalar the SafeLoader's constructors choke on, e.g. an int too long for int()
        first = (str(e).splitlines() or [""])[0][:200]
        raise ConfigError(f"{where}: not valid YAML: {type(e).__name__}: {first}") from None
    if d is None:
        raise ConfigError(f"{where}: states no fields (empty): a config file must state every "
                          f"hardware field ({', '.join(HARDWARE_FIELDS)})")
    return NPUConfig.from_dict(d, name=name, require_all=True)


def validate_config_text(text: str, name: str = "fuzz") -> NPUConfig:
    """The config that the YAML ``text`` describes, by the same rules as a config file.

    Raises :class:`ConfigError` (one line) for anything that is not a valid
    config, and nothing else: made for fuzzing the loader with generated texts.
    """
    if not isinstance(text, str):
        raise ConfigError(f"config {_show(name)}: text must be a str, not {type(text).__name__}")
    return _load_text(text, name, f"config {_show(name)}")


def load_config(name_or_path: "str | Path | NPUConfig") -> NPUConfig:
    """Load a named config (``"tiny"``) or a YAML file path, validated.

    A file must state every field in :data:`HARDWARE_FIELDS` (``name`` is
    optional and defaults to the file's stem); an empty file, a missing,
    unknown or duplicated field, or a bad value is a one-line
    :class:`ConfigError` naming the file and the field.
    """
    if isinstance(name_or_path, NPUConfig):
        return name_or_path
    if not isinstance(name_or_path, (str, Path)) or (isinstance(name_or_path, str) and not name_or_path):
        raise ConfigError(f"argument config = {name_or_path!r}: must be a config name ({', '.join(config_names())}), "
                          "a YAML file path or an NPUConfig")
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = config_path(str(name_or_path))
        if not p.exists():
            raise ConfigError(f"no config named {name_or_path!r} (known: {', '.join(config_names())})")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"config file {p}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {p}: not UTF-8 text (byte {raw[e.start]:#04x} at offset "
                          f"{e.start})") from None
    return _load_text(text, p.stem, f"config file {p}")

