"""Write the worked example's training data, deterministically (stdlib only).

    python data/make_example_task.py        # rewrites data/example_task/train.json

``example_task/train.json`` is a small task in LLaMA-Factory's alpaca format (a JSON list of
``{"instruction", "input", "output"}`` rows, its default columns), written for this project:
one row per country, asking for its capital in one of three phrasings (two put the country in
the instruction, one in ``input``), answered with the city's name and nothing else.

Why this skill: SmolLM2-135M-Instruct knows many capitals but answers in a sentence ("The
capital of France is Paris."), so its exact match on held-out countries starts near 0 and a
few dozen training steps on CPU visibly teach it the bare answer, while the knowledge the
answers draw on is the kind LoKI is meant to protect. Countries whose capital is disputed or
split (Bolivia, South Africa, ...) are left out, so every answer has one right spelling.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

CAPITALS = [
    ("Afghanistan", "Kabul"), ("Albania", "Tirana"), ("Algeria", "Algiers"),
    ("Andorra", "Andorra la Vella"), ("Angola", "Luanda"), ("Argentina", "Buenos Aires"),
    ("Armenia", "Yerevan"), ("Australia", "Canberra"), ("Austria", "Vienna"),
    ("Azerbaijan", "Baku"), ("Bahrain", "Manama"), ("Bangladesh", "Dhaka"),
    ("Belarus", "Minsk"), ("Belgium", "Brussels"), ("Belize", "Belmopan"),
    ("Bhutan", "Thimphu"), ("Botswana", "Gaborone"), ("Brazil", "Brasília"),
    ("Bulgaria", "Sofia"), ("Burkina Faso", "Ouagadougou"), ("Burundi", "Gitega"),
    ("Cambodia", "Phnom Penh"), ("Cameroon", "Yaoundé"), ("Canada", "Ottawa"),
    ("Chad", "N'Djamena"), ("Chile", "Santiago"), ("China", "Beijing"),
    ("Colombia", "Bogotá"), ("Costa Rica", "San José"), ("Croatia", "Zagreb"),
    ("Cuba", "Havana"), ("Cyprus", "Nicosia"), ("Czechia", "Prague"),
    ("Denmark", "Copenhagen"), ("Djibouti", "Djibouti"), ("Dominican Republic", "Santo Domingo"),
    ("Ecuador", "Quito"), ("Egypt", "Cairo"), ("El Salvador", "San Salvador"),
    ("Eritrea", "Asmara"), ("Estonia", "Tallinn"), ("Ethiopia", "Addis Ababa"),
    ("Fiji", "Suva"), ("Finland", "Helsinki"), ("France", "Paris"),
    ("Gabon", "Libreville"), ("Georgia", "Tbilisi"), ("Germany", "Berlin"),
    ("Ghana", "Accra"), ("Greece", "Athens"), ("Guatemala", "Guatemala City"),
    ("Guinea", "Conakry"), ("Guyana", "Georgetown"), ("Haiti", "Port-au-Prince"),
    ("Honduras", "Tegucigalpa"), ("Hungary", "Budapest"), ("Iceland", "Reykjavik"),
    ("India", "New Delhi"), ("Indonesia", "Jakarta"), ("Iran", "Tehran"),
    ("Iraq", "Baghdad"), ("Ireland", "Dublin"), ("Italy", "Rome"),
    ("Jamaica", "Kingston"), ("Japan", "Tokyo"), ("Jordan", "Amman"),
    ("Kazakhstan", "Astana"), ("Kenya", "Nairobi"), ("Kuwait", "Kuwait City"),
    ("Kyrgyzstan", "Bishkek"), ("Laos", "Vientiane"), ("Latvia", "Riga"),
    ("Lebanon", "Beirut"), ("Liberia", "Monrovia"), ("Libya", "Tripoli"),
    ("Lithuania", "Vilnius"), ("Luxembourg", "Luxembourg"), ("Madagascar", "Antananarivo"),
    ("Malawi", "Lilongwe"), ("Malaysia", "Kuala Lumpur"), ("Mali", "Bamako"),
    ("Malta", "Valletta"), ("Mauritania", "Nouakchott"), ("Mexico", "Mexico City"),
    ("Moldova", "Chișinău"), ("Monaco", "Monaco"), ("Mongolia", "Ulaanbaatar"),
    ("Montenegro", "Podgorica"), ("Morocco", "Rabat"), ("Mozambique", "Maputo"),
    ("Namibia", "Windhoek"), ("Nepal", "Kathmandu"), ("Netherlands", "Amsterdam"),
    ("New Zealand", "Wellington"), ("Nicaragua", "Managua"), ("Niger", "Niamey"),
    ("Nigeria", "Abuja"), ("North Korea", "Pyongyang"), ("North Macedonia", "Skopje"),
    ("Norway", "Oslo"), ("Oman", "Muscat"), ("Pakistan", "Islamabad"),
    ("Panama", "Panama City"), ("Paraguay", "Asunción"), ("Peru", "Lima"),
    ("Philippines", "Manila"), ("Poland", "Warsaw"), ("Portugal", "Lisbon"),
    ("Qatar", "Doha"), ("Romania", "Bucharest"), ("Russia", "Moscow"),
    ("Rwanda", "Kigali"), ("Saudi Arabia", "Riyadh"), ("Senegal", "Dakar"),
    ("Serbia", "Belgrade"), ("Sierra Leone", "Freetown"), ("Singapore", "Singapore"),
    ("Slovakia", "Bratislava"), ("Slovenia", "Ljubljana"), ("Somalia", "Mogadishu"),
    ("South Korea", "Seoul"), ("South Sudan", "Juba"), ("Spain", "Madrid"),
    ("Sudan", "Khartoum"), ("Suriname", "Paramaribo"), ("Sweden", "Stockholm"),
    ("Switzerland", "Bern"), ("Syria", "Damascus"), ("Tajikistan", "Dushanbe"),
    ("Thailand", "Bangkok"), ("Togo", "Lomé"), ("Tunisia", "Tunis"),
    ("Turkey", "Ankara"), ("Turkmenistan", "Ashgabat"), ("Uganda", "Kampala"),
    ("Ukraine", "Kyiv"), ("United Arab Emirates", "Abu Dhabi"),
    ("United Kingdom", "London"), ("United States", "Washington, D.C."),
    ("Uruguay", "Montevideo"), ("Uzbekistan", "Tashkent"), ("Venezuela", "Caracas"),
    ("Vietnam", "Hanoi"), ("Yemen", "Sana'a"), ("Zambia", "Lusaka"), ("Zimbabwe", "Harare"),
]  # fmt: skip


def rows() -> list[dict[str, str]]:
    """One alpaca row per country; the phrasing rotates so both prompt columns are used."""
    out = []
    for i, (country, capital) in enumerate(CAPITALS):
        if i % 3 == 0:
            row = {"instruction": f"What is the capital of {country}?", "input": ""}
        elif i % 3 == 1:
            row = {"instruction": "Name the capital city of this country.", "input": country}
        else:
            row = {"instruction": f"Which city is the capital of {country}?", "input": ""}
        out.append({**row, "output": capital})
    return out


def main() -> None:
    path = HERE / "example_task" / "train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path} ({len(CAPITALS)} rows)")


if __name__ == "__main__":
    main()
