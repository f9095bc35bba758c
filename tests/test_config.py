"""Every config rejection rule, in the loader and on the command line."""

import subprocess
import sys

import pytest

from flashnpu.sw.config import ConfigError, NPUConfig, config_names, load_config


def test_named_configs_load():
    assert {"tiny", "default", "large"} <= set(config_names())
    tiny, default, large = (load_config(n) for n in ("tiny", "default", "large"))
    assert (tiny.dim, default.dim, large.dim) == (4, 16, 32)
    assert default.vector_lanes == 16 and default.dma_data_bits == 128
    assert default.summary()["peak_macs_per_cycle"] == 256


BASE = load_config("default").to_dict()

# (field, bad value, words the message must contain)
REJECTIONS = [
    ("array_rows", 0, "must be positive"),
    ("array_rows", -4, "must be positive"),
    ("array_rows", 12, "power of two"),
    ("array_rows", 128, "between 2 and 64"),
    ("array_cols", 8, "must equal array_rows"),
    ("input_bits", 16, "must be 4 or 8"),
    ("input_bits", 4, "must be 8"),
    ("acc_bits", 16, "must be 32"),
    ("vector_lanes", 8, "must equal array_cols"),
    ("spad_banks", 3, "power of two"),
    ("acc_banks", 6, "power of two"),
    ("spad_rows", 4097, "multiple of spad_banks"),
    ("acc_rows", 2050, "multiple of acc_banks"),
    ("spad_rows", 1 << 17, "at most 65536"),
    ("acc_rows", 1 << 17, "at most 65536"),
    ("spad_rows", 32, "at least 64"),
    ("acc_rows", 16, "at least 32"),
    ("vector_state_rows", 8192, "at most 4096"),
    ("vector_state_rows", 8, "at least 16"),
    ("dma_data_bits", 96, "power of two"),
    ("dma_data_bits", 16, "between 32 and 1024"),
    ("dma_data_bits", 256, "at most the scratchpad row width"),
    ("dma_burst_len", 300, "between 1 and 256"),
    ("dma_burst_len", 512, "between 1 and 256"),
    ("dma_max_outstanding", 16, "between 1 and 15"),
    ("axi_addr_bits", 40, "between 16 and 32"),
    ("axi_id_bits", 9, "between 1 and 8"),
    ("queue_depth", 1, "between 2 and 256"),
    ("token_bits", 9, "between 2 and 8"),
    ("queue_depth", "eight", "must be an integer"),
    ("token_bits", True, "must be an integer"),
]


@pytest.mark.parametrize("field,value,words", REJECTIONS, ids=[f"{f}={v}" for f, v, _ in REJECTIONS])
def test_rejection_names_field_value_and_limit(field, value, words):
    bad = {**BASE, field: value}
    if field == "array_rows" and isinstance(value, int) and value > 0:
        bad["array_cols"] = bad["vector_lanes"] = value   # reach the rule under test
    with pytest.raises(ConfigError) as e:
        NPUConfig.from_dict(bad, name="bad")
    msg = str(e.value)
    assert f"'{field}'" in msg and repr(value) in msg and words in msg
    assert "\n" not in msg


def test_burst_may_not_cross_4k():
    with pytest.raises(ConfigError, match="dma_burst_len.*4096"):
        NPUConfig.from_dict({**load_config("large").to_dict(), "dma_burst_len": 256}, name="bad")
    # exactly 4 KiB is legal
    assert NPUConfig.from_dict({**BASE, "dma_burst_len": 256}).dma_burst_len == 256


def test_unknown_field_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown field 'array_row'"):
        NPUConfig.from_dict({**BASE, "array_row": 4})
    p = tmp_path / "broken.yaml"
    p.write_text("array_rows: [4\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(p)
    with pytest.raises(ConfigError, match="no config named 'nope'"):
        load_config("nope")


def test_cli_reports_one_line_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("\n".join(f"{k}: {v}" for k, v in {**BASE, "spad_banks": 3}.items() if k != "name"))
    r = subprocess.run([sys.executable, "-m", "flashnpu.sw.cli", "generate", "--config", str(p)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "'spad_banks'" in lines[0] and "power of two" in lines[0]
