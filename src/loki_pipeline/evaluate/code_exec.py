"""The project's own pass@k executor for HumanEval, replacing ``evaluate.load("code_eval")``.

lm-eval's humaneval task calls ``evaluate.load("code_eval")`` when its ``utils`` module is
imported; that needs the Hugging Face hub and fails offline. :func:`code_eval_registered`
makes that call return a :class:`CodeEval` instead, with the same ``compute`` contract, so the
official task (prompt, stop sequences, ``build_predictions`` filter, ``pass@1`` metric) runs
unchanged.

Model-written code is untrusted. It runs only when the caller allows it, each program in its
own ``python -I`` subprocess (isolated mode: no user site-packages, no ``PYTHON*`` variables,
no script directory on ``sys.path``) with stdin closed and stdout discarded, contained by
(:func:`isolation_mode` says which applied; :class:`CodeEval` logs it once per evaluation):

- always: a fresh temporary working directory (also ``HOME`` and ``TMPDIR``; the environment
  holds nothing else but ``PATH``), deleted afterwards; a new session whose whole process group
  is killed with SIGKILL at the time limit and after the program exits, so no child it started
  outlives it; resource limits on CPU seconds, address space, file size (a bigger write fails
  with ``EFBIG``), open files, core dumps (none) and processes (``RLIMIT_NPROC``: the user's
  current count plus ``EXTRA_PROCESSES``; the kernel does not enforce it for root);
- when bubblewrap (``bwrap``) is installed and works here (a probe runs once; it fails where
  user namespaces are not allowed, e.g. in some containers): its sandbox on top, with every
  namespace unshared (no network, own PIDs: a child that leaves the process group still dies
  with the sandbox), no capabilities, a read-only root, a private ``/tmp`` and ``/dev``, and
  the working directory as the only writable host path.

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
from math import comb

import numpy as np

from loki_pipeline.errors import LokiInputError

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
EXTRA_PROCESSES = 64
#: Bytes read from the end of a failed program's stderr for its reason.
STDERR_TAIL_BYTES = 4096

BWRAP_ISOLATION = "bubblewrap (no network, read-only root) + rlimits + process group"
FALLBACK_ISOLATION = "rlimits + process group (bubblewrap not available)"


def estimate_pass_at_k(
    num_samples: Sequence[int], num_correct: Sequence[int], k: int
) -> np.ndarray:
    """Unbiased pass@k per problem (Chen et al., 2021): ``1 - C(n - c, k) / C(n, k)``."""
    out = []
    for n, c in zip(num_samples, num_correct, strict=True):
        out.append(1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k))
    return np.asarray(out, dtype=np.float64)


def _bwrap_argv(bwrap: str, workdir: str) -> list[str]:
    """bubblewrap's command prefix: nothing writable but ``workdir``, no network, own PIDs."""
    return [
        bwrap,
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
        *[arg for path in _interpreter_dirs_under_tmp() for arg in ("--ro-bind", path, path)],
        "--bind",
        workdir,
        workdir,
        "--chdir",
        workdir,
        "--",
    ]


def _interpreter_dirs_under_tmp() -> list[str]:
    """This Python's folders that the sandbox's private ``/tmp`` would hide (a virtualenv made
    under /tmp, as CI clones often are): bound read-only again, so the interpreter still runs."""
    dirs = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    under = [d for d in dirs if os.path.realpath(d).startswith("/tmp/")]
    return sorted({os.path.realpath(d) for d in under} | set(under))


def _env(workdir: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", os.defpath), "HOME": workdir, "TMPDIR": workdir}


@functools.cache
def _bwrap() -> str | None:
    """Path of a bubblewrap that runs this Python here, probed once; None when there is none."""
    found = shutil.which("bwrap")
    if found is None or os.name != "posix":
        return None
    with tempfile.TemporaryDirectory(prefix="loki-code-probe-") as workdir:
        argv = [*_bwrap_argv(found, workdir), sys.executable, "-I", "-c", "pass"]
        try:
            probe = subprocess.run(
                argv, env=_env(workdir), stdin=subprocess.DEVNULL, capture_output=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError) as err:
            log.debug("bubblewrap probe failed: %s", err)
            return None
    if probe.returncode != 0:
        log.debug("bubblewrap probe failed: %s", probe.stderr.decode("utf-8", "replace").strip())
        return None
    return found


def isolation_mode() -> str:
    """How :func:`run_program` contains programs on this machine (for logs and result files)."""
    return BWRAP_ISOLATION if _bwrap() else FALLBACK_ISOLATION


def _user_processes() -> int | None:
    """Processes of this user now (from ``/proc``), or None where they cannot be counted."""
    uid = os.getuid()
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


def _rlimits(cpu_seconds: int) -> list[tuple[int, int]]:
    """(resource, limit) pairs for the child, computed here, each within the current hard limit."""
    wanted = [
        (resource.RLIMIT_CPU, cpu_seconds),
        (resource.RLIMIT_AS, MEMORY_LIMIT_BYTES),
        (resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT_BYTES),
        (resource.RLIMIT_NOFILE, OPEN_FILES_LIMIT),
        (resource.RLIMIT_CORE, 0),
    ]
    processes = _user_processes() if hasattr(resource, "RLIMIT_NPROC") else None
    if processes is not None:
        wanted.append((resource.RLIMIT_NPROC, processes + EXTRA_PROCESSES))
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


def _last_line(path: str) -> str:
    with open(path, "rb") as fh:
        fh.seek(max(0, os.fstat(fh.fileno()).st_size - STDERR_TAIL_BYTES))
        lines = fh.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else ""


def run_program(program: str, *, timeout: float, sandbox: bool | None = None) -> tuple[bool, str]:
    """Run one program contained (module docstring); (passed, reason). Exit status 0 = passed.

    ``sandbox``: run it under bubblewrap (``True``, an error where that does not work), without
    (``False``), or whenever it works here (``None``).
    """
    bwrap = _bwrap() if sandbox is not False else None
    if sandbox and bwrap is None:
        raise LokiInputError("sandbox=True, but bubblewrap (bwrap) is not installed or not usable")
    # A program cannot make the evaluation fail by leaving an undeletable file behind.
    with tempfile.TemporaryDirectory(prefix="loki-code-", ignore_cleanup_errors=True) as root:
        workdir = os.path.join(root, "work")
        os.mkdir(workdir)
        path = os.path.join(workdir, "program.py")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(program)
        argv = [sys.executable, "-I", path]
        if bwrap:
            argv = _bwrap_argv(bwrap, workdir) + argv
        limits = _rlimits(max(1, int(timeout) + 1)) if resource is not None else None
        preexec = (lambda: _set_rlimits(limits)) if limits else None
        stderr_path = os.path.join(root, "stderr.txt")  # a file: children cannot hold a pipe open
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(
                argv,
                cwd=workdir,
                env=_env(workdir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=preexec,  # noqa: PLW1509 - only setrlimit calls, nothing that locks
            )
            try:
                returncode: int | None = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                returncode = None
            finally:
                _kill_group(proc)
        reason = _last_line(stderr_path)
    if returncode is None:
        return False, "timed out"
    if returncode == 0:
        return True, "passed"
    return False, f"failed: {reason or f'exit status {returncode}'}"


class CodeEval:
    """Drop-in for the ``code_eval`` metric of Hugging Face ``evaluate``.

    ``compute(references, predictions, k)`` runs ``candidate + "\\n" + reference`` for every
    candidate of every problem and returns ``({"pass@k": mean over problems}, results)`` with
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
            outcomes = list(pool.map(lambda job: run_program(job[2], timeout=limit), jobs))
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
