"""Every config rejection rule, in the loader and on the command line."""

import subprocess
import sys

import pytest
import yaml

from flashnpu.spec.config import (HARDWARE_FIELDS, MICROARCH_FIELDS, ConfigError, NPUConfig, config_names, config_path, load_config,
                                validate_config_text)


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
    ("array_rows", 128, "between 4 and 64"),
    ("array_rows", 2, "between 4 and 64"),
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
    ("dma_burst_len", 1, "at least 2: an instruction fetch"),   # a 16-byte beat: a fetch is 2 beats
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
    r = subprocess.run([sys.executable, "-m", "flashnpu.cli", "generate", "--config", str(p)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "'spad_banks'" in lines[0] and "power of two" in lines[0]


# ------------------------------------------------------------------ config files are strict
TINY_TEXT = config_path("tiny").read_text()


def _one_line_error(text, tmp_path=None, name="probe") -> str:
    """The ConfigError message for the YAML ``text`` (through a file if ``tmp_path``), checked one line."""
    with pytest.raises(ConfigError) as e:
        if tmp_path is None:
            validate_config_text(text, name)
        else:
            p = tmp_path / f"{name}.yaml"
            p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
            load_config(p)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def test_shipped_configs_state_every_field():
    for n in config_names():
        d = yaml.safe_load(config_path(n).read_text())
        assert set(HARDWARE_FIELDS + MICROARCH_FIELDS) == set(d), n
        assert load_config(n).name == n
    assert sorted(HARDWARE_FIELDS + MICROARCH_FIELDS + ("name",)) == sorted(NPUConfig.__dataclass_fields__)


def test_microarch_knobs_are_optional_and_validated(tmp_path):
    """A file may leave the microarchitecture knobs out (defaults); a bad value names the field."""
    text = "\n".join(line for line in TINY_TEXT.splitlines()
                     if line.split(":")[0].strip() not in MICROARCH_FIELDS)
    p = tmp_path / "bare.yaml"
    p.write_text(text)
    cfg = load_config(p)
    for k in MICROARCH_FIELDS:
        assert getattr(cfg, k) == NPUConfig.__dataclass_fields__[k].default
    for field, bad in (("fetch_depth", 1), ("fetch_depth", 33), ("inflight_depth", 1),
                       ("divider_bits_per_cycle", 0), ("divider_bits_per_cycle", 49),
                       ("recip_dividers", 0), ("recip_dividers", 25), ("store_burst_fifo_depth", 17)):
        p.write_text(text + f"\n{field}: {bad}\n")
        with pytest.raises(ConfigError, match=f"'{field}' = {bad}"):
            load_config(p)


def test_recip_dividers_limit_follows_the_radix(tmp_path):
    """More dividers than cycles of one division would sit idle: at 8 bits per cycle (6 cycles) the
    default 8 is refused, naming the field, the limit and the knob it depends on."""
    with pytest.raises(ConfigError, match=r"'recip_dividers' = 8.*between 1 and 6.*divider_bits_per_cycle = 8"):
        load_config("default").replace(divider_bits_per_cycle=8)
    assert load_config("default").replace(divider_bits_per_cycle=8, recip_dividers=6).recip_dividers == 6


def test_validate_config_text_is_the_file_loader():
    assert validate_config_text(TINY_TEXT, "tiny") == load_config("tiny")
    assert validate_config_text(TINY_TEXT).name == "fuzz"
    assert "must be a str" in _one_line_error(b"array_rows: 4")


def test_non_string_key_names_the_key(tmp_path):
    msg = _one_line_error(TINY_TEXT + "1: 2\n", tmp_path)
    assert "field name 1 is a int" in msg
    assert "field name True" in _one_line_error(TINY_TEXT + "yes: 2\n")     # YAML 1.1 'yes' is a bool
    assert "field name None" in _one_line_error(TINY_TEXT + "~: 2\n")


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "~\n"], ids=["empty", "newline", "comment", "null"])
def test_empty_file_is_rejected(tmp_path, text):
    msg = _one_line_error(text, tmp_path)
    assert "states no fields" in msg and str(tmp_path) in msg
    assert all(f in msg for f in HARDWARE_FIELDS)


def test_missing_fields_are_named(tmp_path):
    lines = TINY_TEXT.splitlines()
    without = "\n".join(l for l in lines if not l.startswith("queue_depth:"))
    msg = _one_line_error(without, tmp_path)
    assert "missing field 'queue_depth'" in msg
    without2 = "\n".join(l for l in lines if not l.startswith(("queue_depth:", "acc_bits:")))
    assert "missing fields 'acc_bits', 'queue_depth'" in _one_line_error(without2)
    # The Python API keeps the dataclass defaults: only files are strict.
    assert NPUConfig().dim == 16 and NPUConfig.from_dict({"queue_depth": 4}).queue_depth == 4
    assert NPUConfig.from_dict({}) == NPUConfig()


