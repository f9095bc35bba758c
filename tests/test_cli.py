"""The command line: bad paths and bad numbers are one-line errors (exit 2) before any work starts."""

import subprocess
import sys

import pytest

from flashnpu import cli
from flashnpu.cli import workload_from_args

CALLS = []


def _record(args):
    CALLS.append(args)
    return 0


@pytest.fixture
def no_work(monkeypatch):
    """Every subcommand's handler only records that it was called."""
    CALLS.clear()
    for cmd in cli.HANDLERS:
        monkeypatch.setitem(cli.HANDLERS, cmd, f"{__name__}:_record")
    return CALLS


def _error(capsys, argv, words):
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith(f"flashnpu {argv[0]}: error: ") and words in err[0], err[0]
    assert not CALLS, "the handler ran although an argument was bad"


def test_generate_output_must_be_a_folder(tmp_path, capsys, no_work):
    f = tmp_path / "file"
    f.write_text("keep me")
    _error(capsys, ["generate", "--config", "tiny", "-o", str(f)], f"argument -o/--output: '{f}' exists and is not a folder")
    assert f.read_text() == "keep me"
    _error(capsys, ["generate", "--config", "tiny", "-o", "/dev/null"], "'/dev/null' exists and is not a folder")
    _error(capsys, ["generate", "--config", "tiny", "-o", str(f / "sub")], "cannot write into folder")
    _error(capsys, ["bench", "--config", "tiny", "-o", str(f)], "argument -o/--output")
    # a new folder (parents too) or an existing one is fine
    assert cli.main(["generate", "--config", "tiny", "-o", str(tmp_path / "a" / "b")]) == 0
    assert cli.main(["generate", "--config", "tiny", "-o", str(tmp_path)]) == 0
    assert len(CALLS) == 2 and (tmp_path / "a" / "b").is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["a", "file"]


@pytest.mark.parametrize("option,command", [("--listing", "compile"), ("--trace", "run")])
def test_output_files_are_checked_before_the_work(tmp_path, capsys, no_work, option, command):
    argv = [command, "attention", "--config", "tiny", "--seq", "16", "--head-dim", "4", option]
    _error(capsys, argv + [str(tmp_path / "missing" / "x")], f"argument {option}: cannot write "
           f"'{tmp_path / 'missing' / 'x'}': folder '{tmp_path / 'missing'}' does not exist")
    _error(capsys, argv + [str(tmp_path)], f"argument {option}: '{tmp_path}' is a folder, not a file")
    _error(capsys, argv + ["/proc/flashnpu-no-such-file"], f"argument {option}: cannot write")
    # writable: a new file (left absent until the command writes it), an existing one (left as it is), /dev/null
    new, old = tmp_path / "new.txt", tmp_path / "old.txt"
    old.write_text("old")
    for ok in (new, old, "/dev/null"):
        assert cli.main(argv + [str(ok)]) == 0
    assert len(CALLS) == 3 and not new.exists() and old.read_text() == "old"


@pytest.mark.parametrize("argv,words", [
    (["--seed", "-1"], "argument --seed: must be an integer >= 0, not '-1'"),
    (["--seed", "x"], "argument --seed: must be an integer >= 0, not 'x'"),
    (["--seq", "0"], "argument --seq: must be an integer >= 1, not '0'"),
    (["--seq-q", "-5"], "argument --seq-q: must be an integer >= 1, not '-5'"),
    (["--heads", "1.5"], "argument --heads: must be an integer >= 1, not '1.5'"),
    (["-K", "0"], "argument -K: must be an integer >= 1, not '0'"),
])
def test_bad_numbers_name_the_option(capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "attention", "--config", "tiny", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"flashnpu run: error: {words}"


@pytest.mark.parametrize("argv,seq_q,seq_k", [
    ([], 256, 256), (["--seq", "64"], 64, 64), (["--seq-q", "32"], 32, 256), (["--seq-k", "48"], 256, 48),
    (["--seq", "64", "--seq-q", "32"], 32, 64), (["--seq-q", "32", "--seq", "64"], 32, 64),
    (["--seq", "64", "--seq-q", "32", "--seq-k", "16"], 32, 16),
])
def test_seq_options_do_what_the_help_says(argv, seq_q, seq_k):
    """--seq gives both lengths; --seq-q / --seq-k override it for the queries / keys, in any order."""
    args = cli.build_parser().parse_args(["compile", "attention", *argv])
    wl = workload_from_args(args)
    assert (wl.seq_q, wl.seq_k) == (seq_q, seq_k)


def test_seq_help_text():
    p = cli.build_parser()
    sub = next(a for a in p._actions if a.dest == "command").choices["compile"]
    helps = {a.dest: " ".join(a.help.split()) for a in sub._actions if a.help}
    assert "overrides --seq for the queries (default: --seq)" in helps["seq_q"]
    assert "overrides --seq for the keys (default: --seq)" in helps["seq_k"]
    assert "--seq-q / --seq-k" in helps["seq"]
    assert "if not --seq" not in " ".join(helps.values())


def test_bad_config_file_is_one_line_on_the_command_line(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("array_rows: 4\narray_rows: 8\n")
    r = subprocess.run([sys.executable, "-m", "flashnpu.cli", "compile", "gemm", "--config", str(p)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == (f"flashnpu compile: error: config file {p}: duplicate field 'array_rows' at "
                                "line 2 (first at line 1)")
