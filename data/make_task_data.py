"""Write the project's own default task data, deterministically (stdlib only).

    python data/make_task_data.py            # rewrites data/toolace/train.json, data/reranker/train.jsonl

Both files use exactly the schemas of the real sets (as their dataset cards give them) so the same
loaders serve the embedded default and the paper config, but every item here was written for
this project; nothing is copied from ToolACE or lightblue's reranker data.

- ``toolace/train.json``: a JSON list of ``{"system", "conversations": [{"from", "value"}]}``.
  The system prompt lists the available tools as JSON (BFCL-style specs); assistant turns call
  them in bracket syntax ``[func(a="x", b=2)]``; the tools are everyday services and small
  maths and science calculations. Kinds: single calls, parallel calls, multi-turn dialogues with
  a ``tool`` result and a natural-language answer, requests no listed function serves (a tool's
  request with only other tools listed, ``unmatched``, or a general question) answered without
  a call, and requests missing a required argument answered with a question.
- ``reranker/train.jsonl``: one row per query/passage pair in the real set's column names
  (``question``, ``context``, ``mean_exp_val_max7_round`` = integer relevance 1-7).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

SEED = 20250522
HERE = Path(__file__).resolve().parent
NUM_DIALOGUES = 300

# --------------------------------------------------------------------------------------------
# ToolACE-style function-calling dialogues
# --------------------------------------------------------------------------------------------

SYSTEM_TEMPLATE = (
    "You are an expert in composing functions. You are given a question and a set of possible "
    "functions. Based on the question, you will need to make one or more function/tool calls to "
    "achieve the purpose. If none of the functions can be used, point it out. If the given "
    "question lacks the parameters required by the function, also point it out. You should only "
    "return the function calls in your response.\n"
    "If you decide to invoke any of the function(s), you MUST put it in the format of "
    "[func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]\n"
    "You SHOULD NOT include any other text in the response when you call a function.\n"
    "Here is a list of functions in JSON format that you can invoke.\n{tools}\n"
)

CITIES = [
    "Paris",
    "Tokyo",
    "Nairobi",
    "Lima",
    "Oslo",
    "Toronto",
    "Cairo",
    "Sydney",
    "Mumbai",
    "Berlin",
    "Seoul",
    "Mexico City",
    "Lisbon",
    "Reykjavik",
    "Denver",
    "Istanbul",
    "Hanoi",
    "Cape Town",
    "Buenos Aires",
    "Vienna",
]
AIRPORTS = ["CDG", "HND", "NBO", "LIM", "OSL", "YYZ", "CAI", "SYD", "BOM", "BER", "ICN", "LIS"]
CURRENCIES = ["USD", "EUR", "JPY", "GBP", "CHF", "CAD", "AUD", "INR", "BRL", "KRW", "SEK"]
SYMBOLS = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "SAP", "ASML", "TM", "SONY", "NFLX"]
INGREDIENTS = [
    "chickpeas",
    "salmon",
    "mushrooms",
    "lentils",
    "tofu",
    "eggplant",
    "chicken",
    "spinach",
    "sweet potato",
    "quinoa",
]
DIETS = ["vegan", "vegetarian", "gluten-free", "low-carb"]
TRANSLATIONS = {
    "Where is the train station?": {
        "French": "Où est la gare ?",
        "Spanish": "¿Dónde está la estación de tren?",
        "German": "Wo ist der Bahnhof?",
    },
    "Thank you for your help.": {
        "French": "Merci pour votre aide.",
        "Spanish": "Gracias por su ayuda.",
        "German": "Danke für Ihre Hilfe.",
    },
    "How much does this cost?": {
        "French": "Combien ça coûte ?",
        "Spanish": "¿Cuánto cuesta esto?",
        "German": "Wie viel kostet das?",
    },
    "Good morning!": {"French": "Bonjour !", "Spanish": "¡Buenos días!", "German": "Guten Morgen!"},
}
TIMEZONES = [
    "Europe/Paris",
    "Asia/Tokyo",
    "America/New_York",
    "Australia/Sydney",
    "America/Sao_Paulo",
    "Africa/Nairobi",
]
UNIT_PAIRS = [
    ("kilometers", "miles", 0.621371),
    ("pounds", "kilograms", 0.453592),
    ("liters", "gallons", 0.264172),
    ("inches", "centimeters", 2.54),
    ("celsius", "fahrenheit", None),
    ("feet", "meters", 0.3048),
]
EVENT_TITLES = [
    "Dentist appointment",
    "Team standup",
    "Lunch with Maria",
    "Project review",
    "Yoga class",
    "Call with the landlord",
    "Book club",
]
CUISINES = ["Thai", "Italian", "Ethiopian", "Peruvian", "Korean", "Lebanese"]
TOPICS = [
    "renewable energy",
    "space exploration",
    "football",
    "climate policy",
    "AI research",
    "public health",
]


def _date(rng: random.Random) -> str:
    return f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _spec(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {
        "name": name,
        "description": description,
        "parameters": {"type": "dict", "properties": properties, "required": required},
    }


def _p(kind: str, description: str, **extra) -> dict:
    return {"type": kind, "description": description, **extra}


# Each tool: its JSON spec, an argument sampler, request phrasings, a result and an answer.
TOOLS: dict[str, dict] = {}


def tool(spec):
    def register(cls):
        TOOLS[spec["name"]] = {
            "spec": spec,
            **{k: getattr(cls, k) for k in ("args", "asks", "result", "answer")},
        }
        return cls

    return register


@tool(
    _spec(
        "get_weather",
        "Current weather for a city.",
        {
            "city": _p("string", "City name, e.g. Paris."),
            "unit": _p("string", "Temperature unit.", enum=["celsius", "fahrenheit"]),
        },
        ["city"],
    )
)
class _Weather:
    def args(rng):
        a = {"city": rng.choice(CITIES)}
        if rng.random() < 0.5:
            a["unit"] = rng.choice(["celsius", "fahrenheit"])
        return a

    def asks(a):
        unit = f" in {a['unit']}" if "unit" in a else ""
        return [
            f"What's the weather like in {a['city']} right now{unit}?",
            f"Can you check the current weather in {a['city']}{unit}?",
            f"How warm is it in {a['city']} at the moment{unit}?",
        ]

    def result(a, rng):
        t = rng.randint(-5, 35)
        if a.get("unit") == "fahrenheit":
            t = round(t * 9 / 5 + 32)
        return {
            "temperature": t,
            "condition": rng.choice(["sunny", "cloudy", "light rain", "windy", "snow showers"]),
        }

    def answer(a, r):
        unit = "°F" if a.get("unit") == "fahrenheit" else "°C"
        return f"It is currently {r['temperature']}{unit} and {r['condition']} in {a['city']}."


@tool(
    _spec(
        "get_forecast",
        "Daily weather forecast for a city.",
        {
            "city": _p("string", "City name."),
            "days": _p("integer", "Number of days to forecast, 1 to 7."),
        },
        ["city", "days"],
    )
)
class _Forecast:
    def args(rng):
        return {"city": rng.choice(CITIES), "days": rng.randint(2, 5)}

    def asks(a):
        return [
            f"Give me the {a['days']}-day forecast for {a['city']}.",
            f"What will the weather be in {a['city']} over the next {a['days']} days?",
        ]

    def result(a, rng):
        return {"daily_high": [rng.randint(5, 30) for _ in range(a["days"])]}

    def answer(a, r):
        highs = ", ".join(f"{t}°C" for t in r["daily_high"])
        return f"The daily highs in {a['city']} for the next {a['days']} days are {highs}."


@tool(
    _spec(
        "create_calendar_event",
        "Add an event to the user's calendar.",
        {
            "title": _p("string", "Title of the event."),
            "date": _p("string", "Date in YYYY-MM-DD format."),
            "time": _p("string", "Start time in HH:MM, 24-hour clock."),
            "duration_minutes": _p("integer", "Length of the event in minutes."),
        },
        ["title", "date", "time"],
    )
)
class _Event:
    def args(rng):
        a = {
            "title": rng.choice(EVENT_TITLES),
            "date": _date(rng),
            "time": f"{rng.randint(8, 19):02d}:{rng.choice(['00', '15', '30', '45'])}",
        }
        if rng.random() < 0.5:
            a["duration_minutes"] = rng.choice([30, 45, 60, 90])
        return a

    def asks(a):
        dur = f" for {a['duration_minutes']} minutes" if "duration_minutes" in a else ""
        return [
            f"Put '{a['title']}' on my calendar on {a['date']} at {a['time']}{dur}.",
            f"Schedule {a['title']} for {a['date']} at {a['time']}{dur}, please.",
        ]

    def result(a, rng):
        return {"status": "created", "event_id": f"evt_{rng.randint(1000, 9999)}"}

    def answer(a, r):
        return (
            f"Done: '{a['title']}' is on your calendar for {a['date']} at {a['time']} "
            f"(event id {r['event_id']})."
        )


@tool(
    _spec(
        "list_calendar_events",
        "List the events on the user's calendar for one day.",
        {"date": _p("string", "Date in YYYY-MM-DD format.")},
        ["date"],
    )
)
class _ListEvents:
    def args(rng):
        return {"date": _date(rng)}

    def asks(a):
        return [
            f"What do I have scheduled on {a['date']}?",
            f"Show me my calendar for {a['date']}.",
        ]

    def result(a, rng):
        titles = rng.sample(EVENT_TITLES, rng.randint(0, 2))
        return {"events": [{"title": t, "time": f"{rng.randint(8, 18):02d}:00"} for t in titles]}

    def answer(a, r):
        if not r["events"]:
            return f"Your calendar is free on {a['date']}."
        items = "; ".join(f"{e['title']} at {e['time']}" for e in r["events"])
        return f"On {a['date']} you have: {items}."


@tool(
    _spec(
        "convert_currency",
        "Convert an amount of money between currencies.",
        {
            "amount": _p("float", "Amount to convert."),
            "from_currency": _p("string", "ISO code of the source currency."),
            "to_currency": _p("string", "ISO code of the target currency."),
        },
        ["amount", "from_currency", "to_currency"],
    )
)
class _Currency:
    def args(rng):
        src, dst = rng.sample(CURRENCIES, 2)
        return {
            "amount": float(rng.choice([20, 50, 75.5, 100, 250, 1200, 3000])),
            "from_currency": src,
            "to_currency": dst,
        }

    def asks(a):
        amt = f"{a['amount']:g}"
        return [
            f"How much is {amt} {a['from_currency']} in {a['to_currency']}?",
            f"Convert {amt} {a['from_currency']} to {a['to_currency']}.",
        ]

    def result(a, rng):
        rate = round(rng.uniform(0.05, 20.0), 4)
        return {"rate": rate, "converted": round(a["amount"] * rate, 2)}

    def answer(a, r):
        return (
            f"{a['amount']:g} {a['from_currency']} is about {r['converted']:,} "
            f"{a['to_currency']} at a rate of {r['rate']}."
        )


@tool(
    _spec(
        "search_flights",
        "Search one-way flights between two airports.",
        {
            "origin": _p("string", "IATA code of the departure airport."),
            "destination": _p("string", "IATA code of the arrival airport."),
            "date": _p("string", "Departure date, YYYY-MM-DD."),
            "passengers": _p("integer", "Number of passengers."),
        },
        ["origin", "destination", "date"],
    )
)
class _Flights:
    def args(rng):
        o, d = rng.sample(AIRPORTS, 2)
        a = {"origin": o, "destination": d, "date": _date(rng)}
        if rng.random() < 0.4:
            a["passengers"] = rng.randint(2, 4)
        return a

    def asks(a):
        pax = f" for {a['passengers']} people" if "passengers" in a else ""
        return [
            f"Find me flights from {a['origin']} to {a['destination']} on {a['date']}{pax}.",
            f"Are there any flights {a['origin']} to {a['destination']} on {a['date']}{pax}?",
        ]

    def result(a, rng):
        return {
            "flights": [
                {
                    "flight": f"{rng.choice(['AF', 'LH', 'NH', 'KQ'])}{rng.randint(100, 999)}",
                    "departure": f"{rng.randint(6, 21):02d}:{rng.choice(['05', '40'])}",
                    "price_usd": rng.randint(90, 900),
                }
                for _ in range(2)
            ]
        }

    def answer(a, r):
        f1, f2 = r["flights"]
        return (
            f"I found two flights from {a['origin']} to {a['destination']} on {a['date']}: "
            f"{f1['flight']} at {f1['departure']} (${f1['price_usd']}) and {f2['flight']} at "
            f"{f2['departure']} (${f2['price_usd']})."
        )


@tool(
    _spec(
        "find_recipes",
        "Find recipes that use an ingredient.",
        {
            "ingredient": _p("string", "Main ingredient."),
            "max_minutes": _p("integer", "Maximum total cooking time in minutes."),
            "diet": _p("string", "Dietary restriction.", enum=DIETS),
        },
        ["ingredient"],
    )
)
class _Recipes:
    def args(rng):
        a = {"ingredient": rng.choice(INGREDIENTS)}
        if rng.random() < 0.5:
            a["max_minutes"] = rng.choice([20, 30, 45])
        if rng.random() < 0.4:
            a["diet"] = rng.choice(DIETS)
        return a

    def asks(a):
        extra = ""
        if "diet" in a:
            extra += f" {a['diet']}"
        time = f" that take at most {a['max_minutes']} minutes" if "max_minutes" in a else ""
        return [
            f"Suggest some{extra} recipes with {a['ingredient']}{time}.",
            f"I have {a['ingredient']}. Any{extra} recipe ideas{time}?",
        ]

    def result(a, rng):
        dishes = ["stew", "curry", "salad", "stir-fry", "soup", "traybake"]
        return {"recipes": [f"{a['ingredient']} {d}" for d in rng.sample(dishes, 2)]}

    def answer(a, r):
        return f"You could try {r['recipes'][0]} or {r['recipes'][1]}."


@tool(
    _spec(
        "get_stock_price",
        "Latest trading price of a stock.",
        {"symbol": _p("string", "Ticker symbol, e.g. AAPL.")},
        ["symbol"],
    )
)
class _Stock:
    def args(rng):
        return {"symbol": rng.choice(SYMBOLS)}

    def asks(a):
        return [f"What's {a['symbol']} trading at?", f"Get me the latest price of {a['symbol']}."]

    def result(a, rng):
        return {"price": round(rng.uniform(20, 900), 2), "change_pct": round(rng.uniform(-4, 4), 2)}

    def answer(a, r):
        direction = "up" if r["change_pct"] >= 0 else "down"
        return (
            f"{a['symbol']} is trading at ${r['price']}, {direction} {abs(r['change_pct'])}% today."
        )


@tool(
    _spec(
        "convert_units",
        "Convert a quantity between measurement units.",
        {
            "value": _p("float", "The quantity to convert."),
            "from_unit": _p("string", "Unit of the value."),
            "to_unit": _p("string", "Unit to convert to."),
        },
        ["value", "from_unit", "to_unit"],
    )
)
class _Units:
    def args(rng):
        src, dst, _ = rng.choice(UNIT_PAIRS)
        return {
            "value": float(rng.choice([3, 10, 12.5, 26.2, 100, 180])),
            "from_unit": src,
            "to_unit": dst,
        }

    def asks(a):
        return [
            f"How many {a['to_unit']} is {a['value']:g} {a['from_unit']}?",
            f"Convert {a['value']:g} {a['from_unit']} to {a['to_unit']}.",
        ]

    def result(a, rng):
        factor = next(f for s, d, f in UNIT_PAIRS if s == a["from_unit"])
        out = a["value"] * 9 / 5 + 32 if factor is None else a["value"] * factor
        return {"result": round(out, 2)}

    def answer(a, r):
        return f"{a['value']:g} {a['from_unit']} is {r['result']} {a['to_unit']}."


@tool(
    _spec(
        "translate_text",
        "Translate text into another language.",
        {
            "text": _p("string", "The text to translate."),
            "target_language": _p("string", "Language to translate into."),
            "source_language": _p("string", "Language of the text; detected if omitted."),
        },
        ["text", "target_language"],
    )
)
class _Translate:
    def args(rng):
        text = rng.choice(sorted(TRANSLATIONS))
        return {"text": text, "target_language": rng.choice(sorted(TRANSLATIONS[text]))}

    def asks(a):
        return [
            f'Translate "{a["text"]}" into {a["target_language"]}.',
            f'How do I say "{a["text"]}" in {a["target_language"]}?',
        ]

    def result(a, rng):
        return {"translation": TRANSLATIONS[a["text"]][a["target_language"]]}

    def answer(a, r):
        return f"In {a['target_language']} that is: {r['translation']}"


@tool(
    _spec(
        "get_time",
        "Current local time in a time zone.",
        {"timezone": _p("string", "IANA time zone name, e.g. Europe/Paris.")},
        ["timezone"],
    )
)
class _Time:
    def args(rng):
        return {"timezone": rng.choice(TIMEZONES)}

    def asks(a):
        return [
            f"What time is it in the {a['timezone']} time zone?",
            f"Tell me the current local time for {a['timezone']}.",
        ]

    def result(a, rng):
        return {"local_time": f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"}

    def answer(a, r):
        return f"It is {r['local_time']} in {a['timezone']}."


@tool(
    _spec(
        "calculate_tip",
        "Compute the tip and total for a restaurant bill.",
        {
            "bill_amount": _p("float", "Bill before tip."),
            "percent": _p("integer", "Tip percentage."),
        },
        ["bill_amount", "percent"],
    )
)
class _Tip:
    def args(rng):
        return {
            "bill_amount": round(rng.uniform(15, 180), 2),
            "percent": rng.choice([10, 15, 18, 20]),
        }

    def asks(a):
        return [
            f"What's a {a['percent']}% tip on a ${a['bill_amount']} bill?",
            f"Our bill came to ${a['bill_amount']}. How much is {a['percent']}% tip?",
        ]

    def result(a, rng):
        tip = round(a["bill_amount"] * a["percent"] / 100, 2)
        return {"tip": tip, "total": round(a["bill_amount"] + tip, 2)}

    def answer(a, r):
        return f"A {a['percent']}% tip is ${r['tip']}, for a total of ${r['total']}."


@tool(
    _spec(
        "find_restaurants",
        "Find restaurants in a city by cuisine.",
        {
            "city": _p("string", "City to search in."),
            "cuisine": _p("string", "Type of food."),
            "price_level": _p("integer", "1 (cheap) to 4 (expensive)."),
        },
        ["city", "cuisine"],
    )
)
class _Restaurants:
    def args(rng):
        a = {"city": rng.choice(CITIES), "cuisine": rng.choice(CUISINES)}
        if rng.random() < 0.4:
            a["price_level"] = rng.randint(1, 3)
        return a

    def asks(a):
        price = " that are not too expensive" if a.get("price_level", 4) <= 2 else ""
        if "price_level" in a and not price:
            price = f" at price level {a['price_level']}"
        return [
            f"Find {a['cuisine']} restaurants in {a['city']}{price}.",
            f"Where can I eat {a['cuisine']} food in {a['city']}{price}?",
        ]

    def result(a, rng):
        names = ["Golden Spoon", "Casa Verde", "Blue Door", "Little Garden", "Ember"]
        return {
            "restaurants": [
                {"name": n, "rating": round(rng.uniform(3.8, 4.9), 1)} for n in rng.sample(names, 2)
            ]
        }

    def answer(a, r):
        r1, r2 = r["restaurants"]
        return (
            f"Two well-rated {a['cuisine']} places in {a['city']} are {r1['name']} "
            f"({r1['rating']} stars) and {r2['name']} ({r2['rating']} stars)."
        )


@tool(
    _spec(
        "get_news_headlines",
        "Latest news headlines on a topic.",
        {
            "topic": _p("string", "Topic to search for."),
            "count": _p("integer", "How many headlines to return."),
        },
        ["topic"],
    )
)
class _News:
    def args(rng):
        a = {"topic": rng.choice(TOPICS)}
        if rng.random() < 0.5:
            a["count"] = rng.randint(2, 3)
        return a

    def asks(a):
        n = f"{a['count']} " if "count" in a else ""
        return [
            f"Show me the latest {n}headlines about {a['topic']}.",
            f"What's new in {a['topic']}? Give me {n or 'some '}headlines.",
        ]

    def result(a, rng):
        n = a.get("count", 2)
        return {
            "headlines": [
                f"{a['topic'].capitalize()} update #{rng.randint(1, 99)}" for _ in range(n)
            ]
        }

    def answer(a, r):
        return f"Here are the latest headlines on {a['topic']}: " + "; ".join(r["headlines"]) + "."


@tool(
    _spec(
        "book_hotel",
        "Book a hotel room.",
        {
            "city": _p("string", "City of the hotel."),
            "check_in": _p("string", "Check-in date, YYYY-MM-DD."),
            "nights": _p("integer", "Number of nights."),
            "guests": _p("integer", "Number of guests."),
        },
        ["city", "check_in", "nights"],
    )
)
class _Hotel:
    def args(rng):
        a = {"city": rng.choice(CITIES), "check_in": _date(rng), "nights": rng.randint(1, 6)}
        if rng.random() < 0.5:
            a["guests"] = rng.randint(1, 3)
        return a

    def asks(a):
        g = f" for {a['guests']} guests" if "guests" in a else ""
        return [
            f"Book a hotel in {a['city']} from {a['check_in']} for {a['nights']} nights{g}.",
            f"I need a room in {a['city']}, checking in {a['check_in']}, {a['nights']} nights{g}.",
        ]

    def result(a, rng):
        return {
            "confirmation": f"HB{rng.randint(10000, 99999)}",
            "price_per_night": rng.randint(60, 300),
        }

    def answer(a, r):
        return (
            f"Your hotel in {a['city']} is booked from {a['check_in']} for {a['nights']} "
            f"nights at ${r['price_per_night']} per night (confirmation {r['confirmation']})."
        )


# Calculation tools: numeric arguments, requests phrased as small maths and science problems
# (most of BFCL's non-live functions are of this kind; these are the project's own). Every
# parameter is required.


def calc_tool(name, description, params, sample, asks, compute, answer):
    """Register a calculation tool; ``params``: name -> (JSON type, description)."""
    spec = _spec(name, description, {k: _p(t, d) for k, (t, d) in params.items()}, list(params))
    TOOLS[name] = {
        "spec": spec,
        "args": sample,
        "asks": asks,
        "result": lambda a, rng: {"result": round(compute(a), 2)},
        "answer": lambda a, r: answer.format(**a, result=r["result"]),
    }


calc_tool(
    "geometry.rectangle_area",
    "Area of a rectangle from its length and width.",
    {
        "length": ("float", "Length of the rectangle."),
        "width": ("float", "Width of the rectangle."),
    },
    lambda rng: {"length": float(rng.randint(2, 40)), "width": float(rng.randint(2, 30))},
    lambda a: [
        f"What is the area of a rectangle {a['length']:g} meters long and {a['width']:g} wide?",
        f"Find the area of a rectangle with length {a['length']:g} and width {a['width']:g}.",
    ],
    lambda a: a["length"] * a["width"],
    "The area is {result} square units.",
)
calc_tool(
    "geometry.circle_circumference",
    "Circumference of a circle from its radius.",
    {"radius": ("float", "Radius of the circle.")},
    lambda rng: {"radius": float(rng.randint(1, 25))},
    lambda a: [
        f"What is the circumference of a circle with radius {a['radius']:g}?",
        f"Compute the perimeter of a circle whose radius is {a['radius']:g} cm.",
    ],
    lambda a: 2 * 3.14159 * a["radius"],
    "The circumference is {result}.",
)
calc_tool(
    "geometry.cylinder_volume",
    "Volume of a cylinder from its radius and height.",
    {"radius": ("float", "Radius of the base."), "height": ("float", "Height of the cylinder.")},
    lambda rng: {"radius": float(rng.randint(1, 12)), "height": float(rng.randint(2, 30))},
    lambda a: [
        f"Calculate the volume of a cylinder with radius {a['radius']:g} and height "
        f"{a['height']:g}.",
        f"A tank is a cylinder {a['height']:g} m tall with radius {a['radius']:g} m. What is its "
        "volume?",
    ],
    lambda a: 3.14159 * a["radius"] ** 2 * a["height"],
    "The volume is {result} cubic units.",
)
calc_tool(
    "physics.kinetic_energy",
    "Kinetic energy of a moving body in joules.",
    {"mass": ("float", "Mass in kilograms."), "velocity": ("float", "Speed in meters per second.")},
    lambda rng: {"mass": float(rng.randint(1, 90)), "velocity": float(rng.randint(2, 40))},
    lambda a: [
        f"What is the kinetic energy of a {a['mass']:g} kg object moving at {a['velocity']:g} m/s?",
        f"Compute the kinetic energy for mass {a['mass']:g} kg and velocity {a['velocity']:g} m/s.",
    ],
    lambda a: 0.5 * a["mass"] * a["velocity"] ** 2,
    "The kinetic energy is {result} joules.",
)
calc_tool(
    "physics.average_speed",
    "Average speed from a distance and the time taken.",
    {"distance": ("float", "Distance in kilometers."), "time": ("float", "Time in hours.")},
    lambda rng: {"distance": float(rng.randint(5, 600)), "time": float(rng.randint(1, 9))},
    lambda a: [
        f"A car covers {a['distance']:g} km in {a['time']:g} hours. What is its average speed?",
        f"Calculate the average speed for a distance of {a['distance']:g} km over "
        f"{a['time']:g} hours.",
    ],
    lambda a: a["distance"] / a["time"],
    "The average speed is {result} km/h.",
)
calc_tool(
    "chemistry.density",
    "Density of a substance from its mass and volume.",
    {"mass": ("float", "Mass in grams."), "volume": ("float", "Volume in cubic centimeters.")},
    lambda rng: {"mass": float(rng.randint(10, 900)), "volume": float(rng.randint(5, 300))},
    lambda a: [
        f"What is the density of a sample with mass {a['mass']:g} g and volume "
        f"{a['volume']:g} cm^3?",
        f"Find the density of {a['mass']:g} grams of material taking up {a['volume']:g} cubic "
        "centimeters.",
    ],
    lambda a: a["mass"] / a["volume"],
    "The density is {result} g/cm^3.",
)
calc_tool(
    "finance.simple_interest",
    "Simple interest earned on a principal.",
    {
        "principal": ("float", "Amount invested."),
        "rate": ("float", "Annual interest rate as a decimal, e.g. 0.05."),
        "years": ("integer", "Number of years."),
    },
    lambda rng: {
        "principal": float(rng.choice([500, 1000, 2500, 8000, 12000])),
        "rate": rng.choice([0.02, 0.03, 0.04, 0.05, 0.07]),
        "years": rng.randint(1, 10),
    },
    lambda a: [
        f"How much simple interest does {a['principal']:g} dollars earn at a rate of "
        f"{a['rate']} over {a['years']} years?",
        f"Calculate the simple interest on a principal of {a['principal']:g} with annual rate "
        f"{a['rate']} for {a['years']} years.",
    ],
    lambda a: a["principal"] * a["rate"] * a["years"],
    "The interest is {result}.",
)
calc_tool(
    "math.least_common_multiple",
    "Least common multiple of two integers.",
    {"a": ("integer", "First integer."), "b": ("integer", "Second integer.")},
    lambda rng: {"a": rng.randint(2, 60), "b": rng.randint(2, 60)},
    lambda a: [
        f"What is the least common multiple of {a['a']} and {a['b']}?",
        f"Find the LCM of the numbers {a['a']} and {a['b']}.",
    ],
    lambda a: math.lcm(a["a"], a["b"]),
    "The least common multiple is {result}.",
)
calc_tool(
    "statistics.mean",
    "Arithmetic mean of a list of numbers.",
    {"numbers": ("array", "The numbers to average.")},
    lambda rng: {"numbers": [float(rng.randint(1, 99)) for _ in range(rng.randint(3, 6))]},
    lambda a: [
        "What is the average of " + ", ".join(f"{x:g}" for x in a["numbers"]) + "?",
        "Compute the mean of these values: " + ", ".join(f"{x:g}" for x in a["numbers"]) + ".",
    ],
    lambda a: sum(a["numbers"]) / len(a["numbers"]),
    "The mean is {result}.",
)
calc_tool(
    "math.percentage_of",
    "A given percentage of a number.",
    {"percent": ("float", "The percentage, e.g. 15."), "total": ("float", "The number.")},
    lambda rng: {
        "percent": float(rng.choice([5, 12, 15, 25, 40, 75])),
        "total": float(rng.randint(20, 2000)),
    },
    lambda a: [
        f"What is {a['percent']:g} percent of {a['total']:g}?",
        f"Calculate {a['percent']:g}% of {a['total']:g}.",
    ],
    lambda a: a["percent"] * a["total"] / 100,
    "That is {result}.",
)
calc_tool(
    "temperature.celsius_to_kelvin",
    "Convert a temperature from degrees Celsius to kelvin.",
    {"celsius": ("float", "Temperature in degrees Celsius.")},
    lambda rng: {"celsius": float(rng.randint(-40, 120))},
    lambda a: [
        f"Convert {a['celsius']:g} degrees Celsius to kelvin.",
        f"What is {a['celsius']:g} °C in kelvin?",
    ],
    lambda a: a["celsius"] + 273.15,
    "That is {result} K.",
)
calc_tool(
    "finance.loan_monthly_payment",
    "Monthly payment of a fixed-rate loan.",
    {
        "principal": ("float", "Amount borrowed."),
        "annual_rate": ("float", "Annual interest rate as a decimal."),
        "years": ("integer", "Loan term in years."),
    },
    lambda rng: {
        "principal": float(rng.choice([5000, 15000, 30000, 200000])),
        "annual_rate": rng.choice([0.03, 0.045, 0.06]),
        "years": rng.choice([3, 5, 15, 30]),
    },
    lambda a: [
        f"What is the monthly payment on a {a['principal']:g} loan at {a['annual_rate']} annual "
        f"interest over {a['years']} years?",
        f"Calculate monthly payments for borrowing {a['principal']:g} for {a['years']} years at an "
        f"annual rate of {a['annual_rate']}.",
    ],
    lambda a: (
        a["principal"]
        * (a["annual_rate"] / 12)
        / (1 - (1 + a["annual_rate"] / 12) ** (-12 * a["years"]))
    ),
    "The monthly payment is {result}.",
)


# Functions that are only ever offered, never asked for: beside a request they do not serve
# (``unmatched``) and as extra entries of a call's list. Many of them look like the calculation
# tools, so telling them apart takes reading the request, not spotting a maths question.
OFFERED_ONLY = [
    ("geometry.sphere_surface_area", "Surface area of a sphere.", {"radius": "float"}),
    (
        "geometry.polygon_interior_angle",
        "Interior angle of a regular polygon.",
        {"sides": "integer"},
    ),
    (
        "physics.gravitational_force",
        "Gravitational force between two masses.",
        {"mass1": "float", "mass2": "float", "distance": "float"},
    ),
    (
        "physics.wave_frequency",
        "Frequency of a wave from its speed and wavelength.",
        {"speed": "float", "wavelength": "float"},
    ),
    ("chemistry.molar_mass", "Molar mass of a chemical formula.", {"formula": "string"}),
    (
        "chemistry.ph_from_concentration",
        "pH from a hydrogen ion concentration.",
        {"concentration": "float"},
    ),
    (
        "statistics.standard_deviation",
        "Standard deviation of a list of numbers.",
        {"numbers": "array"},
    ),
    ("math.prime_factors", "Prime factorisation of an integer.", {"number": "integer"}),
    (
        "math.binomial_coefficient",
        "Number of ways to choose k items from n.",
        {"n": "integer", "k": "integer"},
    ),
    (
        "finance.compound_growth",
        "Value of an investment with compound growth.",
        {"principal": "float", "rate": "float", "periods": "integer"},
    ),
    (
        "finance.tax_owed",
        "Income tax owed for an income and a region.",
        {"income": "float", "region": "string"},
    ),
    (
        "biology.population_doubling",
        "Population after a number of doubling periods.",
        {"initial": "integer", "doublings": "integer"},
    ),
    (
        "astronomy.light_travel_time",
        "Time light takes to cover a distance.",
        {"distance_km": "float"},
    ),
    (
        "music.find_lyrics",
        "Lyrics of a song by title and artist.",
        {"title": "string", "artist": "string"},
    ),
    (
        "sports.team_standings",
        "League table of a sports competition.",
        {"league": "string", "season": "integer"},
    ),
    ("movies.search_by_actor", "Films an actor appeared in.", {"actor": "string"}),
    (
        "email.send_message",
        "Send an email.",
        {"to": "string", "subject": "string", "body": "string"},
    ),
    (
        "maps.route_distance",
        "Driving distance between two places.",
        {"origin": "string", "destination": "string"},
    ),
    (
        "shopping.add_to_cart",
        "Add a product to the shopping cart.",
        {"product_id": "string", "quantity": "integer"},
    ),
    ("fitness.log_workout", "Record a workout.", {"activity": "string", "minutes": "integer"}),
    ("library.find_book", "Find a book by title or author.", {"query": "string"}),
    ("transit.next_departures", "Next departures from a bus or train stop.", {"stop_id": "string"}),
    ("crypto.get_price", "Current price of a cryptocurrency.", {"coin": "string"}),
    (
        "pets.adoption_search",
        "Pets available for adoption near a city.",
        {"city": "string", "species": "string"},
    ),
    ("smart_home.set_thermostat", "Set the thermostat temperature.", {"temperature": "float"}),
    ("files.compress_folder", "Compress a folder into a zip archive.", {"path": "string"}),
]
OFFERED_SPECS = {
    name: _spec(
        name,
        description,
        {k: _p(t, k.replace("_", " ").capitalize() + ".") for k, t in params.items()},
        list(params),
    )
    for name, description, params in OFFERED_ONLY
}

IRRELEVANT = [
    "Write a short poem about autumn leaves.",
    "Who painted the ceiling of the Sistine Chapel?",
    "Can you explain what a black hole is?",
    "Tell me a joke about programmers.",
    "What is the derivative of x squared?",
    "Summarise the plot of Hamlet in two sentences.",
    "How many bones are in the human body?",
    "Give me three tips for learning to play the guitar.",
    "What's the difference between a virus and a bacterium?",
    "Why is the sky blue?",
    "Recommend a good name for my new cat.",
    "What year did the Berlin Wall fall?",
]

# (tool, a request that leaves out required arguments, the clarifying question)
MISSING = [
    (
        "book_hotel",
        "Book me a hotel in {city}, please.",
        "Sure. What is your check-in date, and how many nights will you stay?",
    ),
    (
        "search_flights",
        "Find me a flight to {airport}.",
        "Happy to help. Which airport are you flying from, and on what date?",
    ),
    (
        "convert_currency",
        "Convert 200 dollars for me.",
        "Which currency would you like the 200 USD converted into?",
    ),
    (
        "create_calendar_event",
        "Add a dentist appointment to my calendar.",
        "What date and time is the dentist appointment?",
    ),
]


def format_value(value) -> str:
    """A Python-literal argument value, as bracket-call syntax writes it."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float) and value.is_integer():
        # as the request writes it ("12", not "12.0"); BFCL accepts an integer for a float
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def format_calls(calls: list[tuple[str, dict]]) -> str:
    """``[f(a="x", b=2), g(c=1.5)]``: the assistant's tool-call turn."""
    return (
        "["
        + ", ".join(
            f"{name}(" + ", ".join(f"{k}={format_value(v)}" for k, v in args.items()) + ")"
            for name, args in calls
        )
        + "]"
    )


