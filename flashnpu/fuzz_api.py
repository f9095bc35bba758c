"""Fuzz category ``api``: the Python API with bad arguments (``sw/workload.py``, ``flashnpu/driver.py``).

Each case (from its seed alone, :func:`make_api_case`) is one call:

* ``AttentionWorkload(...)`` / ``GemmWorkload(...)`` with one field set to a
  boundary, zero, negative, huge, non-finite, wrong-typed or numpy-scalar
  value, or an unknown keyword;
* ``driver.run(workload, tensors, backend, config)`` on a small valid
  workload with one argument broken: tensors of the wrong shape or dtype,
  out-of-range integers, missing or extra names, ``tensors=None``, a non-dict,
  numpy scalars, nested lists; a bad backend, config or workload;
* ``driver.run_program(program, image)`` with a bad image;
* ``reference.make_tensors(workload, seed)`` with a bad seed.

A call must either succeed (and then its result is checked: GEMM exact
against ``reference.reference_gemm``, attention within 2 LSB of the float64
reference) or raise a ``ValueError``/``TypeError`` (or subclass) whose
message is one line and names the argument or field. Anything else is a
crash (a multi-line or unnamed message: kind ``bad-message``).
"""

from __future__ import annotations

import math
import random
import re

import numpy as np

from flashnpu.fuzz import Budget, Stats, case_seed, exc_text, one_line

__all__ = ["make_api_case", "run_api_case", "run_category", "replay_case"]

MAX_MESSAGE = 1000

_ATT = dict(batch=1, heads=2, kv_heads=1, seq_q=5, seq_k=7, head_dim=4, causal=True)
_GEMM = dict(M=5, N=6, K=7)


def _values(rng: random.Random, cur):
    v = cur if isinstance(cur, int) and not isinstance(cur, bool) else 1
    return [0, -1, -v, v + 1, 2 ** 16, 2 ** 16 + 1, 2 ** 19, 2 ** 31, 2 ** 63, 10 ** 30, 1.0 * v, v + 0.5,
            math.nan, math.inf, -math.inf, "4", None, True, False, np.int64(v), np.int32(v), np.uint8(v),
            np.float32(v), np.float64(0.25), np.bool_(True), [v], (v,), 1j, np.array(v), np.array([v]),
            rng.randint(-3, 40)]


class ApiCase:
    def __init__(self, seed, kind, what, call, names, inputs=None):
        self.seed, self.kind, self.what, self.call, self.names = seed, kind, what, call, names
        self.inputs = inputs        # the tensors of a run() case, for checking a result

    def describe(self) -> str:
        return f"api case {self.kind}: {self.what}"


def _small_workload(rng):
    from flashnpu.sw.workload import AttentionWorkload, GemmWorkload
    if rng.random() < 0.5:
        return AttentionWorkload(**_ATT)
    return GemmWorkload(**_GEMM)


