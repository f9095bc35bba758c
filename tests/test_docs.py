"""Generated docs equal the committed files, and they say what the code says."""

import subprocess
import sys

import pytest

from flashnpu.sw import asm, docgen
from flashnpu.spec import isa, regmap
from flashnpu.spec.isa import ErrorCode, Opcode, VectorFunct


@pytest.mark.parametrize("name", sorted(docgen.DOCS))
def test_committed_docs_are_generated(name):
    committed = (docgen.DOCS_DIR / name).read_text()
    assert committed == docgen.DOCS[name](), f"docs/{name} is stale: run python -m flashnpu.sw.docgen"


def test_isa_doc_content():
    text = docgen.isa_md()
    for op in Opcode:
        assert f"opcode {int(op):#x})" in text
    for fn in VectorFunct:
        assert f"`vector.{fn.name.lower()}`" in text
    for code in ErrorCode:
        assert f"| `{code.name}` | {int(code)} " in text
    # Absolute bit ranges from the layout: a body field is offset by the 12 header bits.
    assert "| `causal_offset` | [152:133] | 20 | yes | -524288 .. 524287 |" in text
    assert "| `dram_addr` | [44:13] | 32 | no |" in text
    for key, doc in isa.FIELD_DOCS.items():
        assert doc in text, key


def test_registers_doc_content():
    text = docgen.registers_md()
    for r in regmap.REGISTERS:
        assert f"| `{r.offset:#04x}` | `{r.name}` | {r.access} |" in text


def test_asm_docstring_example_assembles():
    example = [line[4:] for line in asm.__doc__.splitlines() if line.startswith("    ")]
    words = asm.assemble("\n".join(example))
    assert len(words) == 6 and asm.assemble(asm.disassemble(words)) == words


def test_check_mode(tmp_path):
    assert docgen.main(["--check"]) == 0
    assert docgen.main(["--out", str(tmp_path)]) == 0
    assert (tmp_path / "isa.md").read_text() == docgen.isa_md()
    (tmp_path / "registers.md").write_text("stale\n")
    assert docgen.main(["--check", "--out", str(tmp_path)]) == 1
    r = subprocess.run([sys.executable, "-m", "flashnpu.sw.docgen", "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