def _spec_of(name: str) -> dict:
    return TOOLS[name]["spec"] if name in TOOLS else OFFERED_SPECS[name]


def _system(rng: random.Random, must: list[str], exclude: tuple[str, ...] = ()) -> str:
    """The system prompt listing ``must`` and 1-2 other functions (never one of ``exclude``)."""
    names = list(dict.fromkeys(must))
    others = [n for n in (*TOOLS, *OFFERED_SPECS) if n not in names and n not in exclude]
    names += rng.sample(others, rng.randint(1, 2))
    rng.shuffle(names)
    tools = json.dumps([_spec_of(n) for n in names], ensure_ascii=False)
    return SYSTEM_TEMPLATE.format(tools=tools)


def _call(rng: random.Random, name: str) -> tuple[dict, str]:
    args = TOOLS[name]["args"](rng)
    return args, rng.choice(TOOLS[name]["asks"](args))


def _results_turn(calls, results) -> str:
    return json.dumps(
        [{"name": n, "results": r} for (n, _), r in zip(calls, results, strict=True)],
        ensure_ascii=False,
    )


#: the answer to a request no listed function serves (short: it is trained and generated often)
UNMATCHED_ANSWER = "None of the given functions can do this, so I cannot call any of them."


def _exchange(system: str, request: str, answer: str) -> dict:
    """A dialogue of one request and an answer without a call."""
    return {
        "system": system,
        "conversations": [
            {"from": "user", "value": request},
            {"from": "assistant", "value": answer},
        ],
    }


