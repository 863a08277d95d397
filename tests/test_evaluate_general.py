"""General-ability evaluation: pass@k executor, local task definitions and data, input checks.

The model-free parts, each against an independent oracle (subset enumeration for pass@k, the
official YAML loaded directly, the items' own canonical solutions, hand-split sentences).
"""

from __future__ import annotations

import itertools
import json
import re
import sys
import time
from pathlib import Path

import pytest

from loki_pipeline.data.lm_eval_items import (
    LOCAL_DATA_FILES,
    default_data_dir,
    official_tasks_dir,
    write_local_tasks,
)
from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate import code_exec
from loki_pipeline.evaluate.code_exec import CodeEval, code_eval_registered, estimate_pass_at_k
from loki_pipeline.evaluate.general import (
    DEFAULT_METRICS,
    TASKS,
    check_model_dir,
    check_tasks,
    evaluate_general,
    scores_from_results,
)
from loki_pipeline.evaluate.settings import GeneralEvalSettings

DATA = Path(__file__).resolve().parents[1] / "data" / "lm_eval"


#: lm-eval's official task file of each benchmark (under lm_eval/tasks/)
OFFICIAL_YAML = {
    "triviaqa": "triviaqa/default.yaml",
    "gsm8k": "gsm8k/gsm8k.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "winogrande": "winogrande/default.yaml",
    "humaneval": "humaneval/humaneval.yaml",
    "ifeval": "ifeval/ifeval.yaml",
}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- pass@k -------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "c", "k"), [(5, 0, 1), (5, 2, 1), (5, 2, 2), (6, 3, 4), (4, 4, 2)])
def test_pass_at_k_equals_fraction_of_k_subsets_with_a_pass(n, c, k):
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    expected = sum(any(s) for s in subsets) / len(subsets)
    assert estimate_pass_at_k([n], [c], k)[0] == pytest.approx(expected)


def test_canonical_solutions_pass_and_wrong_ones_fail():
    items = read_jsonl(DATA / "humaneval" / "test.jsonl")
    refs = [f"{it['test']}\ncheck({it['entry_point']})" for it in items]
    good = [[it["prompt"] + it["canonical_solution"]] for it in items]
    bad = [[it["prompt"] + "    return None\n"] for it in items]
    executor = CodeEval(allow=True, timeout=10, num_workers=2)
    scores, results = executor.compute(references=refs, predictions=good, k=[1])
    assert scores == {"pass@1": 1.0}, results
    scores, results = executor.compute(references=refs, predictions=bad, k=[1])
    assert scores == {"pass@1": 0.0}
    assert all(r[0][1]["result"].startswith("failed") for r in results.values())


def test_endless_program_is_stopped_at_the_time_limit():
    start = time.monotonic()
    passed, reason = code_exec.run_program("while True:\n    pass\n", timeout=1.0)
    assert not passed and reason == "timed out"
    assert time.monotonic() - start < 8


@pytest.mark.parametrize("char", ["\u00e9", "\U0001f600", "\x01", "a"])
def test_a_long_failure_text_is_kept_as_failed_whatever_its_characters(char):
    """The result line must fit the evaluator's tail read even when every character is escaped
    (before: 2000 non-ASCII characters cut the line, and the failure read as "timed out")."""
    from loki_pipeline.evaluate.humaneval_exec import RESULT_CHARS

    assert 12 * RESULT_CHARS + len('""\n') <= code_exec.STDERR_TAIL_BYTES
    passed, result = code_exec.check_program(
        f"raise ValueError({char * 2000!r})", timeout=3, sandbox=False
    )
    assert not passed
    assert result == ("failed: " + char * 2000)[:RESULT_CHARS]


def test_programs_run_in_isolated_mode_in_a_scratch_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "marker.txt").write_text("x")
    program = (
        "import os, sys\nassert sys.flags.isolated == 1\nassert not os.path.exists('marker.txt')\n"
    )
    assert code_exec.run_program(program, timeout=10) == (True, "passed")


def test_code_execution_is_refused_unless_allowed(tiny_checkpoint, tmp_path):
    with pytest.raises(LokiInputError, match="allow_code_execution"):
        CodeEval(allow=False).compute(references=["assert True"], predictions=[["x = 1"]], k=[1])
    with pytest.raises(LokiInputError, match="allow_code_execution"):
        evaluate_general(
            tiny_checkpoint, tmp_path / "g.json", GeneralEvalSettings(tasks=["humaneval"])
        )
    assert not (tmp_path / "g.json").exists()