def _tensor_mutation(rng, wl, t: dict):
    """A broken ``tensors`` argument and the names a message may use for it."""
    names = list(t)
    n = rng.choice(names)
    r = rng.random()
    t = dict(t)
    a = t[n]
    if r < 0.08:
        return None, "tensors=None", ["tensors"]
    if r < 0.13:
        v = rng.choice(([a], "Q", 4, (a,), np.zeros(3), {1: a}))
        return v, f"tensors is a {type(v).__name__}", ["tensors"]
    if r < 0.22:
        del t[n]
        return t, f"tensor {n} missing", ["tensors", n]
    if r < 0.30:
        k = rng.choice(("O", "C", "q", "X", 1, None, ""))
        t[k] = a
        return t, f"extra tensor {k!r}", ["tensors", str(k)]
    if r < 0.45:
        shp = list(a.shape)
        choice = rng.random()
        if choice < 0.3:
            b = a.T.copy()
        elif choice < 0.6:
            b = a[..., :-1] if shp[-1] > 1 else np.concatenate([a, a], axis=-1)
        elif choice < 0.8:
            b = a[None]
        else:
            b = a.reshape(-1)
        t[n] = b
        return t, f"tensor {n} of shape {b.shape}", ["tensors", n]
    if r < 0.62:
        dt = rng.choice((np.float32, np.float64, np.complex64, np.bool_, object, "U2", np.float16))
        t[n] = a.astype(dt)
        return t, f"tensor {n} as {np.dtype(dt)}", ["tensors", n]
    if r < 0.75:
        dt = rng.choice((np.int16, np.int32, np.int64, np.uint16))
        b = a.astype(dt)
        if b.size:
            vals = (128, 255, 1000, 32767) if dt == np.uint16 else (128, -129, 255, 1000, -32768, 32767)
            b.flat[rng.randrange(b.size)] = rng.choice(vals)
        t[n] = b
        return t, f"tensor {n} as {np.dtype(dt).name} with a value out of the int8 range", ["tensors", n]
    if r < 0.82:
        t[n] = a.astype(np.int64)                      # in range: valid
        return t, f"tensor {n} as int64 in range (valid)", ["tensors", n]
    if r < 0.88:
        t[n] = a.tolist()                              # nested lists: valid
        return t, f"tensor {n} as nested lists (valid)", ["tensors", n]
    if r < 0.93:
        lst = a.tolist()
        if isinstance(lst, list) and lst and isinstance(lst[0], list) and lst[0]:
            lst[0] = lst[0][:-1]
        t[n] = lst
        return t, f"tensor {n} as ragged lists", ["tensors", n]
    v = rng.choice((np.int8(3), 3, None, "abc", np.float64(1.0)))
    t[n] = v
    return t, f"tensor {n} = {v!r}", ["tensors", n]


