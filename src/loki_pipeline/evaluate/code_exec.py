"""The project's own pass@k executor for HumanEval, replacing ``evaluate.load("code_eval")``.

lm-eval's humaneval task calls ``evaluate.load("code_eval")`` when its ``utils`` module is
imported; that needs the Hugging Face hub and fails offline. :func:`code_eval_registered`
makes that call return a :class:`CodeEval` instead, with the same ``compute`` contract, so the
official task (prompt, stop sequences, ``build_predictions`` filter, ``pass@1`` metric) runs
unchanged.

Model-written code is untrusted. It runs only when the caller allows it, each program in its
own ``python -I`` subprocess (isolated mode: no user site-packages, no ``PYTHON*`` variables,
no current directory on ``sys.path``), in a fresh temporary directory, with stdin closed, a
wall-clock time limit and (on POSIX) CPU-time and memory limits. That is damage control, not a
sandbox: run it on a machine you do not mind a program misbehaving on.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from math import comb

import numpy as np

from loki_pipeline.errors import LokiInputError

#: Address-space limit of one test program (bytes); generous for Python, stops runaway memory.
MEMORY_LIMIT_BYTES = 2 << 30


def estimate_pass_at_k(
    num_samples: Sequence[int], num_correct: Sequence[int], k: int
) -> np.ndarray:
    """Unbiased pass@k per problem (Chen et al., 2021): ``1 - C(n - c, k) / C(n, k)``."""
    out = []
    for n, c in zip(num_samples, num_correct, strict=True):
        out.append(1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k))
    return np.asarray(out, dtype=np.float64)


def _limit_resources(cpu_seconds: int) -> None:  # pragma: no cover - runs in the child
    import resource

    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))


def run_program(program: str, *, timeout: float) -> tuple[bool, str]:
    """Run one program in a ``python -I`` subprocess; (passed, reason). Exit status 0 = passed."""
    with tempfile.TemporaryDirectory(prefix="loki-code-") as workdir:
        path = os.path.join(workdir, "program.py")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(program)
        cpu = max(1, int(timeout) + 1)
        preexec = (lambda: _limit_resources(cpu)) if os.name == "posix" else None
        try:
            proc = subprocess.run(
                [sys.executable, "-I", path],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                env={"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"},
                preexec_fn=preexec,  # noqa: PLW1509 - only sets rlimits, no threads touched
            )
        except subprocess.TimeoutExpired:
            return False, "timed out"
    if proc.returncode == 0:
        return True, "passed"
    tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    return False, f"failed: {tail[-1] if tail else f'exit status {proc.returncode}'}"


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
