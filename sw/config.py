"""The hardware configuration: one validated object that drives every part.

The generator, the compiler's tiling, the golden model and the performance
model all read :class:`NPUConfig`. A config that cannot work is rejected here,
at load time, with :class:`ConfigError` naming the field, its value and the
limit, never by a crash deep inside the generator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

__all__ = ["ConfigError", "NPUConfig", "load_config", "config_path", "config_names"]


class ConfigError(ValueError):
    """An invalid hardware configuration. The message names the field and the limit."""


def _is_pow2(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


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
        def fail(name, limit):
            raise ConfigError(f"config {self.name!r}: field '{name}' = {getattr(self, name)!r}: {limit}")

        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "name":
                if not isinstance(v, str) or not v:
                    fail(f.name, "must be a non-empty string")
                continue
            if isinstance(v, bool) or not isinstance(v, int):
                fail(f.name, "must be an integer")
            if v <= 0:
                fail(f.name, "must be positive")

        if self.array_rows < 2 or self.array_rows > 64:
            fail("array_rows", "must be between 2 and 64")
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
        if self.dma_burst_len * self.dma_beat_bytes > 4096:
            fail("dma_burst_len", f"times the beat size ({self.dma_beat_bytes} B) must be at most "
                 "4096 B (an AXI burst may not cross 4 KiB)")
        if not 1 <= self.dma_max_outstanding <= (1 << self.axi_id_bits) - 1:
            fail("dma_max_outstanding", f"must be between 1 and {(1 << self.axi_id_bits) - 1} "
                 "(one AXI ID each, ID 0 is the instruction fetch)")
        if not 16 <= self.axi_addr_bits <= 32:
            fail("axi_addr_bits", "must be between 16 and 32 (DRAM addresses are 32-bit in the ISA)")
        if not 1 <= self.axi_id_bits <= 8:
            fail("axi_id_bits", "must be between 1 and 8")
        if not 2 <= self.queue_depth <= 256:
            fail("queue_depth", "must be between 2 and 256")
        if not 2 <= self.token_bits <= 8:
            fail("token_bits", "must be between 2 and 8")

    # ------------------------------------------------------------------- I/O
    @classmethod
    def from_dict(cls, d: dict, *, name: str | None = None) -> "NPUConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"config {name!r}: top level must be a mapping, not {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"config {name!r}: unknown field '{unknown[0]}' "
                              f"(known: {', '.join(sorted(known))})")
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


def config_path(name: str) -> Path:
    from flashnpu import CONFIG_DIR
    return CONFIG_DIR / f"{name}.yaml"


def config_names() -> list[str]:
    from flashnpu import CONFIG_DIR
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(name_or_path: "str | Path | NPUConfig") -> NPUConfig:
    """Load a named config (``"tiny"``) or a YAML file path, validated."""
    if isinstance(name_or_path, NPUConfig):
        return name_or_path
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = config_path(str(name_or_path))
        if not p.exists():
            raise ConfigError(f"no config named {name_or_path!r} (known: {', '.join(config_names())})")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p}: not valid YAML: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise ConfigError(f"config file {p}: {e.strerror}") from None
    return NPUConfig.from_dict(d if d is not None else {}, name=p.stem)
