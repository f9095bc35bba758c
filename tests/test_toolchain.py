"""The co-simulation toolchain: Verilator found and new enough, build environment, cache key, lint."""

import os

import pytest
from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flashnpu.cosim import toolchain
from flashnpu.cosim.build import build_key, ports_vlt, verilator_args
from flashnpu.cosim.verilog import LINT_WAIVERS, generate, lint, to_verilog
from flashnpu.hw.dma_engine import DmaEngine
from flashnpu.spec.config import load_config


def test_finds_verilator_new_enough():
    tc = toolchain.find_toolchain()
    assert tc.verilator.exists()
    assert (tc.root / "include" / "verilated.mk").exists()
    assert tc.version >= toolchain.MIN_VERSION
    major, minor = toolchain.verilator_version().split(".")
    assert (int(major), int(minor)) >= (5, 36)


def test_build_env_has_root_and_makeflags_fix(monkeypatch):
    monkeypatch.setenv("MAKEFLAGS", "-s")
    monkeypatch.setenv("CXXFLAGS", "--std=c++20 -DVL_TIME_CONTEXT")
    env = toolchain.build_env()
    assert env["VERILATOR_ROOT"] == str(toolchain.find_toolchain().root)
    assert env["MAKEFLAGS"].split() == ["-s", toolchain.MAKEFLAGS_FIX]
    assert env["MAKEFLAGS"].count("CFG_CXXFLAGS_PCH_I=-include") == 1
    # The wheel wrapper's -DVL_TIME_CONTEXT hangs cocotb's Verilator main at 0 ns.
    assert env["CXXFLAGS"] == "--std=c++20"
    assert toolchain.build_env({"PATH": "/bin"})["MAKEFLAGS"] == toolchain.MAKEFLAGS_FIX


def test_build_args_keep_design_private():
    args = verilator_args("top", waves=False)
    assert "--public-flat-rw" not in args
    assert "--vpi" in args and not any(a.startswith("--public") for a in args)
    assert [a for a in args if a.startswith("-Wno")] == [f"-Wno-{w}" for w in LINT_WAIVERS]
    assert "-Wno-fatal" not in args
    assert "--trace-fst" in verilator_args("top", waves=True)


class _Adder(wiring.Component):
    a: In(8)
    b: In(8)
    o: Out(9)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.o.eq(self.a + self.b)
        return m


def test_cache_key_changes_with_every_input():
    text = to_verilog(_Adder(), "adder")
    k = build_key(text, "adder", waves=False)
    assert build_key(text, "adder", waves=False) == k
    assert build_key(text, "adder", waves=True) != k
    assert build_key(text, "adder", waves=False, extra_args=("-DFOO",)) != k
    assert build_key(text + "\n// x\n", "adder", waves=False) != k


def test_only_top_ports_are_public():
    text = to_verilog(_Adder(), "adder")
    vlt = ports_vlt(text, "adder").splitlines()
    assert vlt[0] == "`verilator_config"
    assert sorted(vlt[1:]) == sorted(f'public_flat_rw -module "adder" -var "{p}"' for p in "abo")


def test_lint_of_generated_verilog_passes(tmp_path):
    res = generate(DmaEngine(load_config("tiny")), tmp_path)
    assert res.verilog.name == "dma_engine.v" and res.top == "dma_engine"
    r = lint(res.verilog, res.top)
    assert r.ok, r.output
    rep = res.report
    assert rep["pes"] == 16 and rep["sram_bytes"] == 4096 + 8192 and rep["dma_bytes_per_cycle"] == 4
    assert (tmp_path / "report.md").exists() and (tmp_path / "report.json").exists()


@pytest.mark.parametrize("config", ["default", "large"])
def test_lint_of_the_dma_engine_of_each_config(tmp_path, config):
    """large's 256-bit beat holds a whole instruction: no zero-width fetch beat counter."""
    res = generate(DmaEngine(load_config(config)), tmp_path)
    r = lint(res.verilog, res.top)
    assert r.ok, r.output


def test_lint_fails_on_warnings_not_waived(tmp_path):
    # A default-on warning that is not one of the named waivers fails the lint...
    v = tmp_path / "bad.v"
    v.write_text("module bad(input [1:0] a, output [1:0] o);\n  assign o = a[3:2];\nendmodule\n")
    r = lint(v, "bad")
    assert not r.ok and "SELRANGE" in r.output
    # ... and so does an error.
    v.write_text("module bad(input a, output [1:0] o);\n  assign o = {a, undeclared};\nendmodule\n")
    assert not lint(v, "bad").ok


def test_lint_of_the_npu_passes(tmp_path):
    res = generate(load_config("tiny"), tmp_path)
    assert res.top == "npu" and res.report["pes"] == 16
    r = lint(res.verilog, res.top)
    assert r.ok, r.output
