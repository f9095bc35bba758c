"""API arguments: numpy scalars are accepted, every bad argument is a one-line error naming it."""

import numpy as np
import pytest

from flashnpu.sw import reference
from flashnpu.driver import run, run_program
from flashnpu.sw.compiler import compile_workload
from flashnpu.sw.workload import AttentionWorkload, GemmWorkload, WorkloadError, check_tensors

ATT = AttentionWorkload(1, 2, 1, 8, 12, 4)
GEMM = GemmWorkload(5, 6, 7)


def _msg(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and len(msg) < 400, msg
    return msg


# ------------------------------------------------------------------ numpy scalars
def test_numpy_scalars_are_accepted_and_normalised():
    wl = AttentionWorkload(np.int64(1), np.int32(2), np.uint8(1), np.int16(8), np.int64(12), np.int64(4),
                           np.bool_(True), q_scale=np.float32(0.25), k_scale=np.float16(0.5),
                           v_scale=np.float64(1 / 32), out_scale=1, softmax_scale=np.float32(0.5))
    assert wl == AttentionWorkload(1, 2, 1, 8, 12, 4, True, q_scale=0.25, k_scale=0.5, v_scale=1 / 32,
                                   out_scale=1.0, softmax_scale=0.5)
    for name in ("batch", "heads", "kv_heads", "seq_q", "seq_k", "head_dim"):
        assert type(getattr(wl, name)) is int, name
    for name in ("q_scale", "k_scale", "v_scale", "out_scale", "softmax_scale"):
        assert type(getattr(wl, name)) is float, name
    assert type(wl.causal) is bool
    g = GemmWorkload(np.int64(5), np.uint16(6), np.int8(7))
    assert g == GEMM and all(type(getattr(g, n)) is int for n in "MNK")


@pytest.mark.parametrize("kwargs,words", [
    (dict(batch=True), "field 'batch' = True: must be an integer"),
    (dict(seq_q=np.bool_(True)), "field 'seq_q' = True: must be an integer"),
    (dict(head_dim=4.0), "field 'head_dim' = 4.0: must be an integer"),
    (dict(head_dim=np.float32(4)), "field 'head_dim' = 4.0: must be an integer"),
    (dict(seq_k=np.int64(0)), "field 'seq_k' = 0: must be at least 1"),
    (dict(q_scale=np.float32("nan")), "field 'q_scale' = nan: must be a positive finite number"),
    (dict(k_scale=np.float64("inf")), "field 'k_scale' = inf: must be a positive finite number"),
    (dict(v_scale=-np.float32(1)), "field 'v_scale' = -1.0: must be a positive finite number"),
    (dict(out_scale=10 ** 400), "field 'out_scale' = 1000"),
    (dict(out_scale=True), "field 'out_scale' = True: must be a positive finite number"),
    (dict(softmax_scale=1j), "field 'softmax_scale' = 1j: must be a positive finite number"),
    (dict(softmax_scale="0.1"), "field 'softmax_scale' = '0.1': must be a positive finite number"),
    (dict(causal=1), "field 'causal' = 1: must be a bool"),
])
def test_bad_fields_are_named(kwargs, words):
    base = dict(batch=1, heads=1, kv_heads=1, seq_q=8, seq_k=8, head_dim=4)
    with pytest.raises(WorkloadError) as e:
        AttentionWorkload(**{**base, **kwargs})
    assert words in _msg(e)


# ------------------------------------------------------------------ tensors
def _good(wl):
    return reference.make_tensors(wl, 0)


@pytest.mark.parametrize("wl", [ATT, GEMM], ids=["attention", "gemm"])
def test_run_accepts_any_integer_dtype_and_lists(wl):
    t = _good(wl)
    ref = run(wl, t, config="tiny").outputs
    as16 = {k: v.astype(np.int16) for k, v in t.items()}
    as_list = {k: v.tolist() for k, v in t.items()}
    for other in (as16, as_list):
        out = run(wl, other, config="tiny").outputs
        assert all(np.array_equal(out[k], ref[k]) for k in ref)


@pytest.mark.parametrize("tensors,words", [
    (None, "argument 'tensors' = None: must be a dict mapping tensor names to arrays (attention needs Q, K, V"),
    ([1, 2], "argument 'tensors' = [1, 2]: must be a dict"),
    ({}, "argument 'tensors': missing tensors 'Q', 'K', 'V' (attention needs Q, K, V: INT8 arrays)"),
    ("drop K", "argument 'tensors': missing tensor 'K' (attention needs Q, K, V"),
    ("add O", "argument 'tensors': unexpected tensor 'O' (attention needs Q, K, V: INT8 arrays, nothing else)"),
    ("add 1", "argument 'tensors': unexpected tensor 1 ("),
    ("Q float", "tensor 'Q' has dtype float64: expected int8"),
    ("Q bool", "tensor 'Q' has dtype bool: expected int8"),
    ("Q object", "tensor 'Q' has dtype object: expected int8"),
    ("Q ragged", "tensor 'Q' is not an array"),
    ("Q shape", "tensor 'Q' has shape (1, 2, 8, 3): expected (1, 2, 8, 4) = [batch, heads, seq_q, head_dim]"),
    ("K shape", "tensor 'K' has shape (1, 2, 12, 4): expected (1, 1, 12, 4) = [batch, kv_heads, seq_k, head_dim]"),
    ("V range", "tensor 'V' (int16) has value 300 at (0, 0, 3, 1): expected int8 values in [-128, 127]"),
    ("V low", "tensor 'V' (int64) has value -129 at (0, 0, 0, 0): expected int8 values in [-128, 127]"),
])
def test_bad_tensors_are_one_line_errors(tensors, words):
    t = _good(ATT)
    if isinstance(tensors, str):
        what, how = tensors.split()
        t = dict(t)
        if what == "drop":
            del t[how]
        elif what == "add":
            t[int(how) if how.isdigit() else how] = np.zeros((1, 2, 8, 4), np.int8)
        elif how == "float":
            t[what] = t[what].astype(np.float64)
        elif how == "bool":
            t[what] = t[what] > 0
        elif how == "object":
            t[what] = np.array([object()] * 64).reshape(1, 2, 8, 4)
        elif how == "ragged":
            t[what] = [[1, 2], [3]]
        elif how == "shape":
            t[what] = t[what][..., :3] if what == "Q" else np.concatenate([t[what]] * 2, axis=1)
        elif how == "range":
            t[what] = t[what].astype(np.int16)
            t[what][0, 0, 3, 1] = 300
        elif how == "low":
            t[what] = t[what].astype(np.int64)
            t[what][0, 0, 0, 0] = -129
        tensors = t
    for fn in (lambda: run(ATT, tensors, config="tiny"), lambda: check_tensors(ATT, tensors),
               lambda: reference.reference_attention(ATT, tensors)):
        with pytest.raises(WorkloadError) as e:
            fn()
        assert words in _msg(e)


def test_gemm_tensor_messages_say_the_gemm_shapes():
    t = _good(GEMM)
    with pytest.raises(WorkloadError) as e:
        run(GEMM, {**t, "B": t["A"]}, config="tiny")
    assert "tensor 'B' has shape (5, 7): expected (7, 6) = [K, N]" in _msg(e)
    with pytest.raises(WorkloadError) as e:
        run(GEMM, {"Q": t["A"]}, config="tiny")
    assert "missing tensors 'A', 'B' (GEMM needs A, B: INT8 arrays)" in _msg(e)


def test_run_checks_its_arguments_before_compiling():
    t = _good(GEMM)
    with pytest.raises(WorkloadError) as e:
        run("gemm", t, config="tiny")
    assert "argument 'workload' = 'gemm': must be an AttentionWorkload or a GemmWorkload" in _msg(e)
    with pytest.raises(WorkloadError) as e:
        run(GEMM, t, backend=None, config="tiny")
    assert "argument backend = None: must be 'golden', 'perf' or 'rtl'" in _msg(e)


def test_run_program_checks_the_image():
    prog = compile_workload(GEMM, "tiny")
    img = prog.pack(_good(GEMM))
    assert np.array_equal(run_program(prog, img.tobytes()).outputs["C"], run_program(prog, img).outputs["C"])
    for bad, words in ((img[:-1], f"has {img.size - 1} bytes: the program needs at least {img.size}"),
                       (img.astype(np.int32), "is a int32 array of shape"), (None, "is a NoneType"),
                       (img.reshape(1, -1), "must be a 1-D uint8 array")):
        with pytest.raises(WorkloadError) as e:
            run_program(prog, bad)
        assert words in _msg(e)
    with pytest.raises(WorkloadError, match="argument 'program' = str"):
        run_program("prog", img)


# ------------------------------------------------------------------ reference helpers
def test_reference_helpers_take_numpy_scalars_and_name_bad_arguments():
    x = np.array([0.3, -1.0, 10.0])
    assert np.array_equal(reference.quantize(x, np.float32(0.5)), reference.quantize(x, 0.5))
    t = reference.make_tensors(ATT, np.int64(3))
    assert np.array_equal(t["Q"], reference.make_tensors(ATT, 3)["Q"])
    cases = [
        (lambda: reference.quantize(x, 0), "argument 'scale' = 0: must be a positive finite number"),
        (lambda: reference.quantize(x, np.float32("inf")), "argument 'scale' = inf"),
        (lambda: reference.quantize([np.nan], 1.0), "argument 'x' has a NaN or infinite value"),
        (lambda: reference.quantize(["a"], 1.0), "argument 'x' is not an array of real numbers"),
        (lambda: reference.make_tensors(ATT, -1), "argument 'seed' = -1: must be at least 0"),
        (lambda: reference.make_tensors(ATT, 1.5), "argument 'seed' = 1.5: must be an integer"),
        (lambda: reference.make_tensors("att", 0), "argument 'wl' = str"),
        (lambda: reference.make_attention_tensors(ATT, 0), "argument 'rng' = int: must be a numpy.random.Generator"),
        (lambda: reference.make_attention_tensors(ATT, np.random.default_rng(0), sigma=np.float32(0)),
         "argument 'sigma' = 0.0: must be a positive finite number"),
        (lambda: reference.make_attention_tensors(ATT, np.random.default_rng(0), dist="flat"),
         "argument 'dist' = 'flat'"),
        (lambda: reference.make_gemm_tensors(ATT, np.random.default_rng(0)), "argument 'wl' = AttentionWorkload"),
        (lambda: reference.reference_gemm(np.ones((2, 3), np.int8), np.ones((2, 3), np.int8)),
         "A's columns must equal B's rows"),
        (lambda: reference.reference_gemm(np.ones((2, 3)), np.ones((3, 2), np.int8)), "argument 'A' is a float64"),
        (lambda: reference.reference_gemm(np.full((2, 3), 200), np.ones((3, 2), np.int8)),
         "argument 'A' has values in [200, 200]"),
        (lambda: reference.reference_attention(GEMM, {}), "argument 'wl' = GemmWorkload"),
        (lambda: reference.attention_float64(t["Q"], t["K"], t["V"], q_scale=np.nan, k_scale=1, v_scale=1),
         "argument 'q_scale' = nan"),
        (lambda: reference.attention_float64(t["Q"], t["K"][:, :, :3], t["V"], q_scale=1, k_scale=1, v_scale=1),
         "arguments 'k', 'v' have shapes"),
        (lambda: reference.attention_float64(t["Q"][0], t["K"], t["V"], q_scale=1, k_scale=1, v_scale=1),
         "argument 'q' is a int8 array of shape (2, 8, 4): expected a 4-D"),
    ]
    for fn, words in cases:
        with pytest.raises(WorkloadError) as e:
            fn()
        assert words in _msg(e), words
    # the float64 reference takes np.float32 scales and equals the Python-float result
    a = reference.attention_float64(t["Q"], t["K"], t["V"], q_scale=np.float32(0.25), k_scale=0.25, v_scale=0.25)
    b = reference.attention_float64(t["Q"], t["K"], t["V"], q_scale=0.25, k_scale=0.25, v_scale=0.25)
    assert np.array_equal(a, b)


def test_workload_error_is_a_value_error():
    assert issubclass(WorkloadError, ValueError)
