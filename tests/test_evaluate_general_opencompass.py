"""The OpenCompass protocol: OpenCompass's generative configs of the six benchmarks in lm-eval.

Oracles: prompts are OpenCompass's templates filled by hand from the data files (and wrapped in
the tiny tokenizer's chat template); extraction cases are worked through OpenCompass's pattern
list by hand; scores of a scripted model follow from the gold answers in the data files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_evaluate_general import OFFICIAL_YAML

from loki_pipeline.data.lm_eval_items import (
    default_data_dir,
    opencompass_tasks_dir,
    write_local_tasks,
)
from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate.general import (
    DEFAULT_METRICS,
    PROTOCOL_METRICS,
    TASKS,
    check_tasks,
    evaluate_general,
)
from loki_pipeline.evaluate.opencompass import (
    OPENCOMPASS_COMMIT,
    OPENCOMPASS_CONFIGS,
    first_option_postprocess,
    gsm8k_postprocess,
    gsm8k_score,
    humaneval_postprocess_v2,
    triviaqa_score,
)
from loki_pipeline.evaluate.settings import GeneralEvalSettings

DATA = Path(__file__).resolve().parents[1] / "data" / "lm_eval"


def first_row(rel: str) -> dict:
    return json.loads((DATA / rel).read_text().splitlines()[0])


def chat(tokenizer, *turns: tuple[str, str]) -> str:
    messages = [{"role": role, "content": text} for role, text in turns]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def load_tasks(tmp_path: Path, tasks: list[str]) -> dict:
    from lm_eval.tasks import TaskManager

    include = write_local_tasks(tmp_path / "tasks", DATA, tasks, "opencompass")
    return TaskManager(include_path=str(include), include_defaults=False).load_task_or_group(tasks)


def rendered(task, tokenizer) -> str:
    """The first item's prompt as lm-eval builds it for a chat model under this protocol."""
    doc = task.eval_docs[0]
    return task.fewshot_context(
        doc,
        task.config.num_fewshot or 0,
        apply_chat_template=True,
        fewshot_as_multiturn=True,
        chat_template=lambda msgs, add_generation_prompt=True: tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=add_generation_prompt
        ),
    )


# --- prompts -----------------------------------------------------------------------------


def test_each_yaml_names_the_opencompass_config_and_commit_it_mirrors():
    for task in TASKS:
        text = (opencompass_tasks_dir() / f"{task}.yaml").read_text()
        assert OPENCOMPASS_COMMIT in text, task
        assert f"opencompass/configs/datasets/{OPENCOMPASS_CONFIGS[task]}" in text, task


@pytest.mark.parametrize("task", TASKS)
def test_hub_tasks_read_the_same_items_as_lm_evals_official_tasks(task):
    """Under source hub both protocols ask the same questions: dataset and split as lm-eval's."""
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    from loki_pipeline.data.lm_eval_items import official_tasks_dir

    manager = TaskManager(include_path=str(opencompass_tasks_dir()), include_defaults=False)
    assert set(TASKS) <= set(manager.all_tasks)
    ours = load_yaml(opencompass_tasks_dir() / f"{task}.yaml", resolve_func=False)
    official_yaml = OFFICIAL_YAML[task]
    official = load_yaml(official_tasks_dir() / official_yaml, resolve_func=False)
    used = ("validation_split", "test_split")
    assert ours["task"] == task and ours["output_type"] == "generate_until"
    for key in ("dataset_path", "dataset_name"):
        assert ours.get(key) == official.get(key), key
    split = next(ours[k] for k in used if ours.get(k))
    assert split == next(official[k] for k in used if official.get(k))


