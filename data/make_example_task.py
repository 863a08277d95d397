"""Write the worked example's training data, deterministically (stdlib only).

    python data/make_example_task.py        # rewrites data/example_task/train.json

``example_task/train.json`` is a small task in LLaMA-Factory's alpaca format (a JSON list of
``{"instruction", "input", "output"}`` rows, its default columns), written for this project:
a sentence that mentions one city, and the question which city it is, answered with the city's
name and nothing else. Two of every three rows put the sentence in ``input``; the third puts it
in the instruction, so both prompt columns are used.

Why this skill: SmolLM2-135M-Instruct finds the city but answers in a sentence ("The city
mentioned in the sentence is Oslo."), so its exact match on held-out rows starts near 0, and a
few dozen training steps on a CPU visibly teach it the bare answer. The answer is in the
prompt, so what is learned is the task, not facts: capitals (an earlier draft of this set) were
answered from the model's knowledge, which it only reaches in a sentence of its own; their
exact match stayed near 10% however the task was trained.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

CITIES = [
    "Lisbon", "Oslo", "Nairobi", "Lima", "Toronto", "Cairo", "Sydney", "Mumbai", "Berlin",
    "Seoul", "Mexico City", "Reykjavik", "Denver", "Istanbul", "Buenos Aires", "Hanoi",
    "Cape Town", "Vienna", "Santiago", "Kyoto", "Marrakesh", "Edinburgh", "Montreal", "Dublin",
    "Helsinki", "Bangkok", "Rio de Janeiro", "Prague", "Auckland", "Seville", "Krakow",
    "Vancouver", "Accra", "Manila", "Florence", "Tbilisi", "Havana", "Porto", "Osaka", "Bogotá",
    "Zurich", "Kuala Lumpur", "Glasgow", "Valencia", "Chicago", "Dakar", "Hamburg", "Quito",
]  # fmt: skip

SENTENCES = [
    "My cousin moved to {city} last spring.",
    "The conference in {city} was postponed until next year.",
    "We changed planes in {city} on the way home.",
    "She grew up in {city} before studying abroad.",
    "The best pastry I ever ate came from a small bakery in {city}.",
    "Our team opened a new office in {city} this month.",
    "He sent me a postcard from {city} with a picture of the harbour.",
    "The night train to {city} leaves at seven.",
    "They spent a week walking around {city} in the rain.",
    "A science museum opened in {city} yesterday.",
    "Runners from forty countries came to the marathon in {city}.",
    "After two days of meetings in {city}, the delegates flew back.",
]

QUESTIONS = ("Which city is mentioned in this sentence?", "Name the city in the sentence below.")


def rows() -> list[dict[str, str]]:
    """Three rows per city, each with another sentence; every third asks in one line."""
    out = []
    for i, city in enumerate(CITIES):
        for j in range(3):
            k = 3 * i + j
            sentence = SENTENCES[(i + 5 * j) % len(SENTENCES)].format(city=city)
            if j == 2:
                row = {"instruction": f"Which city does this sentence mention: {sentence}",
                       "input": ""}  # fmt: skip
            else:
                row = {"instruction": QUESTIONS[k % 2], "input": sentence}
            out.append({**row, "output": city})
    return out


def main() -> None:
    path = HERE / "example_task" / "train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path} ({len(rows())} rows)")


if __name__ == "__main__":
    main()
