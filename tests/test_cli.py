import argparse
import importlib
import subprocess
import sys

import pytest

from loki_pipeline.cli import COMMANDS, build_parser, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_module_implements_the_command_protocol(name):
    module = importlib.import_module(COMMANDS[name][0])
    assert isinstance(module.HELP, str) and callable(module.add_arguments)
    assert callable(module.run)
    build_parser([name])  # its arguments build without clashing


def test_top_level_help_does_not_import_torch():
    code = "import sys; from loki_pipeline.cli import build_parser; build_parser(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_command_help_imports_torch():
    """Every `loki COMMAND --help` answers at once (`loki merge --help` took 2.6 s with torch)."""
    code = (
        "import sys\nfrom loki_pipeline.cli import COMMANDS, build_parser\n"
        "for name in COMMANDS:\n    build_parser([name])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    rc = main(
        [
            "select",
            "--kva",
            str(tmp_path / "missing.h5"),
            "--q",
            "10",
            "-o",
            str(tmp_path / "s.json"),
        ]
    )
    assert rc == 2
    assert "missing.h5" in capsys.readouterr().err


def _options(name):
    """The sub-command's parser actions by option string."""
    parser = build_parser([name])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {s: a for a in sub.choices[name]._actions for s in a.option_strings}, sub.choices[name]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_one_vocabulary_model_out_device_auto_and_old_spellings_hidden(name):
    options, parser = _options(name)
    help_text = parser.format_help()
    for old in ("--model-dir", "--output", "-o"):
        assert old not in help_text.split()  # a hidden alias at most
        if old in options:
            assert options[old].help == argparse.SUPPRESS
    if "--device" in options:
        assert options["--device"].default == "auto"
    for new in ("--model", "--out"):
        if new in options:
            assert options[new].dest == new[2:]


@pytest.mark.parametrize(
    ("argv", "new", "old"),
    [
        (["kva", "--dataset", "d.jsonl", "--out", "o.h5"], "--model", "--model-dir"),
        (["select"], "--out", "--output"),
        (["select"], "--out", "-o"),
    ],
)
def test_old_spelling_still_parses_to_the_new_name(argv, new, old):
    parser = build_parser(argv)
    got = parser.parse_args([*argv, old, "x"])
    assert vars(got) == vars(parser.parse_args([*argv, new, "x"]))
    assert getattr(got, new[2:]) == "x"


def test_kva_without_a_model_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as err:
        build_parser(["kva"]).parse_args(["kva", "--dataset", "d.jsonl", "--out", "o.h5"])
    assert err.value.code == 2
    assert "--model" in capsys.readouterr().err
