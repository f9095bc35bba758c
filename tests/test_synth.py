"""flashnpu.synth on small blocks: module merging, per-block counts, the cache, time limits, place and route."""

import json

import pytest
from amaranth import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flashnpu import synth
from flashnpu.cli import main
from flashnpu.hw.processing_element import ProcessingElement
from flashnpu.spec.numerics import A_WIDE_BITS

#: The PE's registers: two weight buffers, the partial sum, and the activation with its buffer bit.
PE_REGISTER_BITS = 8 + 8 + 32 + A_WIDE_BITS + 1


class PeRow(wiring.Component):
    """``n`` PEs, each wired to top-level ports only, so that no PE differs from another."""

    def __init__(self, n):
        self._n = n
        sig = {}
        for i in range(n):
            sig |= {f"a{i}": In(signed(A_WIDE_BITS)), f"s{i}": In(1), f"p{i}": In(signed(32)),
                    f"w{i}": In(signed(8)), f"we{i}": In(1), f"b{i}": In(1),
                    f"ao{i}": Out(signed(A_WIDE_BITS)), f"so{i}": Out(1), f"po{i}": Out(signed(32))}
        super().__init__(sig)

    def elaborate(self, platform):
        m = Module()
        for i in range(self._n):
            pe = m.submodules[f"pe{i}"] = ProcessingElement()
            m.d.comb += [pe.a.eq(getattr(self, f"a{i}")), pe.a_sel.eq(getattr(self, f"s{i}")),
                         pe.psum_in.eq(getattr(self, f"p{i}")), pe.w_data.eq(getattr(self, f"w{i}")),
                         pe.w_we.eq(getattr(self, f"we{i}")), pe.w_buf.eq(getattr(self, f"b{i}")),
                         getattr(self, f"ao{i}").eq(pe.a_out), getattr(self, f"so{i}").eq(pe.a_sel_out),
                         getattr(self, f"po{i}").eq(pe.psum_out)]
        return m


def test_identical_modules_merge_and_are_counted():
    from amaranth.back import rtlil
    mods = synth.split_modules(rtlil.convert(PeRow(3), name="row", emit_src=False))
    assert len(mods) == 4
    texts, count, canon = synth.merge_identical(mods, "\\row")
    assert len(texts) == 2
    (pe,) = [n for n in texts if n != "\\row"]
    assert count == {"\\row": 1, pe: 3}
    assert {canon[f"\\row.pe{i}"] for i in range(3)} == {pe}


def test_pe_synthesizes_to_its_registers_and_one_dsp_and_is_cached(tmp_path):
    assert synth.synthesize(ProcessingElement(), "pe", target="ecp5", out_dir=tmp_path, cached_only=True) is None
    res = synth.synthesize(ProcessingElement(), "pe", target="ecp5", out_dir=tmp_path, progress=False)
    assert res.total["FF"] == PE_REGISTER_BITS
    assert res.total["DSP"] == 1                 # the 12x8 multiply is one MULT18X18D
    assert res.total["LUT4"] > 0 and not res.cached
    again = synth.synthesize(ProcessingElement(), "pe", target="ecp5", out_dir=tmp_path, progress=False)
    assert again.cached and again.total == res.total
    only = synth.synthesize(ProcessingElement(), "pe", target="ecp5", out_dir=tmp_path, cached_only=True)
    assert only.cached and only.key == res.key
    # no half-written entry: the result, and the one module's mapping
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([res.key, "modules"])
    assert len(list((tmp_path / "cache" / "modules").iterdir())) == 1


def test_a_design_that_changes_one_module_maps_only_that_module(tmp_path):
    synth.synthesize(PeRow(3), "row", target="generic", out_dir=tmp_path, progress=False)
    mods = tmp_path / "cache" / "modules"
    first = {p.name: p.stat().st_mtime_ns for p in mods.iterdir()}
    assert len(first) == 2                       # the row and its (merged) PE
    two = synth.synthesize(PeRow(2), "row", target="generic", out_dir=tmp_path, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in mods.iterdir()}
    assert len(after) == 3 and not two.cached    # only the new top was mapped
    assert all(after[k] == t for k, t in first.items())
    assert two.total["FF"] == 2 * PE_REGISTER_BITS


def test_merged_modules_are_counted_in_the_totals(tmp_path):
    res = synth.synthesize(PeRow(3), "row", target="generic", out_dir=tmp_path, progress=False)
    one = synth.synthesize(ProcessingElement(), "pe", target="generic", out_dir=tmp_path, progress=False)
    assert one.total["FF"] == PE_REGISTER_BITS
    assert res.total["FF"] == 3 * PE_REGISTER_BITS
    assert res.total["cells"] == 3 * one.total["cells"]
    assert [(b["block"], b["instances"]) for b in res.blocks] == [("pe0", 3)] * 3


def test_pe_places_and_routes_with_an_fmax(tmp_path):
    res = synth.synthesize(ProcessingElement(), "pe", target="ecp5", pnr=True, out_dir=tmp_path, progress=False)
    assert res.pnr["fits"] and res.pnr["part"] == synth.ECP5_PARTS[0][1]
    assert 10 < res.pnr["fmax_mhz"] < 1000
    assert "fmax" in synth.report_md(res)


def test_nothing_fits_says_which_resource():
    big = {"LUT4": 493_897, "BRAM": 2, "DSP": 95}
    assert synth._pick_part(big) is None
    res = synth._pnr(None, [], "\\top", big, 100.0, 1.0, False)
    assert not res["fits"] and "LUT4 493897 > 84000" in res["why"]
    assert synth._pick_part({"LUT4": 30_000, "BRAM": 10, "DSP": 1})[1] == "LFE5U-45F"


def test_time_limit_stops_and_leaves_no_cache_entry(tmp_path):
    from flashnpu.hw.systolic_array import SystolicArray
    from flashnpu.spec.config import load_config
    with pytest.raises(synth.SynthError, match="time limit of 0 s"):
        synth.synthesize(SystolicArray(load_config("tiny")), "array", target="ecp5", out_dir=tmp_path,
                         timeout_s=0.2, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_bad_arguments_name_the_field(tmp_path, capsys):
    with pytest.raises(synth.SynthError, match="target: 'asic'"):
        synth.synthesize(None, "pe", target="asic", out_dir=tmp_path)   # checked before it is used
    with pytest.raises(synth.SynthError, match="pnr: .*ecp5"):
        synth.synthesize(None, "pe", target="generic", pnr=True, out_dir=tmp_path)
    assert main(["synth", "--config", "tiny", "--target", "generic", "--pnr", "-o", str(tmp_path)]) == 2
    assert "--pnr needs --target ecp5" in capsys.readouterr().err
    assert main(["synth", "--config", "no_such_config", "-o", str(tmp_path)]) == 2