def test_official_humaneval_metric_uses_the_registered_executor():
    """lm-eval's own humaneval utils, loaded the way lm-eval loads them, score through ours."""
    import evaluate as hf_evaluate
    from lm_eval.tasks._yaml_loader import _import_func_in_yml

    original = hf_evaluate.load
    executor = CodeEval(allow=True, timeout=10)
    with code_eval_registered(executor):
        assert hf_evaluate.load("code_eval") is executor
        pass_at_k = _import_func_in_yml("utils.pass_at_k", official_tasks_dir() / "humaneval")
        ok = pass_at_k(
            references=["assert f() == 2"], predictions=[["def f():\n    return 2"]], k=[1]
        )
        wrong = pass_at_k(
            references=["assert f() == 2"], predictions=[["def f():\n    return 3"]], k=[1]
        )
    assert ok == {"pass@1": 1.0} and wrong == {"pass@1": 0.0}
    assert executor.programs_run >= 2  # its import-time self-check ran here too, not on the hub
    assert hf_evaluate.load is original
    assert code_exec.HUMANEVAL_UTILS not in sys.modules


# --- local task definitions and data ---------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_local_task_is_the_official_task_on_project_files(task, tmp_path):
    from lm_eval.tasks._yaml_loader import load_yaml

    include = write_local_tasks(tmp_path, DATA, [task])
    local = load_yaml(include / f"{task}.yaml", resolve_func=False)
    official_yaml = OFFICIAL_YAML[task]
    official = load_yaml(official_tasks_dir() / official_yaml, resolve_func=False)
    data_keys = {"dataset_path", "dataset_name", "dataset_kwargs", "training_split"}
    assert {k: v for k, v in local.items() if k not in data_keys} == {
        k: v for k, v in official.items() if k not in data_keys
    }
    assert local["dataset_path"] == "json" and local["dataset_name"] is None
    files = local["dataset_kwargs"]["data_files"]
    assert sorted(Path(p).resolve() for p in files.values()) == sorted(
        (DATA / rel).resolve() for rel in LOCAL_DATA_FILES[task]
    )
    # every split the official task reads is shipped, or switched off
    for split_key in ("training_split", "validation_split", "test_split", "fewshot_split"):
        split = local.get(split_key)
        assert split is None or split in files, (split_key, split)


def test_gsm8k_items_are_arithmetically_right():
    for split in ("train", "test"):
        for row in read_jsonl(DATA / "gsm8k" / f"{split}.jsonl"):
            for expr, value in re.findall(r"<<([^=>]+)=([^>]+)>>", row["answer"]):
                assert eval(expr) == float(value), row  # noqa: S307 - our own arithmetic
            final = row["answer"].rsplit("#### ", 1)[1]
            last_calc = re.findall(r"<<[^=]+=([^>]+)>>", row["answer"])[-1]
            assert final == last_calc


def test_multiple_choice_items_have_one_valid_gold_answer():
    for row in read_jsonl(DATA / "hellaswag" / "validation.jsonl"):
        assert row["ctx"] == f"{row['ctx_a']} {row['ctx_b']}"
        assert len(row["endings"]) == 4 and row["label"] in {"0", "1", "2", "3"}
    for row in read_jsonl(DATA / "winogrande" / "validation.jsonl"):
        assert row["sentence"].count("_") == 1 and row["answer"] in {"1", "2"}
    for split in ("train", "validation"):
        for row in read_jsonl(DATA / "triviaqa" / f"{split}.jsonl"):
            assert row["answer"]["value"] in row["answer"]["aliases"]


def test_ifeval_items_use_registered_instructions_with_valid_arguments():
    from loki_pipeline.evaluate.ifeval_offline import punkt_fallback

    with punkt_fallback():
        from lm_eval.tasks.ifeval import instructions_registry

        for row in read_jsonl(DATA / "ifeval" / "train.jsonl"):
            assert len(row["instruction_id_list"]) == len(row["kwargs"])
            for iid, kwargs in zip(row["instruction_id_list"], row["kwargs"], strict=True):
                instruction = instructions_registry.INSTRUCTION_DICT[iid](iid)
                instruction.build_description(**kwargs)  # raises on a wrong argument


def test_untrained_punkt_fallback_splits_plain_sentences_and_keeps_abbreviations(monkeypatch):
    import nltk

    from loki_pipeline.evaluate import ifeval_offline

    monkeypatch.setattr(ifeval_offline, "punkt_available", lambda: False)
    text = "Dr. Smith arrived at 5 p.m. today. Was he late? No! He was early, e.g. by an hour."
    with ifeval_offline.punkt_fallback() as installed:
        assert installed
        got = nltk.tokenize.PunktTokenizer("english").tokenize(text)
        words = nltk.word_tokenize("THE SEA is BLUE.")
    assert got == [
        "Dr. Smith arrived at 5 p.m. today.",
        "Was he late?",
        "No!",
        "He was early, e.g. by an hour.",
    ]
    assert words == ["THE", "SEA", "is", "BLUE", "."]


