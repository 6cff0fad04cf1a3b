"""The command line: every --help states each default once; pipeline files are found from any folder."""
from __future__ import annotations

import re

import pytest

from streamcrystal.cli.main import build_parser
from streamcrystal.graph.files import PipelineFileError, load_pipeline

COMMANDS = ["demo", "simulate", "replay", "serve", "proxy", "publish", "spool"]


def option_help(command: str) -> dict[str, str]:
    """Each option's help text as --help prints it, by option string."""
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    parser = subparsers.choices[command]
    text = re.sub(r"\s+", " ", parser.format_help())
    options = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    found = {}
    for option in options:
        # from this option's first appearance in the options list to the next option
        start = text.index(f" {option} ", text.index("options:"))
        ends = [text.find(f" {other} ", start + 1) for other in options if other != option]
        end = min([e for e in ends if e > start] + [len(text)])
        found[option] = text[start:end]
    return found


@pytest.mark.parametrize("command", COMMANDS)
def test_each_default_is_printed_once(command):
    helps = option_help(command)
    assert helps
    for option, text in helps.items():
        assert text.count("(default") <= 1, (option, text)
        assert "(default: None)" not in text and "(default: False)" not in text, (option, text)


def test_shapes_print_as_typed_and_parse_back():
    assert "(default: 16x12)" in option_help("demo")["--grid"]
    args = build_parser().parse_args(["demo"])
    assert args.grid == (16, 12) and args.detector == (1024, 1024)


def test_pipeline_files_are_found_by_name_from_any_folder_and_overridden(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_pipeline("peak_tracking").PARAMETERS["diameter"] == 15
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "peak_tracking.py").write_text("PARAMETERS = {'diameter': 7}\ndef make_pipeline(**k):\n    return None\n")
    monkeypatch.setenv("STREAMCRYSTAL_PIPELINES", str(mine))
    assert load_pipeline("peak_tracking").PARAMETERS["diameter"] == 7
    assert load_pipeline("seed_server").SERVE["prefix"] == "raw"  # the installed one, still found
    with pytest.raises(PipelineFileError, match="STREAMCRYSTAL_PIPELINES"):
        load_pipeline("no_such_pipeline")


def test_help_and_the_parser_load_none_of_the_heavy_libraries(tmp_path):
    """`streamcrystal --help` (and every command's parsing) imports no science, cluster, catalog
    or RunEngine library: each command imports its work when it runs (6 s of imports before)."""
    import subprocess
    import sys

    heavy = ["trackpy", "numba", "dask", "distributed", "bluesky", "tiled", "streamz", "ophyd", "zmq", "h5py"]
    code = ("import sys\n"
            "from streamcrystal.cli.main import build_parser\n"
            "parser = build_parser()\n"
            "parser.format_help()\n"
            "for command in parser._actions[-1].choices.values():\n"
            "    command.format_help()\n"
            f"print(' '.join(name for name in {heavy!r} if name in sys.modules))\n")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout.split()
    assert loaded == []
    # and the check itself sees those imports: the command modules of the work do load them
    code = code.replace("from streamcrystal.cli.main import build_parser", "import streamcrystal.demo\nfrom streamcrystal.cli.main import build_parser")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout.split()
    assert {"trackpy", "bluesky"} <= set(loaded)


def test_a_mistyped_pipeline_names_the_ones_there_are(capsys):
    from streamcrystal.cli.main import main

    assert main(["replay", "abc", "--pipeline", "peak_trackin"]) == 2  # before any catalog is opened
    err = capsys.readouterr().err
    assert "no pipeline file 'peak_trackin'" in err and "peak_tracking, seed_server" in err


def test_serve_into_a_file_is_one_line_of_error(tmp_path):
    import subprocess
    import sys

    a_file = tmp_path / "a_file"
    a_file.write_text("not a catalog")
    done = subprocess.run([sys.executable, "-m", "streamcrystal", "serve", "seed_server", "--catalog", str(a_file),
                           "--spool-dir", str(tmp_path / "spool")], capture_output=True, text=True, timeout=300,
                          check=False, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: the catalog {a_file} is a file: a catalog is a directory "
                                                "(a new one is made where none exists)"]
