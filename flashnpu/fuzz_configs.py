"""Fuzz category ``configs``: generated and mutated hardware configs through the loader.

A case (from its seed alone, :func:`make_config_case`) starts from one of
``spec/configs/*.yaml`` and is one of

* a dict with one to three fields mutated (boundary values, off by one, zero,
  negative, huge, wrong types, unknown keys, non-string keys, a field
  missing, a bad ``name``), loaded as YAML text when YAML can carry it
  (``validate_config_text``) and through ``NPUConfig.from_dict`` otherwise;
* a mutated YAML text (duplicate keys, deleted or swapped lines, garbage,
  truncation, empty, tabs, anchors, deep nesting, huge numbers, tags);
* mutated file bytes (not UTF-8, NUL bytes, a BOM), through ``load_config``
  on a file.

A rejection must be a ``ConfigError`` whose message is one line (at most
:data:`MAX_MESSAGE` characters) and names a field (``'<field>'`` of the
schema, or the offending key); only a text that is not a YAML mapping at all
may instead say so (not valid YAML, not UTF-8, empty, not a mapping). Any
other exception is a crash; a message that breaks these rules is a crash of
kind ``bad-message``. An accepted config is run: a small attention compiled
and run twice on the golden model (the two runs must agree, and every output
element must be within 2 LSB of the float64 reference, the documented bound
of docs/numerics.md) and, for arrays up to 8x8 with small SRAMs, the
Verilog generated (``cosim.verilog.generate``, cached by config hash, within a
share of the category's time; the rest is counted as validated, not
generated).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from flashnpu.spec.config import ConfigError, HARDWARE_FIELDS, NPUConfig, config_names, config_path
from flashnpu.fuzz import Budget, Stats, case_seed, exc_text, one_line

__all__ = ["make_config_case", "check_rejection", "run_config_case", "run_category", "replay_case",
           "MAX_MESSAGE", "special_values"]

#: Longest acceptable rejection message.
MAX_MESSAGE = 1000
#: Share of the category's time that Verilog generation may take.
GENERATE_SHARE = 0.2
#: Largest array side and SRAM (bytes) that is generated.
GENERATE_MAX_DIM = 8
GENERATE_MAX_SRAM = 64 * 1024
#: Words that make a text-level rejection acceptable without a field name.
TEXT_LEVEL = ("not valid YAML", "not UTF-8", "states no fields", "top level must be a mapping", "field name",
              "empty")

_FIELDS = tuple(f.name for f in dataclasses.fields(NPUConfig))
#: "field 'x'", "fields 'x', 'y'", "field name 1": the message points at a key of the text.
_FIELD_RE = re.compile(r"\bfields? (name )?['\"]|\bfield name ")


def special_values(rng: random.Random, cur) -> list:
    """Values to try in a field whose current value is ``cur``."""
    base = cur if isinstance(cur, int) and not isinstance(cur, bool) else 4
    ints = [0, 1, -1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 255, 256, 257, 1023,
            1024, 4095, 4096, 4097, 65535, 65536, 65537, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 63, -2 ** 63,
            10 ** 30, base - 1, base + 1, base * 2, base // 2, -base, rng.randint(-10, 5000)]
    other = [float(base), base + 0.5, math.nan, math.inf, -math.inf, str(base), "abc", "", None, True, False,
             [base], {"a": base}, "0x10", "1e3"]
    return ints * 2 + other


_NAMES = ["", "../evil", "a/b", ".hidden", "-x", "+x", "ok_name", "x" * 101, "x" * 100, "ünï", "a b", "tiny",
          123, None, True, ["a"], "a\nb", "a:b", "🙂"]


def _base(rng: random.Random) -> tuple[str, dict, str]:
    name = rng.choice(config_names())
    text = config_path(name).read_text()
    return name, yaml.safe_load(text), text


@dataclasses.dataclass
class ConfigCase:
    seed: int
    route: str              # "text", "dict", "bytes"
    base: str
    muts: list
    keys: list              # the mutated keys (a rejection names one of them, or a schema field)
    payload: object         # the text, the dict or the bytes
    field_level: bool = True   # the mutation is about fields (a YAML-level message is not enough)

    def describe(self) -> str:
        shown = self.payload if isinstance(self.payload, dict) else one_line(repr(self.payload), 160)
        return f"config case ({self.route}) from {self.base}: {'; '.join(self.muts)}; payload {one_line(repr(shown), 300)}"


def _yaml_ok(d) -> bool:
    def ok(v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return True
        if isinstance(v, list):
            return all(ok(x) for x in v)
        if isinstance(v, dict):
            return all(ok(k) and ok(x) for k, x in v.items())
        return False
    return ok(d)


def _mutate_dict(rng: random.Random, d: dict, muts: list, keys: list) -> dict:
    d = dict(d)
    r = rng.random()
    fields = [k for k in d if isinstance(k, str)] or list(HARDWARE_FIELDS)
    if r < 0.62:
        k = rng.choice(fields)
        v = rng.choice(special_values(rng, d.get(k)))
        d[k] = v
        muts.append(f"{k} = {one_line(repr(v), 60)}")
        keys.append(k)
    elif r < 0.70:
        k = rng.choice(fields)
        d.pop(k, None)
        muts.append(f"{k} removed")
        keys.append(k)
    elif r < 0.78:
        k = rng.choice(("foo", "array_row", "Array_rows", "spad_rows ", "", "name2", "acc_bits2", "dma_bits"))
        d[k] = rng.choice((1, 4, "x", None))
        muts.append(f"unknown key {k!r}")
        keys.append(k)
    elif r < 0.84:
        k = rng.choice((1, 0, -3, None, True, 2.5, (1, 2), b"array_rows"))
        d[k] = 4
        muts.append(f"non-string key {k!r}")
        keys.append(k)
    elif r < 0.92:
        v = rng.choice(_NAMES)
        d["name"] = v
        muts.append(f"name = {one_line(repr(v), 60)}")
        keys.append("name")
    elif r < 0.96:
        import numpy as _np
        k = rng.choice(fields)
        v = rng.choice((_np.int64(4), _np.int32(16), _np.float64(4.0), _np.uint8(8), (4,), {4}, b"4", object()))
        d[k] = v
        muts.append(f"{k} = {type(v).__name__} {one_line(repr(v), 40)}")
        keys.append(k)
    else:
        k = rng.choice(fields)
        other = rng.choice([f for f in HARDWARE_FIELDS if f != k])
        if other in d and k in d:
            d[k], d[other] = d[other], d[k]
            muts.append(f"{k} and {other} swapped")
            keys += [k, other]
    return d


def _mutate_text(rng: random.Random, text: str, muts: list) -> str:
    lines = text.splitlines() or [""]
    body = [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")] or [0]
    r = rng.random()
    if r < 0.16:
        i = rng.choice(body)
        lines.insert(rng.randrange(len(lines) + 1), lines[i])
        muts.append(f"line {i + 1} duplicated")
    elif r < 0.26:
        i = rng.choice(body)
        del lines[i]
        muts.append(f"line {i + 1} deleted")
    elif r < 0.34 and len(body) > 1:
        i, j = rng.sample(body, 2)
        lines[i], lines[j] = lines[j], lines[i]
        muts.append(f"lines {i + 1} and {j + 1} swapped")
    elif r < 0.46:
        t = "\n".join(lines)
        pos = rng.randrange(len(t) + 1)
        junk = "".join(rng.choice(":{}[]&*!|>'\"%@`#,-?\t \n\\0aZ9") for _ in range(rng.randint(1, 6)))
        muts.append(f"{junk!r} inserted at {pos}")
        return t[:pos] + junk + t[pos:]
    elif r < 0.54:
        t = "\n".join(lines)
        pos = rng.randrange(len(t) + 1)
        muts.append(f"truncated at {pos}")
        return t[:pos]
    elif r < 0.62:
        i = rng.choice(body)
        key = lines[i].split(":", 1)[0]
        val = rng.choice(("", "~", "[1, 2]", "{a: 1}", "!!python/object:os.system x", "0x10", "0o17", "1_000",
                          "4.0", "1e3", ".inf", ".nan", "yes", "'4'", "*a", "&a 4", "9" * rng.choice((30, 5000)),
                          "-" + "9" * 25, "[" * 200 + "]" * 200, "!!binary aGVsbG8=", "2001-12-14"))
        lines[i] = f"{key}: {val}"
        muts.append(f"{key} = {val[:40]!r} (text)")
    elif r < 0.68:
        t = rng.choice(("", "\n\n", "# only a comment\n", "---\n", "---\n...\n", "[]", "4", "null", "~",
                        "'text'", "- a\n- b\n"))
        muts.append(f"whole text {t!r}")
        return t
    elif r < 0.74:
        i = rng.choice(body)
        lines[i] = "\t" + lines[i]
        muts.append(f"tab before line {i + 1}")
    elif r < 0.80:
        muts.append("second document")
        return "\n".join(lines) + "\n---\n" + "\n".join(lines)
    elif r < 0.86:
        muts.append("flow mapping")
        try:
            d = yaml.safe_load(text)
        except (yaml.YAMLError, ValueError, RecursionError):   # e.g. a 5000-digit integer
            d = None
        if not isinstance(d, dict):
            return text + "\n{}"
        return "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"
    elif r < 0.92:
        muts.append("anchor and merge key")
        return "base: &b\n  array_rows: 4\n<<: *b\n" + "\n".join(lines)
    else:
        i = rng.choice(body)
        key = lines[i].split(":", 1)[0]
        lines[i] = f"{key}:\n  nested: {lines[i].split(':', 1)[-1].strip()}"
        muts.append(f"{key} nested")
    return "\n".join(lines) + "\n"


def _mutate_bytes(rng: random.Random, text: str, muts: list) -> bytes:
    raw = bytearray(text.encode())
    r = rng.random()
    if r < 0.3:
        pos = rng.randrange(len(raw) + 1)
        bad = bytes(rng.choice((b"\xff", b"\xfe", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80")))
        raw[pos:pos] = bad
        muts.append(f"bytes {bad!r} at {pos}")
    elif r < 0.5:
        pos = rng.randrange(len(raw) + 1)
        raw[pos:pos] = b"\x00"
        muts.append(f"NUL at {pos}")
    elif r < 0.65:
        raw = bytearray(b"\xef\xbb\xbf") + raw
        muts.append("UTF-8 BOM")
    elif r < 0.8:
        raw = bytearray(text.encode("utf-16"))
        muts.append("UTF-16")
    elif r < 0.9:
        raw = bytearray(rng.randbytes(rng.randint(0, 200)))
        muts.append(f"{len(raw)} random bytes")
    else:
        raw = bytearray(text.replace("4", "\u0664").encode())
        muts.append("Arabic-Indic digits")
    return bytes(raw)


def make_config_case(seed: int) -> ConfigCase:
    rng = random.Random(f"config:{seed}")
    name, d, text = _base(rng)
    muts, keys = [], []
    r = rng.random()
    if r < 0.6:
        if rng.random() < 0.03:
            v = rng.choice(([d], "array_rows: 4", 4, None, [], [("a", 1)]))
            return ConfigCase(seed, "dict", name, [f"top level {type(v).__name__}"], [], v, field_level=False)
        k = rng.choices((1, 2, 3), weights=(70, 22, 8))[0]
        for _ in range(k):
            d = _mutate_dict(rng, d, muts, keys)
        if _yaml_ok(d) and rng.random() < 0.85:
            try:
                t = yaml.safe_dump(d, sort_keys=rng.random() < 0.5, allow_unicode=True)
                return ConfigCase(seed, "text", name, muts, keys, t)
            except (yaml.YAMLError, ValueError, OverflowError):
                pass
        return ConfigCase(seed, "dict", name, muts, keys, d)
    if r < 0.9:
        k = rng.choices((1, 2), weights=(80, 20))[0]
        t = text
        for _ in range(k):
            t = _mutate_text(rng, t, muts)
        return ConfigCase(seed, "text", name, muts, [], t, field_level=False)
    return ConfigCase(seed, "bytes", name, muts, [], _mutate_bytes(rng, text, muts), field_level=False)


def check_rejection(e: Exception, case: ConfigCase) -> tuple[str, str] | None:
    """None if ``e`` is an acceptable rejection of ``case``, else (kind, message)."""
    if not isinstance(e, ConfigError):
        return "crash", exc_text(e)
    msg = str(e)
    if "\n" in msg or "\r" in msg:
        return "bad-message", f"multi-line ConfigError: {msg[:300]!r}"
    if len(msg) > MAX_MESSAGE:
        return "bad-message", f"ConfigError of {len(msg)} characters: {msg[:200]!r}..."
    named = any(f"'{f}'" in msg for f in _FIELDS) or _FIELD_RE.search(msg) is not None
    for k in case.keys:
        if isinstance(k, str):
            named = named or f"'{k}'" in msg or (bool(k) and k in msg)
        else:
            named = named or repr(k) in msg or str(k) in msg
    if named:
        return None
    if not case.field_level and any(w in msg for w in TEXT_LEVEL):
        return None
    return "bad-message", f"ConfigError names no field ({'keys ' + repr(case.keys) if case.keys else 'text'}): {msg[:300]!r}"


def _validate(case: ConfigCase, tmp: Path) -> NPUConfig:
    from flashnpu.spec import config as config_mod
    if case.route == "text":
        if hasattr(config_mod, "validate_config_text"):
            return config_mod.validate_config_text(case.payload, name="fuzz")
        p = tmp / "fuzz.yaml"
        p.write_text(case.payload)
        return config_mod.load_config(p)
    if case.route == "bytes":
        p = tmp / "fuzz.yaml"
        p.write_bytes(case.payload)
        return config_mod.load_config(p)
    return NPUConfig.from_dict(case.payload, name="fuzz", require_all=True)


def config_hash(cfg: NPUConfig) -> str:
    d = {k: v for k, v in cfg.to_dict().items() if k != "name"}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


class _State:
    def __init__(self):
        self.golden = {}          # config hash -> None (passed) or (kind, message)
        self.generated = {}       # config hash -> None or (kind, message)
        self.gen_s = 0.0


def _golden_check(cfg: NPUConfig) -> tuple[str, str] | None:
    """A small attention on the golden model: two runs equal, within 2 LSB of float64. None if fine."""
    from flashnpu.sw.compiler import CompileError
    from flashnpu.driver import run
    from flashnpu.sw.reference import make_attention_tensors, reference_attention
    from flashnpu.sw.workload import AttentionWorkload
    d = cfg.dim
    wl = AttentionWorkload(1, 2, 1, d + 3, 2 * d + 1, min(d, 16), True, q_scale=4 / 127, k_scale=4 / 127,
                           v_scale=4 / 127)
    t = make_attention_tensors(wl, np.random.default_rng(d), sigma=1.0)
    ref = reference_attention(wl, t)
    wl = dataclasses.replace(wl, out_scale=float(np.abs(ref).max()) / 127 or 1.0)
    try:
        a = run(wl, t, config=cfg).outputs["O"]
    except CompileError as e:
        msg = str(e)
        if "\n" in msg:
            return "bad-message", f"multi-line CompileError on a valid config: {msg[:200]!r}"
        return "compile-rejected", msg
    b = run(wl, t, config=cfg).outputs["O"]
    if not np.array_equal(a, b):
        return "nondeterministic", "two golden runs of the same attention differ"
    err = np.abs(a * wl.out_scale - ref) / wl.out_scale
    if err.max() > 2.0 + 1e-9:
        return "accuracy", f"max error {err.max():.2f} LSB > 2 LSB (docs/numerics.md) for {wl}"
    return None


def run_config_case(case: ConfigCase, st: Stats, tmp: Path, state: _State, *, may_generate: bool):
    try:
        cfg = _validate(case, tmp)
    except Exception as e:
        bad = check_rejection(e, case)
        if bad is None:
            st.reported()
            st.info[f"rejected ({case.route})"] += 1
        else:
            kind, msg = bad
            st.fail("crashes", case.seed, kind, f"{msg}; {case.describe()}")
        return None
    st.info[f"valid ({case.route})"] += 1
    h = config_hash(cfg)
    if h not in state.golden:
        try:
            state.golden[h] = _golden_check(cfg)
        except Exception as e:
            state.golden[h] = ("golden-crash", exc_text(e))
    g = state.golden[h]
    if g is not None:
        kind, msg = g
        if kind == "compile-rejected":
            st.info["valid, the compiler rejects the small attention (one line)"] += 1
        elif kind in ("nondeterministic", "accuracy"):
            st.fail("disagreements", case.seed, kind, f"{msg}; {case.describe()}")
            return cfg
        else:
            st.fail("crashes", case.seed, kind, f"{msg}; {case.describe()}")
            return cfg
    small = cfg.dim <= GENERATE_MAX_DIM and cfg.spad_bytes + cfg.acc_bytes <= GENERATE_MAX_SRAM
    if not small:
        st.info["validated, not generated (array > 8x8 or SRAM > 64 KiB)"] += 1
    elif h in state.generated:
        st.info["generated (cached)"] += 1
        if state.generated[h] is not None:
            st.fail("crashes", case.seed, "generate", f"{state.generated[h]}; {case.describe()}")
            return cfg
    elif not may_generate:
        st.info["validated, not generated (generation time share used)"] += 1
    else:
        from flashnpu.cosim.verilog import generate
        t0 = time.monotonic()
        try:
            res = generate(cfg, tmp / f"gen-{h}")
            text = res.verilog.read_text()
            problem = None if "module npu" in text else "no 'module npu' in the generated Verilog"
        except Exception as e:
            problem = exc_text(e)
        state.gen_s += time.monotonic() - t0
        state.generated[h] = problem
        st.info["generated"] += 1
        if problem is not None:
            st.fail("crashes", case.seed, "generate", f"{problem}; {case.describe()}")
            return cfg
    st.ok()
    return cfg


def run_category(name: str, st: Stats, budget: Budget, *, seed: int, cfg, out, progress=print):
    state = _State()
    with tempfile.TemporaryDirectory(prefix="fuzz-configs-", dir=out) as tmp:
        tmp = Path(tmp)
        i = 0
        while budget.left() > 0:
            s = case_seed(seed, i)
            i += 1
            try:
                case = make_config_case(s)
            except Exception as e:
                st.fail("crashes", s, "generator", f"the config case generator raised {exc_text(e)}")
                continue
            run_config_case(case, st, tmp, state, may_generate=state.gen_s < GENERATE_SHARE * budget.seconds)
    st.extra["generate_s"] = round(state.gen_s, 1)
    st.extra["distinct_valid_configs"] = len(state.golden)


def replay_case(name: str, st: Stats, seed: int, *, cfg, out, progress=print):
    case = make_config_case(seed)
    progress(case.describe())
    with tempfile.TemporaryDirectory(prefix="fuzz-configs-", dir=out) as tmp:
        c = run_config_case(case, st, Path(tmp), _State(), may_generate=True)
    progress(f"valid: {c}" if c is not None else "rejected")
    if c is None:
        try:
            _validate(case, Path(out))
        except Exception as e:
            progress(f"message: {type(e).__name__}: {e}")