def test_duplicate_key_names_key_and_line(tmp_path):
    msg = _one_line_error(TINY_TEXT + "array_rows: 8\n", tmp_path)
    n = len(TINY_TEXT.splitlines()) + 1
    assert f"duplicate field 'array_rows' at line {n} (first at line 2)" in msg and str(tmp_path) in msg
    # also when the second value equals the first, and in a nested mapping
    assert "duplicate field 'array_rows'" in _one_line_error(TINY_TEXT + "array_rows: 4\n")
    assert "duplicate field 'a'" in _one_line_error(TINY_TEXT.replace("token_bits: 4", "token_bits: {a: 1, a: 2}"))


def test_non_utf8_file_names_the_file(tmp_path):
    msg = _one_line_error(TINY_TEXT.encode() + b"# \xff\xfe\n", tmp_path, name="latin")
    assert str(tmp_path / "latin.yaml") in msg and "not UTF-8" in msg


BAD_VALUES = [("[4]", "[4]"), ("{a: 1}", "{'a': 1}"), ("4.0", "4.0"), ("4e0", "'4e0'"), ("yes", "True"),
              ("true", "True"), ("", "None"), ("~", "None"), ("four", "'four'"), ("'4'", "'4'"), (".inf", "inf"),
              ("2020-01-01", "datetime.date(2020, 1, 1)"), ("!!binary AAAA", "b'\\x00\\x00\\x00'")]


@pytest.mark.parametrize("value,shown", BAD_VALUES, ids=[v for v, _ in BAD_VALUES])
def test_bad_value_types_name_the_field(tmp_path, value, shown):
    text = TINY_TEXT.replace("queue_depth: 4", f"queue_depth: {value}")
    assert text != TINY_TEXT
    msg = _one_line_error(text, tmp_path)
    assert f"field 'queue_depth' = {shown}: must be an integer" in msg


@pytest.mark.parametrize("text,words", [
    ("- 1\n- 2\n", "top level must be a mapping of field names to values, not list"),
    ("4\n", "not int"), ("'text'\n", "not str"), ("a: 1\n---\nb: 2\n", "not valid YAML"),
    ("array_rows: [4\n", "not valid YAML"), ("a: " + "[" * 3000 + "]" * 3000, "not valid YAML"),
    ("queue_depth: " + "9" * 5000, "not valid YAML"), ("a: !!python/object:os.system x", "not valid YAML"),
    ("a: *nope", "not valid YAML"), ("a: \x00", "not valid YAML"),
])
def test_malformed_texts_are_one_line_errors(text, words):
    assert words in _one_line_error(text)


def test_unsafe_names_are_rejected():
    for bad in ("../../etc", "a/b", ".hidden", "-x", "a b", "x" * 101, "a\nb"):
        msg = _one_line_error(f"name: {bad!r}\n" + TINY_TEXT.split("\n", 1)[1])
        assert "field 'name'" in msg and "build folder" in msg
    assert validate_config_text("name: my-npu_2.v1\n" + TINY_TEXT).name == "my-npu_2.v1"


def test_huge_values_give_short_messages():
    for field, value in (("queue_depth", 10 ** 5000), ("axi_id_bits", 10 ** 30), ("dma_max_outstanding", 1 << 400)):
        with pytest.raises(ConfigError) as e:
            NPUConfig.from_dict({**BASE, field: value})
        assert f"'{field}'" in str(e.value) and len(str(e.value)) < 300


@pytest.mark.parametrize("field,rows,banks,limit", [
    ("acc_banks", 512, 512, 256), ("acc_banks", 8, 8, 4), ("spad_banks", 1024, 1024, 512), ("spad_banks", 16, 16, 8),
])
def test_banks_need_two_rows(field, rows, banks, limit):
    """A 1-row bank has a zero-width address ([-1:0] in the Verilog: Verilator ASCRANGE)."""
    mem = field.split("_")[0]
    bad = {**load_config("tiny").to_dict(), f"{mem}_rows": rows, field: banks}
    with pytest.raises(ConfigError) as e:
        NPUConfig.from_dict(bad)
    msg = str(e.value)
    assert f"field '{field}' = {banks}: must be at most {mem}_rows / 2 = {limit}" in msg and "2 rows" in msg
    assert NPUConfig.from_dict({**bad, field: banks // 2}).__getattribute__(field) == banks // 2


def test_array_rows_2_can_never_work():
    """dim 2: a 16-bit scratchpad row cannot hold a DMA beat (dma_data_bits >= 32), whatever the rest."""
    for dma in (16, 32):
        d = {**load_config("tiny").to_dict(), "array_rows": 2, "array_cols": 2, "vector_lanes": 2,
             "dma_data_bits": dma}
        with pytest.raises(ConfigError, match="'array_rows' = 2: must be between 4 and 64"):
            NPUConfig.from_dict(d)


# ------------------------------------------------------------------ property: only ConfigError, one line
from hypothesis import HealthCheck, given, settings, strategies as st   # noqa: E402

_SHIPPED = [load_config(n).to_dict() for n in ("tiny", "default", "large")]
_ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=2 ** 64, max_value=2 ** 12000)
    | st.floats() | st.text(max_size=12) | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)
