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
