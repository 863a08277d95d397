"""Containment of model-written HumanEval programs (``loki_pipeline.evaluate.code_exec``).

Every test runs in both modes where it can: the rlimits + process-group fallback always, the
bubblewrap sandbox only where ``bwrap`` is installed and works (skipped otherwise). Each test
checks what its mode promises; the module docstring lists both.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate import code_exec
from loki_pipeline.evaluate.code_exec import CodeEval, isolation_mode, run_program

LIMIT = code_exec.FILE_SIZE_LIMIT_BYTES


NO_BWRAP = (
    "bubblewrap is not installed or does not work here: `apt-get install bubblewrap` "
    "(Debian/Ubuntu; it needs unprivileged user namespaces)"
)


def _bwrap_usable() -> bool:
    return code_exec._bwrap() is not None


needs_bwrap = pytest.mark.skipif(not _bwrap_usable(), reason=NO_BWRAP)


@pytest.fixture(params=["fallback", "bwrap"])
def sandbox(request) -> bool:
    if request.param == "bwrap" and not _bwrap_usable():
        pytest.skip(NO_BWRAP)
    return request.param == "bwrap"


def report(program: str, sandbox: bool, timeout: float = 5.0) -> str:
    """Run a program that ends with ``sys.exit(text)`` and return that text (stderr's last line)."""
    passed, reason = run_program(program, timeout=timeout, sandbox=sandbox)
    assert not passed and reason.startswith("failed: "), reason
    return reason.removeprefix("failed: ")


def running(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker`` (a zombie's command line is empty)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def all_gone(marker: str, within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while running(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# --- every mode -------------------------------------------------------------------------------


def test_each_program_gets_a_fresh_working_directory_deleted_afterwards(sandbox):
    program = (
        "import os, sys\n"
        "assert os.listdir('.') == ['program.py'], os.listdir('.')\n"
        "open('scratch.txt', 'w').write('x')\n"
        "sys.exit(os.getcwd())\n"
    )
    first, second = report(program, sandbox), report(program, sandbox)
    assert first != second
    assert os.path.isabs(first) and not os.path.exists(first)
    assert not os.path.exists(os.path.dirname(first))


def test_environment_is_minimal_and_python_isolated(sandbox):
    program = (
        "import os, sys\n"
        "assert sys.flags.isolated == 1\n"
        "assert os.environ['HOME'] == os.environ['TMPDIR'] == os.getcwd()\n"
        "sys.exit(' '.join(sorted(os.environ)))\n"
    )
    # Python adds LC_CTYPE itself (PEP 538 locale coercion), bubblewrap's --chdir adds PWD
    assert set(report(program, sandbox).split()) <= {"HOME", "PATH", "TMPDIR", "LC_CTYPE", "PWD"}


def test_resource_limits_are_set_in_the_program(sandbox):
    program = (
        "import resource as r, sys\n"
        "names = ['CPU', 'AS', 'FSIZE', 'NOFILE', 'CORE', 'NPROC']\n"
        "sys.exit(' '.join(str(r.getrlimit(getattr(r, 'RLIMIT_' + n))[1]) for n in names))\n"
    )
    cpu, mem, fsize, nofile, core, nproc = map(int, report(program, sandbox, timeout=3).split())
    assert cpu == 4
    assert mem == code_exec.MEMORY_LIMIT_BYTES
    assert (fsize, nofile, core) == (LIMIT, code_exec.OPEN_FILES_LIMIT, 0)
    # the user's processes now plus the margin (not enforced for root, but set)
    assert code_exec.EXTRA_PROCESSES < nproc < 1_000_000


def test_a_file_over_the_size_limit_cannot_be_written(sandbox):
    # Python ignores SIGXFSZ, so the write fails with EFBIG where the limit stops it.
    program = (
        "import os, sys\n"
        f"open('small', 'wb').write(b'x' * {LIMIT // 2})\n"
        "try:\n"
        "    with open('big', 'wb') as fh:\n"
        f"        fh.write(b'x' * {2 * LIMIT})\n"
        "except OSError as err:\n"
        "    sys.exit(f\"{err.errno} {os.path.getsize('big')}\")\n"
    )
    assert report(program, sandbox) == f"{errno.EFBIG} {LIMIT}"


def test_relative_escape_lands_in_the_deleted_scratch_area(sandbox):
    program = (
        "import os, sys\n"
        "target = os.path.abspath('../escape.txt')\n"
        "try:\n"
        "    open(target, 'w').write('out')\n"
        "except OSError:\n"
        "    pass\n"
        "sys.exit(target)\n"
    )
    target = report(program, sandbox)
    assert target.endswith("escape.txt") and not os.path.exists(target)


GRANDCHILD = """
import subprocess, sys, time
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(1000)", {marker!r}],
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    start_new_session={detach},
)
time.sleep(0.3)
assert child.poll() is None
{tail}
"""


@pytest.mark.parametrize("ends", ["exit", "timeout"])
def test_no_child_survives_the_program(sandbox, ends):
    marker = f"loki-survivor-{uuid.uuid4().hex}"
    program = GRANDCHILD.format(
        marker=marker, detach=False, tail="" if ends == "exit" else "while True:\n    pass"
    )
    timeout = 5.0 if ends == "exit" else 1.0
    start = time.monotonic()
    try:
        passed, reason = run_program(program, timeout=timeout, sandbox=sandbox)
        elapsed = time.monotonic() - start
        assert all_gone(marker), "a child of the program is still running"
    finally:
        for pid in running(marker):
            os.kill(pid, signal.SIGKILL)
    if ends == "exit":
        assert (passed, reason) == (True, "passed")
    else:
        assert (passed, reason) == (False, "timed out")
        assert elapsed < timeout + 1.0


def test_code_eval_logs_the_isolation_once(caplog):
    executor = CodeEval(allow=True, timeout=5)
    with caplog.at_level(logging.INFO, logger=code_exec.__name__):
        for _ in range(2):
            scores, _ = executor.compute(
                references=["assert f() == 1"], predictions=[["f = lambda: 1"]], k=[1]
            )
            assert scores == {"pass@1": 1.0}
    logged = [r.getMessage() for r in caplog.records if "isolation" in r.getMessage()]
    assert logged == [f"HumanEval isolation: {isolation_mode()}"]
    expected = code_exec.BWRAP_ISOLATION if _bwrap_usable() else code_exec.FALLBACK_ISOLATION
    assert isolation_mode() == expected


@pytest.mark.parametrize("bwrap", [None, "/bin/false"])
def test_missing_or_broken_bubblewrap_falls_back(monkeypatch, bwrap):
    monkeypatch.setattr(code_exec.shutil, "which", lambda name: bwrap)
    code_exec._bwrap.cache_clear()
    try:
        assert isolation_mode() == code_exec.FALLBACK_ISOLATION
        assert run_program("pass\n", timeout=5) == (True, "passed")
        with pytest.raises(LokiInputError, match="bubblewrap"):
            run_program("pass\n", timeout=5, sandbox=True)
    finally:
        code_exec._bwrap.cache_clear()


# --- bubblewrap only --------------------------------------------------------------------------


@needs_bwrap
def test_sandbox_refuses_writes_outside_the_working_directory(tmp_path):
    targets = [str(tmp_path / "escape.txt"), f"/var/tmp/loki-escape-{uuid.uuid4().hex}.txt"]
    program = (
        "import sys\n"
        f"for target in {targets!r}:\n"
        "    try:\n"
        "        open(target, 'w').write('out')\n"
        "    except OSError:\n"
        "        continue\n"
        "    sys.exit('wrote ' + target)\n"
    )
    try:
        assert run_program(program, timeout=5, sandbox=True) == (True, "passed")
        assert not any(os.path.exists(t) for t in targets)
    finally:
        for target in targets:
            Path(target).unlink(missing_ok=True)


@needs_bwrap
def test_sandbox_has_no_network():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        program = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n"
            "except OSError:\n"
            "    pass\n"
            "else:\n"
            "    raise SystemExit('connected')\n"
        )
        assert run_program(program, timeout=5, sandbox=True) == (True, "passed")
        # the same program reaches the listener without the sandbox: the check is not vacuous
        passed, reason = run_program(program, timeout=5, sandbox=False)
        assert (passed, reason) == (False, "failed: connected")


@needs_bwrap
def test_sandbox_kills_a_child_that_leaves_the_process_group():
    marker = f"loki-survivor-{uuid.uuid4().hex}"
    program = GRANDCHILD.format(marker=marker, detach=True, tail="")
    try:
        assert run_program(program, timeout=5, sandbox=True) == (True, "passed")
        assert all_gone(marker), "a child that called setsid is still running"
    finally:
        for pid in running(marker):
            os.kill(pid, signal.SIGKILL)


def test_an_interpreter_under_tmp_stays_visible_in_the_sandbox(monkeypatch):
    """The sandbox's /tmp is private: a virtualenv made under /tmp (a CI clone) is bound again,
    read-only, or the probe fails and HumanEval silently loses its sandbox."""
    from loki_pipeline.evaluate import code_exec

    monkeypatch.setattr(code_exec.sys, "prefix", "/tmp/clone/.venv")
    argv = code_exec._bwrap_argv("bwrap", "/tmp/loki-code-x/work")
    tmpfs = argv.index("--tmpfs")
    assert argv[tmpfs + 2 : tmpfs + 5] == ["--ro-bind", "/tmp/clone/.venv", "/tmp/clone/.venv"]
    assert "/tmp/clone/.venv" not in code_exec._bwrap_argv("bwrap", "/w")[:tmpfs]
