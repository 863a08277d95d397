"""Containment of model-written HumanEval programs (``loki_pipeline.evaluate.code_exec``).

Every test runs in both modes where it can: the rlimits + process-group fallback always, the
bubblewrap sandbox only where ``bwrap`` is installed and works (skipped otherwise). Each test
checks what its mode promises; the module docstring lists both.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import threading
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
    exposed = code_exec._exposed_paths()
    argv = code_exec._bwrap_argv("bwrap", "/tmp/loki-code-x/work", exposed)
    tmpfs = argv.index("--tmpfs")
    assert argv[tmpfs + 2 : tmpfs + 5] == ["--ro-bind", "/tmp/clone/.venv", "/tmp/clone/.venv"]
    assert "/tmp/clone/.venv" not in code_exec._bwrap_argv("bwrap", "/w", exposed)[:tmpfs]


# --- issue 23: never host root, no host sockets, bounded in total, clean-up never raises -------


def _host_uids(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")


@needs_bwrap
def test_sandbox_never_runs_a_program_as_host_root_and_proc_sys_is_read_only():
    """Run as root (CI), the program's processes have an unprivileged host uid, and it can open
    none of the kernel's settings for writing (a writable core_pattern is a way out as root)."""
    marker = f"loki-uid-{uuid.uuid4().hex}"
    program = (
        "import os, sys\n"
        "opened = []\n"
        "for path in ['/proc/sys/kernel/core_pattern', '/proc/sys/kernel/hostname',\n"
        "             '/proc/sysrq-trigger', '/proc/sys/vm/drop_caches']:\n"
        "    try:\n"
        "        os.close(os.open(path, os.O_WRONLY))\n"  # no O_TRUNC, nothing written
        "        opened.append(path)\n"
        "    except OSError:\n"
        "        pass\n"
        "if opened:\n"
        "    sys.exit('opened for writing: ' + ' '.join(opened))\n"
        "print(open('/proc/self/uid_map').read(), file=sys.stderr)\n"
        f"os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(3)', {marker!r}])\n"
    )
    outcome: list = []
    worker = threading.Thread(
        target=lambda: outcome.append(run_program(program, timeout=10, sandbox=True))
    )
    worker.start()
    try:
        deadline = time.monotonic() + 8
        while not running(marker) and time.monotonic() < deadline and worker.is_alive():
            time.sleep(0.05)
        pids = running(marker)
        assert pids, f"the program did not get to its sleep: {outcome}"
        uids = _host_uids(pids[0])
    finally:
        worker.join()
    assert outcome == [(True, "passed")], outcome
    assert 0 not in uids, f"the program runs as host uid {uids}"
    if os.geteuid() == 0:
        assert set(uids) == {code_exec.SANDBOX_ID}
    else:
        assert set(uids) == {os.getuid()}
    assert isolation_mode() == code_exec.BWRAP_ISOLATION


@needs_bwrap
def test_sandbox_reaches_no_unix_socket_of_the_host(tmp_path):
    """Sockets that are files (under /run, /var/tmp, /tmp, ...) are out of reach: the sandbox
    binds only the interpreter's folders. A listener on each must receive nothing."""
    places = [tmp_path, Path("/var/tmp"), Path("/run")]
    servers, paths = [], []
    for place in places:
        path = place / f"loki-{uuid.uuid4().hex[:12]}.sock"
        try:
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(path))
        except OSError:
            continue
        server.listen()
        server.setblocking(False)
        servers.append(server)
        paths.append(str(path))
    assert paths, "no place for a test socket"
    program = (
        "import socket, sys\n"
        f"for path in {paths!r}:\n"
        "    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "    try:\n"
        "        s.connect(path)\n"
        "        s.sendall(b'out')\n"
        "    except OSError:\n"
        "        continue\n"
        "    sys.exit('connected to ' + path)\n"
    )
    try:
        assert run_program(program, timeout=5, sandbox=True) == (True, "passed")
        for server in servers:
            with pytest.raises(BlockingIOError):
                server.accept()
        # the same program reaches them without the sandbox: the check is not vacuous
        passed, reason = run_program(program, timeout=5, sandbox=False)
        assert not passed and reason.startswith("failed: connected to "), reason
    finally:
        for server in servers:
            server.close()
        for path in paths:
            Path(path).unlink(missing_ok=True)


@needs_bwrap
def test_sandbox_bounds_disk_and_shared_memory_in_total():
    """Each writable place is a size-limited tmpfs; /dev and / are read-only. Files under the
    per-file limit add up to at most the tmpfs size, then ENOSPC."""
    chunk = LIMIT // 2
    program = (
        "import errno, os, sys\n"
        "totals = []\n"
        "for place in ['.', '/tmp', '/dev/shm']:\n"
        "    total = 0\n"
        "    for i in range(1000):\n"
        "        try:\n"
        "            with open(os.path.join(place, f'f{i}'), 'wb') as fh:\n"
        f"                fh.write(b'x' * {chunk})\n"
        f"            total += {chunk}\n"
        "        except OSError as err:\n"
        "            assert err.errno == errno.ENOSPC, err\n"
        "            break\n"
        "    totals.append(total)\n"
        "for path in ['/dev/x', '/x', '/usr/x']:\n"
        "    try:\n"
        "        open(path, 'wb').close()\n"
        "        totals.append('wrote ' + path)\n"
        "    except OSError:\n"
        "        pass\n"
        "sys.exit(' '.join(map(str, totals)))\n"
    )
    totals = report(program, True, timeout=20).split()
    assert len(totals) == 3, totals
    for total in map(int, totals):
        assert code_exec.TMPFS_SIZE_BYTES - chunk <= total <= code_exec.TMPFS_SIZE_BYTES


