"""Messages that say what to do: Ctrl-C of a long command or job, a target naming a model the
config does not define."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loki_pipeline.interrupt import EXIT_STATUS, MESSAGE, snakemake_was_interrupted

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = shutil.which("snakemake") or str(Path(sys.executable).with_name("snakemake"))


def _interrupt(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python, send it SIGINT (as Ctrl-C does) once it prints 'ready'."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job may ignore SIGINT; the child must get Python's default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
    )
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_ctrl_c_of_a_loki_command_ends_with_one_line_and_status_130():
    done = _interrupt(
        """
        import sys, time, types
        from loki_pipeline import cli

        slow = types.ModuleType("slow")
        slow.HELP = "a long command"
        slow.add_arguments = lambda parser: None
        def run(args):
            print("ready", flush=True)
            time.sleep(60)
        slow.run = run
        sys.modules["slow"] = slow
        cli.COMMANDS["slow"] = ("slow", "a long command")
        sys.exit(cli.main(["slow"]))
        """
    )
    assert done.returncode == EXIT_STATUS == 130
    assert done.stderr.splitlines() == [f"loki slow: {MESSAGE}"]
    assert "rerun the same command to resume" in MESSAGE


def test_ctrl_c_of_a_job_script_ends_with_one_line_after_its_clean_up():
    done = _interrupt(
        """
        import time
        from loki_pipeline.interrupt import exit_on_sigint

        exit_on_sigint()
        try:
            print("ready", flush=True)
            time.sleep(60)
        finally:
            print("cleaned up", flush=True)
        """
    )
    assert done.returncode == 130
    assert done.stderr.splitlines() == [MESSAGE]  # no KeyboardInterrupt traceback
    assert done.stdout.splitlines() == ["cleaned up"]


@pytest.mark.parametrize("script", ["prepare_model", "kva", "train", "eval_general", "eval_task"])
def test_every_long_job_script_turns_ctrl_c_into_the_message(script):
    text = (ROOT / "workflow" / "scripts" / f"{script}.py").read_text()
    assert "\nexit_on_sigint()" in text


def test_the_workflow_says_how_to_resume_only_after_ctrl_c(tmp_path):
    log = tmp_path / "snakemake.log"
    log.write_text("Select jobs to execute...\nTerminating processes on user request, this "
                   "might take some time.\n")  # fmt: skip
    assert snakemake_was_interrupted(log)
    log.write_text("Error in rule kva:\n")
    assert not snakemake_was_interrupted(log)
    assert not snakemake_was_interrupted(tmp_path / "missing.log")
    assert "onerror:\n    print_interrupted(log)" in (ROOT / "Snakefile").read_text()


def test_a_target_naming_an_undefined_model_lists_the_defined_models():
    proc = subprocess.run(
        [SNAKEMAKE, "-n", "results/kva/smollm2-13m/kva.h5"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "'smollm2-13m' is not a model of this config (did you mean 'smollm2-135m'?)" in out
    assert "the models defined (config key 'models') are: smollm2-135m" in out
    assert "No rule to produce" not in out