# --- input checks and result parsing ---------------------------------------------------------


def test_not_a_checkpoint_is_rejected_with_the_reason(tmp_path):
    with pytest.raises(LokiInputError, match="does not exist"):
        check_model_dir(tmp_path / "missing")
    with pytest.raises(LokiInputError, match="no config.json"):
        check_model_dir(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(LokiInputError, match="no weights"):
        check_model_dir(tmp_path)


def test_unknown_or_repeated_tasks_and_bad_metrics_are_rejected():
    with pytest.raises(LokiInputError, match="unknown general-ability task 'mmlu'"):
        check_tasks(["mmlu"], "local", None)
    assert check_tasks(["mmlu"], "hub", {"mmlu": "acc,none"}) == ["mmlu"]
    with pytest.raises(LokiInputError, match="repeats"):
        check_tasks(["gsm8k", "gsm8k"], "local", None)
    with pytest.raises(LokiInputError, match="metric,filter"):
        check_tasks(["gsm8k"], "local", {"gsm8k": "exact_match"})
    with pytest.raises(LokiInputError, match="source"):
        check_tasks(["gsm8k"], "s3", None)


def test_missing_local_data_is_reported_before_loading_the_model(tiny_checkpoint, tmp_path):
    with pytest.raises(LokiInputError, match="hellaswag/validation.jsonl"):
        evaluate_general(
            tiny_checkpoint, tmp_path / "g.json", tasks=["hellaswag"], data_dir=tmp_path
        )


def test_scores_are_read_by_metric_and_filter_key():
    results = {
        "results": {
            "gsm8k": {
                "alias": "gsm8k",
                "exact_match,strict-match": 0.1,
                "exact_match,flexible-extract": 0.4,
            },
            "winogrande": {"acc,none": 0.55, "acc_stderr,none": 0.1},
        }
    }
    metrics = {"gsm8k": DEFAULT_METRICS["gsm8k"], "winogrande": DEFAULT_METRICS["winogrande"]}
    assert scores_from_results(results, metrics) == {"gsm8k": 0.4, "winogrande": 0.55}
    with pytest.raises(LokiInputError, match="no metric 'acc_norm,none'"):
        scores_from_results(results, {"winogrande": "acc_norm,none"})
    with pytest.raises(LokiInputError, match="no task 'ifeval'"):
        scores_from_results(results, {"ifeval": DEFAULT_METRICS["ifeval"]})


def test_cli_builds_the_settings_with_the_checkouts_data(monkeypatch):
    import loki_pipeline.evaluate.general as general
    from loki_pipeline.cli import main

    seen = {}
    fake = lambda *a, **kw: seen.update(a=a, kw=kw) or {"scores": {}}  # noqa: E731
    monkeypatch.setattr(general, "evaluate_general", fake)
    argv = ["eval-general", "--model", "m", "--out", "g.json", "--limit", "3", "--name", "tiny"]
    assert main(argv) == 0
    assert seen["a"] == ("m", "g.json", GeneralEvalSettings(limit=3, data_dir=default_data_dir()))
    assert seen["kw"] == {"model": "tiny", "run": None, "lm_eval_dir": None}
    assert main([*argv, "--data-dir", "d", "--device", "cpu"]) == 0
    assert (seen["a"][2].data_dir, seen["a"][2].device) == ("d", "cpu")


def test_cli_reports_a_bad_model_directory(tmp_path, capsys):
    from loki_pipeline.cli import main

    rc = main(["eval-general", "--model", str(tmp_path), "--out", str(tmp_path / "g.json")])
    assert rc == 2
    assert "no config.json" in capsys.readouterr().err


def test_lm_eval_output_with_a_missing_file_is_a_failed_write(tmp_path):
    """lm-eval's tracker swallows its write errors (full disk): a missing file must not pass."""
    from loki_pipeline.errors import LokiWriteError
    from loki_pipeline.evaluate.general import _keep_lm_eval_output

    written = tmp_path / "out"
    written.mkdir()
    (written / "results_2026-01-01T00-00-00.json").write_text("{}")
    (written / "samples_gsm8k_2026-01-01T00-00-00.jsonl").write_text("{}\n")
    dest = tmp_path / "lm_eval"
    with pytest.raises(LokiWriteError, match="missing samples.*ifeval"):
        _keep_lm_eval_output(written, dest, ["gsm8k", "ifeval"])
    assert not dest.exists()
    (written / "samples_ifeval_2026-01-01T00-00-00.jsonl").write_text("{}\n")
    assert _keep_lm_eval_output(written, dest, ["gsm8k", "ifeval"]) == dest / "results.json"
    assert sorted(p.name for p in dest.iterdir()) == [
        "results.json",
        "samples_gsm8k.jsonl",
        "samples_ifeval.jsonl",
    ]