def test_rendered_prompts_equal_the_opencompass_templates_filled_by_hand(tmp_path, tiny_tokenizer):
    tasks = load_tasks(tmp_path, ["hellaswag", "winogrande", "triviaqa", "humaneval", "ifeval"])
    h = first_row("hellaswag/validation.jsonl")
    # hellaswag_gen_6faab5 on ctx = "A man fills ... When the water boils, he"
    hellaswag = (
        f"{h['ctx_a']} {h['ctx_b']}\nQuestion: Which ending makes the most sense?\n"
        f"A. {h['endings'][0]}\nB. {h['endings'][1]}\nC. {h['endings'][2]}\n"
        f"D. {h['endings'][3]}\nYou may choose from 'A', 'B', 'C', 'D'.\nAnswer:"
    )
    assert hellaswag.startswith("A man fills a kettle with water and switches it on. When the")
    w = first_row("winogrande/validation.jsonl")
    winogrande = (
        "Question: The trophy did not fit into the suitcase because the _ was too big.\n"
        "A. trophy\nB. suitcase\nAnswer:"
    )
    assert w["sentence"] in winogrande
    t = first_row("triviaqa/validation.jsonl")
    triviaqa = (
        "Answer these questions, your answer should be as simple as possible, start your "
        "answer with the prompt 'The answer is '.\nQ: What is the capital city of France?"
    )
    assert t["question"] == "What is the capital city of France"
    he = first_row("humaneval/test.jsonl")
    humaneval = "Complete the following python code:\n" + he["prompt"]
    ifeval = first_row("ifeval/train.jsonl")["prompt"]
    expected = {
        "hellaswag": hellaswag,
        "winogrande": winogrande,
        "triviaqa": triviaqa,
        "humaneval": humaneval,
        "ifeval": ifeval,
    }
    for name, task in tasks.items():
        assert rendered(task, tiny_tokenizer) == chat(tiny_tokenizer, ("user", expected[name]))


def test_gsm8k_asks_with_the_configs_four_worked_examples_as_chat_turns(tmp_path, tiny_tokenizer):
    task = load_tasks(tmp_path, ["gsm8k"])["gsm8k"]
    doc = task.eval_docs[0]
    messages = []
    task.fewshot_context(
        doc,
        task.config.num_fewshot,
        apply_chat_template=True,
        fewshot_as_multiturn=True,
        chat_template=lambda msgs, add_generation_prompt=True: messages.extend(msgs) or "",
    )
    assert [m["role"] for m in messages] == ["user", "assistant"] * 4 + ["user"]
    assert messages[-1]["content"] == (
        f"Question: {doc['question']}\nLet's think step by step\nAnswer:"
    )
    assert messages[0]["content"].startswith("Question: Angelo and Melanie want to plan")
    assert messages[0]["content"].endswith("each day?\nLet's think step by step\nAnswer:")
    for answer, n in zip(messages[1::2], [4, 201, 140, 146], strict=True):
        assert answer["content"].endswith(f"\nThe answer is {n}\n")  # the newline kept
    assert messages[4]["content"].startswith("Question: Bella has two times as many marbles")


# --- answer extraction and scoring ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "options", "letter"),
    [
        ("The answer is B.", "ABCD", "B"),
        ("Answer: C", "ABCD", "C"),
        ("  D", "ABCD", "D"),
        ("i think the second one", "ABCD", ""),  # no capital option letter: nothing extracted
        ("yes", "AB", ""),
        ("", "AB", ""),
        ("Both could work, but A fits", "AB", "B"),  # the cushion takes the first letter: B
        ("Option C", "AB", ""),  # C is not an option of WinoGrande
    ],
)
def test_first_option_postprocess_as_opencompass_extracts(text, options, letter):
    assert first_option_postprocess(text, options) == letter


def test_triviaqa_gsm8k_and_humaneval_extraction():
    doc = {"answer": {"aliases": ["Paris", "Paris, France"]}}
    assert triviaqa_score(doc, ["The answer is Paris.\nMore text"]) == {"score": 1.0}
    assert triviaqa_score(doc, ["A: the city of Paris"]) == {"score": 1.0}  # substring
    assert triviaqa_score(doc, ["Lyon\nThe answer is Paris"]) == {"score": 0.0}  # first line
    assert gsm8k_postprocess("3 + 4 = 7, so 7 apples.\nQuestion: 99") == "7"
    assert gsm8k_postprocess("no digits") == "NULL"
    assert gsm8k_score({"answer": "x\n#### 1,200"}, ["1200.0"]) == {"accuracy": 1.0}
    assert gsm8k_score({"answer": "x\n#### 12"}, ["NULL"]) == {"accuracy": 0.0}
    fenced = "Here:\n```python\ndef f():\n    return 1\n```\nand ```\nx\n```"
    assert humaneval_postprocess_v2(fenced) == "def f():\n    return 1\n"
    assert humaneval_postprocess_v2("    return 1\n") == "    return 1\n"