def make_api_case(seed: int) -> ApiCase:
    from flashnpu import driver
    from flashnpu.sw import reference
    from flashnpu.sw.workload import AttentionWorkload, GemmWorkload
    rng = random.Random(f"api:{seed}")
    r = rng.random()
    if r < 0.35:
        att = rng.random() < 0.6
        kw = dict(_ATT if att else _GEMM)
        if att:
            kw.update(q_scale=1 / 32, out_scale=1 / 32)
        cls = AttentionWorkload if att else GemmWorkload
        if rng.random() < 0.06:
            k = rng.choice(("foo", "seq", "dim"))
            kw[k] = 4
        else:
            k = rng.choice(list(kw) + (["softmax_scale", "v_scale", "k_scale"] if att else []))
            kw[k] = rng.choice(_values(rng, kw.get(k)))
        what = f"{cls.__name__}({k}={one_line(repr(kw[k]), 50)})"
        return ApiCase(seed, "workload", what, lambda: cls(**kw), [k])
    wl = _small_workload(rng)
    t = reference.make_tensors(wl, rng.randrange(1000))
    if r < 0.75:
        tensors, what, names = _tensor_mutation(rng, wl, t)
        return ApiCase(seed, "run", f"run({wl}, {what})",
                       lambda: driver.run(wl, tensors, config="tiny"), names, inputs=tensors)
    if r < 0.85:
        which = rng.choice(("backend", "config", "workload"))
        if which == "backend":
            v = rng.choice(("gpu", None, 1, "GOLDEN", "", ["golden"]))
            return ApiCase(seed, "run", f"run(backend={v!r})", lambda: driver.run(wl, t, backend=v, config="tiny"),
                           ["backend"])
        if which == "config":
            v = rng.choice(("nope", 123, "spec/configs/tiny", "/nonexistent/x.yaml", "", "tiny.yml", None, 4.5))
            return ApiCase(seed, "run", f"run(config={v!r})", lambda: driver.run(wl, t, config=v),
                           ["config", str(v)])
        v = rng.choice((None, "attention", {"M": 4}, 5, _ATT))
        return ApiCase(seed, "run", f"run(workload={one_line(repr(v), 40)})",
                       lambda: driver.run(v, t, config="tiny"), ["workload"])
    if r < 0.93:
        from flashnpu.sw.compiler import compile_workload
        prog = compile_workload(wl, "tiny")
        img = prog.pack(t)
        v = rng.choice((img.tobytes(), img.astype(np.int8), img[:-1], img.reshape(-1, 1)[:, :], img.tolist(),
                        None, img[: prog.dram_bytes // 2], np.concatenate([img, img]), img.astype(np.uint16)))
        what = f"run_program(image={type(v).__name__} {getattr(v, 'dtype', '')} {getattr(v, 'shape', '')})"
        return ApiCase(seed, "run_program", what, lambda: driver.run_program(prog, v), ["image"])
    v = rng.choice((-1, 1.5, np.int64(3), "x", True, None, 2 ** 70, np.uint32(7), 0))
    return ApiCase(seed, "make_tensors", f"make_tensors(seed={v!r})", lambda: reference.make_tensors(wl, v),
                   ["seed"])


def _named(msg: str, names) -> bool:
    for n in names:
        n = str(n)
        if n and (f"'{n}'" in msg or re.search(rf"\b{re.escape(n)}\b", msg)):
            return True
    return False


def run_api_case(case: ApiCase, st: Stats):
    try:
        res = case.call()
    except (ValueError, TypeError) as e:
        msg = str(e)
        if "\n" in msg or "\r" in msg:
            st.fail("crashes", case.seed, "bad-message", f"multi-line {type(e).__name__}: {msg[:300]!r}; "
                    f"{case.describe()}")
        elif len(msg) > MAX_MESSAGE:
            st.fail("crashes", case.seed, "bad-message", f"{type(e).__name__} of {len(msg)} characters; "
                    f"{case.describe()}")
        elif not _named(msg, case.names):
            st.fail("crashes", case.seed, "bad-message", f"{type(e).__name__} names none of {case.names}: "
                    f"{msg[:300]!r}; {case.describe()}")
        else:
            st.reported()
            st.info[f"{case.kind}: {type(e).__name__}"] += 1
        return
    except Exception as e:
        st.fail("crashes", case.seed, "exception", f"{exc_text(e)}; {case.describe()}")
        return
    try:
        bad = _verify(case, res)
    except Exception as e:
        bad = f"checking the result raised {exc_text(e)}"
    if bad:
        st.fail("disagreements", case.seed, "result", f"{bad}; {case.describe()}")
        return
    st.ok()
    st.info[f"{case.kind}: accepted"] += 1


def _verify(case: ApiCase, res) -> str | None:
    """A successful ``run``'s outputs against the references (GEMM exact, attention within 2 LSB)."""
    from flashnpu.sw import reference
    from flashnpu.driver import RunResult
    from flashnpu.sw.workload import AttentionWorkload, GemmWorkload
    if not isinstance(res, RunResult) or case.inputs is None:
        return None
    wl = res.program.workload
    t = {k: np.asarray(v) for k, v in case.inputs.items()}
    if isinstance(wl, GemmWorkload):
        ref = reference.reference_gemm(t["A"], t["B"])
        if res.outputs["C"].shape != ref.shape or not np.array_equal(res.outputs["C"], ref):
            return "C differs from reference_gemm"
        return None
    if isinstance(wl, AttentionWorkload):
        o = res.outputs["O"]
        if o.shape != wl.shapes()["O"] or o.dtype != np.int8:
            return f"O is {o.dtype} {o.shape}"
        ref = reference.reference_attention(wl, t)
        err = np.abs(o * wl.out_scale - ref) / wl.out_scale
        if err.max() > 2.0 + 1e-9:
            return f"O is {err.max():.2f} LSB from the float64 reference (bound 2)"
    return None


def run_category(name: str, st: Stats, budget: Budget, *, seed: int, cfg, out, progress=print):
    i = 0
    while budget.left() > 0:
        s = case_seed(seed, i)
        i += 1
        try:
            case = make_api_case(s)
        except Exception as e:
            st.fail("crashes", s, "generator", f"the api case generator raised {exc_text(e)}")
            continue
        run_api_case(case, st)


def replay_case(name: str, st: Stats, seed: int, *, cfg, out, progress=print):
    case = make_api_case(seed)
    progress(case.describe())
    run_api_case(case, st)
    try:
        case.call()
        progress("the call succeeded")
    except Exception as e:
        progress(f"the call raised {type(e).__name__}: {e}")