def make_dialogue(rng: random.Random, kind: str) -> dict:
    names = list(TOOLS)
    if kind == "irrelevant":
        system = _system(rng, [rng.choice(names)])
        return _exchange(system, rng.choice(IRRELEVANT), UNMATCHED_ANSWER)
    if kind == "unmatched":
        # a request one of the tools would serve, with only other tools listed: BFCL's
        # irrelevance categories test exactly this (a plausible request, no function for it)
        wanted = rng.choice(names)
        _, request = _call(rng, wanted)
        return _exchange(_system(rng, [], exclude=(wanted,)), request, UNMATCHED_ANSWER)
    if kind == "missing":
        name, request, question = rng.choice(MISSING)
        request = request.format(city=rng.choice(CITIES), airport=rng.choice(AIRPORTS))
        return _exchange(_system(rng, [name]), request, question)

    if kind.startswith("parallel"):
        first = rng.choice(names)
        second = first if rng.random() < 0.5 else rng.choice([n for n in names if n != first])
        picked = [first, second]
    else:
        picked = [rng.choice(names)]
    calls, asks = [], []
    for name in picked:
        args, ask = _call(rng, name)
        while calls and (name, args) == calls[0]:  # the same call twice asks nothing new
            args, ask = _call(rng, name)
        calls.append((name, args))
        asks.append(ask)
    request = asks[0] if len(asks) == 1 else f"{asks[0]} Also, {asks[1][0].lower()}{asks[1][1:]}"
    conv = [{"from": "user", "value": request}, {"from": "assistant", "value": format_calls(calls)}]
    if kind.endswith("multi_turn"):
        results = [TOOLS[n]["result"](a, rng) for n, a in calls]
        conv.append({"from": "tool", "value": _results_turn(calls, results)})
        answer = " ".join(
            TOOLS[n]["answer"](a, r) for (n, a), r in zip(calls, results, strict=True)
        )
        conv.append({"from": "assistant", "value": answer})
    return {"system": _system(rng, picked), "conversations": conv}