def test_protocol_is_checked_and_opencompass_has_only_the_six_tasks():
    with pytest.raises(LokiInputError, match="protocol"):
        check_tasks(["gsm8k"], "hub", {}, "helm")
    with pytest.raises(LokiInputError, match="unknown general-ability task 'mmlu'"):
        check_tasks(["mmlu"], "hub", {"mmlu": "acc,none"}, "opencompass")
    assert check_tasks(["mmlu"], "hub", {"mmlu": "acc,none"}, "lm-eval") == ["mmlu"]
    assert set(PROTOCOL_METRICS["opencompass"]) == set(TASKS)
    assert PROTOCOL_METRICS["lm-eval"] == DEFAULT_METRICS


def test_cli_passes_the_protocol(monkeypatch):
    import loki_pipeline.evaluate.general as general
    from loki_pipeline.cli import main

    seen = {}
    fake = lambda *a, **kw: seen.update(a=a) or {"scores": {}}  # noqa: E731
    monkeypatch.setattr(general, "evaluate_general", fake)
    argv = ["eval-general", "--model", "m", "--out", "g.json"]
    assert main([*argv, "--protocol", "opencompass"]) == 0
    assert seen["a"][2] == GeneralEvalSettings(protocol="opencompass", data_dir=default_data_dir())
    assert main(argv) == 0
    assert seen["a"][2].protocol == "lm-eval"  # the schema's default
    with pytest.raises(SystemExit):
        main([*argv, "--protocol", "helm"])


# --- a scripted model through the whole run --------------------------------------------------


def scripted(monkeypatch, answer: str) -> None:
    """Every generated answer is ``answer``; log-likelihoods stay the tiny model's own."""
    from lm_eval.models.huggingface import HFLM

    monkeypatch.setattr(
        HFLM, "generate_until", lambda self, requests, **kw: [answer] * len(requests)
    )


def run(tiny_checkpoint, tmp_path, protocol: str) -> dict:
    return evaluate_general(
        tiny_checkpoint,
        tmp_path / protocol / "general.json",
        tasks=["hellaswag", "winogrande"],
        protocol=protocol,
        batch_size=4,
    )


def test_a_model_that_never_names_an_option_scores_zero_only_under_opencompass(
    tiny_checkpoint, tmp_path, monkeypatch
):
    """The paper's LB-Reranker row: 0.00 on HellaSwag and WinoGrande, impossible under lm-eval's
    log-likelihood scoring, where some ending is always the likeliest."""
    scripted(monkeypatch, "i would rather rank passages.")
    oc = run(tiny_checkpoint, tmp_path, "opencompass")
    assert oc["scores"] == {"hellaswag": 0.0, "winogrande": 0.0}
    assert oc["protocol"] == "opencompass"
    assert oc["metrics"] == {k: PROTOCOL_METRICS["opencompass"][k] for k in oc["scores"]}
    lm = run(tiny_checkpoint, tmp_path, "lm-eval")
    assert lm["scores"]["hellaswag"] > 0 and lm["scores"]["winogrande"] > 0


def test_a_model_that_always_answers_b_scores_the_share_of_b_golds(
    tiny_checkpoint, tmp_path, monkeypatch
):
    scripted(monkeypatch, "The answer is B.")
    oc = run(tiny_checkpoint, tmp_path, "opencompass")
    hella = [json.loads(x)["label"] for x in (DATA / "hellaswag/validation.jsonl").open()]
    wino = [json.loads(x)["answer"] for x in (DATA / "winogrande/validation.jsonl").open()]
    assert oc["scores"] == {
        "hellaswag": hella.count("1") / len(hella),
        "winogrande": wino.count("2") / len(wino),
    }
    # the report reads the per-item values of the protocol's metric, from general.json or from
    # lm-eval's bare results.json (whose tables only hold the OpenCompass keys)
    from loki_pipeline.report.forgetting import load_item_scores, load_scores

    summary = tmp_path / "opencompass" / "general.json"
    bare = summary.parent / "lm_eval" / "results.json"
    for path in (summary, bare):
        assert load_scores(path) == oc["scores"]
        items = load_item_scores(path)
        assert {t: float(items[t].values.mean()) for t in items} == oc["scores"]
        assert items["hellaswag"].n == 20 and items["winogrande"].n == 20