@needs_bwrap
def test_sandbox_bounds_the_number_of_processes_even_as_root():
    """RLIMIT_NPROC counts for the unprivileged uid (the kernel ignores it for root)."""
    program = (
        "import os, sys, time\n"
        "started = 0\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(10)\n"
        "        os._exit(0)\n"
        "    started += 1\n"
        "sys.exit(str(started))\n"
    )
    started = int(report(program, True, timeout=10))
    assert started <= code_exec.EXTRA_PROCESSES + code_exec.SANDBOX_PROCESSES


DEEP = """
import os, sys
fd = os.open('.', os.O_RDONLY)
for _ in range({depth}):
    os.mkdir('a', dir_fd=fd)
    fd, parent = os.open('a', os.O_RDONLY, dir_fd=fd), fd
    os.close(parent)
os.close(os.open('leaf', os.O_WRONLY | os.O_CREAT, dir_fd=fd))
sys.exit(os.getcwd())
"""


def test_a_deeply_nested_work_folder_is_removed_without_raising(sandbox):
    """A candidate nesting more folders than Python's recursion limit made the clean-up raise
    RecursionError out of the evaluator (and lm-eval's metric with it)."""
    cwd = report(DEEP.format(depth=1100), sandbox, timeout=20)
    assert os.path.isabs(cwd), cwd
    assert not os.path.exists(os.path.dirname(cwd))


def test_a_candidate_that_leaves_an_undeletable_tree_fails_alone(monkeypatch, sandbox):
    """Whatever happens to the clean-up, run_program returns a result and does not raise."""
    removed = []
    real = code_exec.remove_tree
    monkeypatch.setattr(code_exec, "remove_tree", lambda path: removed.append(real(path)) and False)
    assert run_program("pass\n", timeout=5, sandbox=sandbox) == (True, "passed")
    assert removed == [True]  # removed after all: the test leaves nothing behind


def test_a_fifo_in_place_of_the_evaluators_files_does_not_block(sandbox):
    """Without bubblewrap the program can reach its work folder's parent, where the evaluator
    keeps its stdout and stderr files: replaced by FIFOs, reopening them would block forever.
    The evaluator reads them only through the descriptors it opened before the program ran."""
    program = (
        "import os, sys\n"
        "for name in ['stdout.txt', 'stderr.txt', 'program.py', 'stdin.txt']:\n"
        "    path = os.path.join('..', name)\n"
        "    try:\n"
        "        os.unlink(path)\n"
        "    except OSError:\n"
        "        pass\n"
        "    try:\n"
        "        os.mkfifo(path)\n"
        "    except OSError:\n"
        "        pass\n"
        "sys.exit('replaced')\n"
    )
    outcome: list = []
    worker = threading.Thread(
        target=lambda: outcome.append(run_program(program, timeout=5, sandbox=sandbox)),
        daemon=True,
    )
    worker.start()
    worker.join(15)
    assert not worker.is_alive(), "the evaluator blocks on a FIFO the program made"
    assert outcome == [(False, "failed: replaced")]
    outcome.clear()
    worker = threading.Thread(
        target=lambda: outcome.append(code_exec.check_program(program, timeout=3, sandbox=sandbox)),
        daemon=True,
    )
    worker.start()
    worker.join(15)
    assert not worker.is_alive(), "the evaluator blocks on a FIFO the program made"
    assert outcome and outcome[0][0] is False


def test_code_isolation_records_what_contained_the_programs():
    record = code_exec.isolation_record()
    assert record["mode"] == isolation_mode()
    assert record["limits"]["address_space_bytes_per_process"] == code_exec.MEMORY_LIMIT_BYTES
    if _bwrap_usable():
        assert record["limits"]["tmpfs_bytes_each"] == code_exec.TMPFS_SIZE_BYTES
    if record["mode"] == code_exec.BWRAP_ISOLATION:
        assert record["host_uid"] != 0
        assert record["limits"]["process_count"] == "pid namespace + RLIMIT_NPROC"
    else:
        assert any("no sandbox" in line for line in record["not_kept"])
    if os.geteuid() == 0 and record["mode"] != code_exec.BWRAP_ISOLATION:
        assert any("uid 0" in line for line in record["not_kept"])
    json.dumps(record)  # it goes into general.json as it is


def test_remove_tree_follows_no_link_and_removes_locked_folders(tmp_path):
    from loki_pipeline.evaluate.code_cleanup import remove_tree

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "link").symlink_to(outside)
    (tree / "a" / "b" / "file").write_text("x")
    os.mkfifo(tree / "a" / "fifo")
    (tree / "a" / "b").chmod(0)
    assert remove_tree(tree) is True and not tree.exists()
    assert (outside / "keep.txt").read_text() == "x"
    assert remove_tree(tree) is True  # already gone: nothing to do, no error