#: share of each dialogue kind in the default set
KINDS = [
    ("single", 0.30),
    ("single_multi_turn", 0.10),
    ("parallel", 0.17),
    ("parallel_multi_turn", 0.05),
    ("unmatched", 0.25),
    ("irrelevant", 0.08),
    ("missing", 0.05),
]


def make_toolace(n: int = NUM_DIALOGUES, seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    kinds = [k for k, share in KINDS for _ in range(round(share * n))][:n]
    kinds += ["single"] * (n - len(kinds))
    rng.shuffle(kinds)
    return [make_dialogue(rng, kind) for kind in kinds]


# --------------------------------------------------------------------------------------------
# Reranker query/passage pairs (LB Reranker schema)
# --------------------------------------------------------------------------------------------

# topic: (two queries, a passage that answers them, one that is on topic but only partly
# answers, one from the same domain that does not answer)
RERANK_TOPICS: list[tuple[list[str], str, str, str]] = [
    (
        ["how long should bread dough rise", "bread dough proofing time"],
        "Most yeasted bread doughs need a first rise of one to two hours at room temperature, or "
        "until roughly doubled in size; a cooler kitchen slows this down.",
        "Bread dough is made from flour, water, salt and yeast, and kneading develops gluten.",
        "Sourdough starters are kept alive by feeding them flour and water every day.",
    ),
    (
        ["why do plants need sunlight", "role of light in photosynthesis"],
        "Plants use the energy of sunlight in photosynthesis to turn carbon dioxide and water into "
        "sugars, releasing oxygen; without light this process stops.",
        "Chlorophyll is the green pigment found in the chloroplasts of plant cells.",
        "Cacti store water in their thick stems to survive long droughts.",
    ),
    (
        ["sort a list in python", "python sorted vs list.sort"],
        "In Python, sorted(xs) returns a new sorted list, while xs.sort() sorts the list in place "
        "and returns None; both accept key and reverse arguments.",
        "Python lists are ordered, mutable sequences that can hold items of any type.",
        "A Python dictionary maps hashable keys to values.",
    ),
    (
        ["how is mortgage interest calculated", "mortgage monthly interest formula"],
        "Monthly mortgage interest is the outstanding balance times the annual rate divided by "
        "twelve; early payments are mostly interest because the balance is still high.",
        "A mortgage is a loan secured by real estate, usually repaid over 15 to 30 years.",
        "Home insurance protects a house against damage from fire and storms.",
    ),
    (
        ["marathon training plan for beginners", "how many weeks to train for a marathon"],
        "Beginners usually train for 16 to 20 weeks, building weekly mileage slowly, with one long "
        "run each week that grows to about 30 kilometres before tapering.",
        "A marathon is 42.195 kilometres long, a distance fixed in 1921.",
        "Good running shoes should be replaced roughly every 600 kilometres.",
    ),
    (
        ["what causes volcanic eruptions", "why do volcanoes erupt"],
        "Volcanoes erupt when molten rock rises because it is less dense than the surrounding rock "
        "and dissolved gases expand, pushing magma to the surface.",
        "Many volcanoes sit along the Pacific Ring of Fire, where tectonic plates meet.",
        "Earthquakes are measured with seismometers and reported by magnitude.",
    ),
    (
        ["how do vaccines work", "vaccine immune response explained"],
        "Vaccines expose the immune system to a harmless piece or weakened form of a pathogen, so it "
        "builds antibodies and memory cells that respond quickly to a real infection.",
        "The first vaccine was developed by Edward Jenner against smallpox.",
        "Antibiotics treat bacterial infections but do not work on viruses.",
    ),
    (
        ["how efficient are solar panels", "solar panel efficiency percentage"],
        "Typical residential silicon solar panels convert about 18 to 23 percent of incoming "
        "sunlight into electricity.",
        "Solar panels are made of photovoltaic cells usually built from silicon.",
        "Wind turbines generate more power at higher wind speeds.",
    ),
    (
        ["best water temperature for green tea", "how hot should water be for green tea"],
        "Green tea is best brewed with water around 70 to 80 degrees Celsius; boiling water makes "
        "it bitter.",
        "Green tea comes from the same plant as black tea but is not oxidised.",
        "Espresso is brewed by forcing hot water through finely ground coffee.",
    ),
    (
        ["good chess openings for beginners", "which chess opening should a beginner learn"],
        "Beginners do well with the Italian Game or the London System: they develop pieces quickly, "
        "control the centre and lead to clear plans.",
        "Chess openings are catalogued by ECO codes from A00 to E99.",
        "A chess clock limits the total thinking time of each player.",
    ),
    (
        ["origins of jazz music", "where did jazz start"],
        "Jazz began in New Orleans in the late 19th and early 20th centuries, blending blues, "
        "ragtime and brass band traditions of African American communities.",
        "Louis Armstrong was one of the most influential jazz trumpeters.",
        "Classical symphonies are usually written in four movements.",
    ),
    (
        ["how to stop a dog pulling on the leash", "leash training a puppy"],
        "To stop leash pulling, stop walking whenever the leash goes tight and reward the dog when "
        "it returns to your side; consistency over many short sessions matters most.",
        "Puppies should be socialised with people and other dogs early.",
        "Cats groom themselves for several hours every day.",
    ),
    (
        ["how much caffeine in a cup of coffee", "caffeine content of coffee"],
        "An 8-ounce cup of brewed coffee contains roughly 80 to 100 milligrams of caffeine.",
        "Caffeine is a stimulant that blocks adenosine receptors in the brain.",
        "Coffee beans are the roasted seeds of the Coffea plant's cherries.",
    ),
    (
        ["what causes ocean tides", "why does the sea have tides"],
        "Tides are caused mainly by the Moon's gravity pulling on the oceans, with the Sun adding a "
        "smaller effect; most coasts see two high tides a day.",
        "Spring tides have the largest range between high and low water.",
        "Ocean currents move heat from the equator towards the poles.",
    ),
    (
        ["normal blood pressure range", "what is healthy blood pressure"],
        "For adults, a normal blood pressure is below 120 systolic and 80 diastolic mmHg.",
        "Blood pressure is measured with a cuff called a sphygmomanometer.",
        "The heart has four chambers: two atria and two ventricles.",
    ),
    (
        ["how to create a git branch", "git new branch command"],
        "Create and switch to a new branch with `git switch -c name` (or `git checkout -b name`).",
        "Branches in git are lightweight pointers to commits.",
        "git log shows the commit history of the current branch.",
    ),
    (
        ["can plastic bags be recycled", "recycling plastic bags"],
        "Most curbside programmes do not accept plastic bags because they jam sorting machines, but "
        "many supermarkets collect them for separate recycling.",
        "Plastics are labelled with resin codes from 1 to 7.",
        "Glass can be recycled indefinitely without loss of quality.",
    ),
    (
        ["how did roman aqueducts work", "roman aqueduct water flow"],
        "Roman aqueducts carried water by gravity along a gentle, continuous downhill gradient, "
        "using tunnels, channels and arched bridges to cross valleys.",
        "The Pont du Gard in France is a famous Roman aqueduct bridge.",
        "Roman roads were built in layers of stone and gravel.",
    ),
    (
        ["why do birds migrate", "reasons for bird migration"],
        "Birds migrate to follow food supplies and favourable breeding conditions, flying towards "
        "the poles in spring and back towards the tropics in autumn.",
        "Arctic terns make the longest known migration of any bird.",
        "Penguins cannot fly but are excellent swimmers.",
    ),
    (
        ["how to travel cheaply in europe", "budget travel tips europe"],
        "To travel Europe on a budget, book trains or buses early, stay in hostels, travel in the "
        "shoulder season and eat where locals eat.",
        "The Schengen area allows passport-free travel between most EU countries.",
        "The euro is used by twenty European Union countries.",
    ),
    (
        ["how to fall asleep faster", "tips for better sleep"],
        "To fall asleep faster keep a regular schedule, avoid screens and caffeine before bed, and "
        "keep the bedroom dark, quiet and cool.",
        "Adults need about seven to nine hours of sleep a night.",
        "Dreams mostly happen during REM sleep.",
    ),
    (
        ["how to make a strong password", "strong password rules"],
        "A strong password is long, at least 12 to 16 characters, unique to each site, and is "
        "easiest to manage with a password manager or a random passphrase.",
        "Two-factor authentication adds a second check beyond the password.",
        "Phishing emails try to trick people into revealing information.",
    ),
    (
        ["how to start composting at home", "home compost bin basics"],
        "Start a compost pile by mixing green scraps like vegetable peels with brown material like "
        "dry leaves, keep it moist and turn it every week or two.",
        "Compost improves soil structure and adds nutrients.",
        "Earthworms are common in healthy garden soil.",
    ),
    (
        ["how long do electric car batteries last", "ev battery lifespan"],
        "Electric car batteries typically last 10 to 20 years, and most lose only a few percent of "
        "capacity per year.",
        "Electric cars use lithium-ion battery packs.",
        "Hybrid cars combine a petrol engine with an electric motor.",
    ),
    (
        ["what is the capital of australia", "australia capital city"],
        "Canberra is the capital of Australia; it was purpose-built and chosen as a compromise "
        "between Sydney and Melbourne.",
        "Australia is divided into six states and two mainland territories.",
        "Sydney is Australia's largest city and home to a famous opera house.",
    ),
]


def make_reranker(seed: int = SEED) -> list[dict]:
    """250 rows; scores: answer 6-7, partial 4-5, same domain 2-3, other topic 1 (two per query,
    so 1s are 40% of the rows: with three, half of them, a model first learns to say 1)."""
    rng = random.Random(seed + 1)
    rows = []
    for t, (queries, answer, partial, near) in enumerate(RERANK_TOPICS):
        for query in queries:
            pairs = [
                (answer, rng.choice([6, 7, 7])),
                (partial, rng.choice([4, 5])),
                (near, rng.choice([2, 3])),
            ]
            others = [i for i in range(len(RERANK_TOPICS)) if i != t]
            for o in rng.sample(others, 2):
                pairs.append((rng.choice(RERANK_TOPICS[o][1:]), 1))
            for text, score in pairs:
                rows.append(
                    {
                        "question": query,
                        "context": text,
                        "mean_exp_val_max7_round": score,
                        "dataset_name": "loki-default",
                        "language": "en",
                    }
                )
    rng.shuffle(rows)
    return rows


def main() -> None:
    toolace = make_toolace()
    (HERE / "toolace").mkdir(exist_ok=True)
    (HERE / "toolace" / "train.json").write_text(
        json.dumps(toolace, ensure_ascii=False, indent=1) + "\n"
    )
    (HERE / "reranker").mkdir(exist_ok=True)
    with open(HERE / "reranker" / "train.jsonl", "w") as fh:
        for row in make_reranker():
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
