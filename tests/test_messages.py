"""Messages that say what to do: Ctrl-C of a long command or job, a target naming a model the
config does not define."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
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
    log = stopped = tmp_path / "stopped.log"
    log.write_text("Select jobs to execute...\nTerminating processes on user request, this "
                   "might take some time.\n")  # fmt: skip
    assert snakemake_was_interrupted(log)
    log = tmp_path / "snakemake.log"
    log.write_text("Error in rule kva:\n")
    assert not snakemake_was_interrupted(log)
    assert not snakemake_was_interrupted(tmp_path / "missing.log")
    assert snakemake_was_interrupted([tmp_path / "missing.log", str(stopped)])  # Snakemake 9
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


def test_a_target_of_a_defined_model_never_reaches_the_undefined_model_rule():
    """The rule's model wildcard excludes the defined names within a path (a lookahead anchored
    at the end of the whole path let them through: every plan printed its error per target)."""
    proc = subprocess.run(
        [SNAKEMAKE, "-n", "results/kva/smollm2-135m/kva.h5"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "is not a model of this config" not in out
    assert "undefined_model" not in out


def test_ctrl_c_of_a_snakemake_run_ends_the_job_log_and_the_console_with_the_message(tmp_path):
    """A workflow with the project's onerror and a job script as the project's start: after
    SIGINT to the run's process group, the job's log holds the one line (no traceback), the
    console ends with it, the exit status is 130, and the same command can run again."""
    (tmp_path / "job.py").write_text(
        "import sys, time\n"
        "from loki_pipeline.interrupt import exit_on_sigint\n"
        "exit_on_sigint()\n"
        "sys.stderr = open(snakemake.log[0], 'w')\n"
        "open('started', 'w').close()\n"
        "time.sleep(60)\n"
    )
    (tmp_path / "Snakefile").write_text(
        f'configfile: "{ROOT}/config/config.yaml"\n'
        f'include: "{ROOT}/workflow/rules/common.smk"\n'
        'rule long:\n    output: "out"\n    log: "long.log"\n    script: "job.py"\n'
        "onerror:\n    print_interrupted(log)\n"
    )
    proc = subprocess.Popen(
        [SNAKEMAKE, "--cores", "1", "out"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
    )  # fmt: skip
    for _ in range(600):
        if (tmp_path / "started").exists() or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert (tmp_path / "started").exists(), proc.communicate()[0]
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    out = proc.communicate(timeout=120)[0]
    assert (tmp_path / "long.log").read_text().splitlines() == [MESSAGE]
    assert out.splitlines()[-1] == MESSAGE and proc.returncode == 130, out
    assert "KeyboardInterrupt" not in out
    rerun = subprocess.run([SNAKEMAKE, "-n", "out"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr  # no lock left: it resumes