_NEAR_LIMITS = st.sampled_from([-1, 0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 33, 63, 64, 65, 128, 255, 256, 257,
                                512, 1024, 4095, 4096, 4097, 65535, 65536, 65537]) | st.integers(-10, 100_000)
_ANY_KEY = st.text(max_size=12) | st.integers() | st.none() | st.booleans() | st.floats() | st.tuples(st.integers())


@st.composite
def config_dicts(draw):
    d = dict(draw(st.sampled_from(_SHIPPED)))
    if draw(st.booleans()):
        d.pop("name")
    for f in draw(st.lists(st.sampled_from(sorted(_SHIPPED[0])), max_size=4)):
        how = draw(st.integers(0, 3))
        if how == 0:
            d.pop(f, None)
        else:
            d[f] = draw(_NEAR_LIMITS if how < 3 else _ANY_VALUE)
    if draw(st.integers(0, 4)) == 0:
        d[draw(_ANY_KEY)] = draw(_ANY_VALUE)
    return d


def _only_config_error(fn, *a, **kw):
    try:
        cfg = fn(*a, **kw)
    except ConfigError as e:
        assert "\n" not in str(e) and len(str(e)) < 1000, str(e)
        return None
    assert isinstance(cfg, NPUConfig)
    assert NPUConfig.from_dict(cfg.to_dict(), require_all=True) == cfg      # what loads, round-trips
    return cfg


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(config_dicts(), _ANY_VALUE, st.dictionaries(_ANY_KEY, _ANY_VALUE, max_size=4)),
       st.booleans())
def test_from_dict_raises_only_config_error(d, require_all):
    _only_config_error(NPUConfig.from_dict, d, name="hyp", require_all=require_all)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(config_dicts().map(lambda d: yaml.safe_dump(d, allow_unicode=True)), st.text(max_size=200),
                 config_dicts().map(lambda d: "\n".join(f"{k}: {v}" for k, v in d.items()))))
def test_validate_config_text_raises_only_config_error(text):
    _only_config_error(validate_config_text, text)


# ------------------------------------------------------------------ the loader's limits are the hardware's
#: Every limit at its edge, on the tiny array: the loader accepts these and the generated NPU lints clean.
EDGES = {
    "low": dict(spad_rows=16, spad_banks=8, acc_rows=8, acc_banks=4,     # 4*dim / 2*dim rows, 2 rows per bank
                vector_state_rows=4, dma_burst_len=8, axi_id_bits=2, dma_max_outstanding=2, axi_addr_bits=16,
                queue_depth=2, token_bits=2),
    "high": dict(spad_banks=1, acc_banks=1, vector_state_rows=4096, dma_burst_len=256, axi_id_bits=8,
                 queue_depth=256, token_bits=8),
}
# Not here because they take minutes (measured once, all clean): spad_rows = acc_rows = 65536 (generating
# 65536-row memories alone takes 100 s), dma_max_outstanding = 254 with 8 ID bits (its maximum is linted
# below with 4 ID bits, 14 slots) and array_rows = 64.


@pytest.mark.rtl
@pytest.mark.parametrize("edge", sorted(EDGES))
def test_edge_configs_lint(tmp_path, edge):
    from flashnpu.cosim.verilog import generate, lint
    cfg = validate_config_text(yaml.safe_dump({**load_config("tiny").to_dict(), **EDGES[edge]}), f"edge_{edge}")
    res = generate(cfg, tmp_path)
    r = lint(res.verilog, res.top)
    assert r.ok, r.output


@pytest.mark.rtl
@pytest.mark.parametrize("fields", [
    # (these three used to fail Verilator: zero-width counters, a constant ID comparison)
    pytest.param(dict(dma_burst_len=8, dma_max_outstanding=1), id="outstanding=1"),
    pytest.param(dict(dma_max_outstanding=15), id="outstanding=2**id_bits-1"),
    pytest.param(dict(dma_data_bits=256, array_rows=32, array_cols=32, vector_lanes=32, dma_burst_len=1),
                 id="burst_len=1"),
    pytest.param(dict(dma_max_outstanding=14), id="outstanding=2**id_bits-2"),
    pytest.param(dict(dma_burst_len=8, dma_max_outstanding=2), id="burst_len=fetch"),
])
def test_dma_limits_lint(tmp_path, fields):
    """dma_burst_len and dma_max_outstanding at the ends of the range the loader accepts."""
    from flashnpu.cosim.verilog import generate, lint
    from flashnpu.hw.dma_engine import DmaEngine
    cfg = NPUConfig.from_dict({**load_config("tiny").to_dict(), **fields})
    res = generate(DmaEngine(cfg), tmp_path)
    r = lint(res.verilog, res.top)
    assert r.ok, r.output


@pytest.mark.parametrize("bad", [None, 4.5, 123, "", ["tiny"]])
def test_config_argument_of_the_wrong_type_is_named(bad):
    """Found by the fuzz campaign: run(config=4.5) was a bare TypeError from pathlib."""
    with pytest.raises(ConfigError, match=r"^argument config = .*: must be a config name"):
        load_config(bad)
