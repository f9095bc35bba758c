"""The wheel: what it contains, and that an installed (not editable) flashnpu works outside the repository."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The distribution's packages and the repository folder each comes from (pyproject.toml package-dir).
PACKAGES = {"flashnpu": "flashnpu", "flashnpu/spec": "spec", "flashnpu/hw": "hw", "flashnpu/sw": "sw",
            "flashnpu/cosim": "cosim"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Built from a copy of the sources (an in-tree build would leave build/lib behind, whose stale files
    a later build could pack)."""
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src")
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    for folder in PACKAGES.values():
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        str(src), "-w", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = out.glob("flashnpu-*.whl")
    return whl


def test_wheel_holds_every_package_and_the_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for pkg, folder in PACKAGES.items():
        want = {f"{pkg}/{p.name}" for p in (ROOT / folder).glob("*.py")}
        assert want and want <= names, f"{pkg}: missing {sorted(want - names)}"
    configs = {f"flashnpu/spec/configs/{p.name}" for p in (ROOT / "spec" / "configs").glob("*.yaml")}
    assert {"flashnpu/spec/configs/tiny.yaml", "flashnpu/spec/configs/default.yaml"} <= configs <= names
    sweeps = {f"flashnpu/spec/configs/sweeps/{p.name}" for p in (ROOT / "spec" / "configs" / "sweeps").glob("*.yaml")}
    assert "flashnpu/spec/configs/sweeps/small.yaml" in sweeps and sweeps <= names
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Provides-Extra: torch" in text and "torch==2.13.0; extra == \"torch\"" in text
    ep = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "flashnpu = flashnpu.cli:main" in zipfile.ZipFile(wheel).read(ep).decode()
    assert not any(n.startswith(("tests/", "docs/", "build/")) for n in names)


@pytest.mark.install
def test_installed_wheel_works_from_another_folder(wheel, tmp_path):
    """A fresh venv, ``pip install`` of the wheel (about 30 s), then the CLI and the API from elsewhere.

    (``flashnpu run`` on the RTL from an installed wheel needs a cold Verilator
    build, about 70 s more: not repeated here; the model cache location it
    uses is checked instead.)
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FLASHNPU_SIM_CACHE")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    r = subprocess.run([str(venv / "bin" / "flashnpu"), "generate", "--config", "tiny"], cwd=work, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (work / "build" / "tiny" / "npu.v").stat().st_size > 10_000
    r = subprocess.run([str(venv / "bin" / "flashnpu"), "compile", "gemm", "--config", "tiny", "-M", "8", "-N", "8",
                        "-K", "8"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "instructions:" in r.stdout, r.stderr[-2000:]
    probe = (
        "import json, numpy as np, flashnpu, flashnpu.spec.config as c, flashnpu.cosim.build as b\n"
        "q = np.random.default_rng(0).normal(size=(1, 2, 8, 8))\n"
        "r = flashnpu.attention(q, q, q, config='tiny', return_raw=True)\n"
        "print(json.dumps({'file': flashnpu.__file__, 'configs': str(c.CONFIG_DIR), 'cache': str(b.DEFAULT_ROOT),"
        " 'shape': list(r.output.shape), 'raw': str(r.raw.dtype)}))\n")
    r = subprocess.run([str(py), "-c", probe], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["file"].startswith(str(venv)), got            # the installed copy, not the repository
    assert got["configs"].startswith(str(venv))
    assert got["cache"] == str(tmp_path / "cache" / "flashnpu" / "sim")
    assert got["shape"] == [1, 2, 8, 8] and got["raw"] == "int8"
