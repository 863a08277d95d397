"""The BFCL AST checker on hand-written items, one test per rule of the official checker."""

from __future__ import annotations

import time

import pytest

from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate.bfcl import (
    MAX_OUTPUT_CHARS,
    DecodeError,
    ast_check,
    decode_calls,
    has_call,
    standardize_string,
)

AREA = {
    "name": "calc.area",
    "description": "Area of a triangle.",
    "parameters": {
        "type": "dict",
        "properties": {
            "base": {"type": "integer"},
            "height": {"type": "float"},
            "unit": {"type": "string"},
        },
        "required": ["base", "height"],
    },
}
AREA_GT = [{"calc.area": {"base": [10], "height": [5.0], "unit": ["square meters", ""]}}]

WEATHER = {
    "name": "get_weather",
    "parameters": {
        "type": "dict",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "flags": {"type": "boolean"},
        },
        "required": ["city"],
    },
}
MIXED = {
    "name": "plan",
    "parameters": {
        "type": "dict",
        "properties": {
            "stops": {"type": "array", "items": {"type": "string"}},
            "weights": {"type": "array", "items": {"type": "float"}},
            "options": {"type": "dict", "properties": {}},
            "legs": {"type": "array", "items": {"type": "dict"}},
            "coords": {"type": "tuple", "items": {"type": "integer"}},
        },
        "required": [],
    },
}


def simple(output, gt=AREA_GT, fn=AREA):
    return ast_check(output, [fn], gt, "simple_python")


def test_exact_call_is_right_and_dotted_names_keep_their_dots():
    assert simple('[calc.area(base=10, height=5.0, unit="square meters")]')
    assert decode_calls("calc.area(base=1)") == [{"calc.area": {"base": 1}}]


def test_wrong_function_name_is_wrong():
    assert not simple("[area(base=10, height=5.0)]")


def test_unknown_argument_is_wrong():
    assert not simple("[calc.area(base=10, height=5.0, colour='red')]")


def test_argument_in_spec_but_not_in_ground_truth_is_wrong():
    gt = [{"calc.area": {"base": [10], "height": [5.0]}}]
    assert not simple("[calc.area(base=10, height=5.0, unit='m')]", gt=gt)


def test_missing_required_argument_is_wrong():
    assert not simple("[calc.area(base=10)]")


def test_optional_argument_marked_by_empty_string_may_be_left_out():
    assert simple("[calc.area(base=10, height=5.0)]")
    gt = [{"calc.area": {"base": [10], "height": [5.0], "unit": ["square meters"]}}]
    assert not simple("[calc.area(base=10, height=5.0)]", gt=gt)


def test_value_must_be_one_of_the_allowed_values():
    gt = [{"calc.area": {"base": [10, 12], "height": [5.0], "unit": [""]}}]
    assert simple("[calc.area(base=12, height=5.0)]", gt=gt)
    assert not simple("[calc.area(base=11, height=5.0)]", gt=gt)


def test_strings_compare_after_removing_spaces_punctuation_and_case():
    assert standardize_string("Square-Meters, m^2.") == "squaremetersm2"
    assert simple("[calc.area(base=10, height=5.0, unit='Square_Meters')]")
    assert simple("[calc.area(base=10, height=5.0, unit='square. meters/')]")
    assert not simple("[calc.area(base=10, height=5.0, unit='square feet')]")


def test_int_is_accepted_for_float_but_float_not_for_int():
    assert simple("[calc.area(base=10, height=5)]")
    assert not simple("[calc.area(base=10.0, height=5.0)]")


def test_value_of_the_wrong_type_is_wrong():
    gt = [{"get_weather": {"city": ["Paris"], "days": [3, ""], "flags": [True, ""]}}]
    assert ast_check("[get_weather(city='Paris', days=3)]", [WEATHER], gt, "simple_python")
    assert not ast_check("[get_weather(city='Paris', days='3')]", [WEATHER], gt, "simple_python")
    # bool is not an integer and 1 is not a boolean, although 1 == True in Python
    assert not ast_check("[get_weather(city='Paris', days=True)]", [WEATHER], gt, "simple_python")
    assert not ast_check("[get_weather(city='Paris', flags=1)]", [WEATHER], gt, "simple_python")
    assert not ast_check("[get_weather(city=7)]", [WEATHER], gt, "simple_python")


def test_value_of_the_allowed_values_type_counts_as_a_variable():
    # The ground truth allows a string for an integer parameter: that string is compared as is.
    gt = [{"get_weather": {"city": ["Paris"], "days": ["num_days"]}}]
    assert ast_check("[get_weather(city='Paris', days=num_days)]", [WEATHER], gt, "simple")
    assert not ast_check("[get_weather(city='Paris', days='other')]", [WEATHER], gt, "simple")


def test_lists_compare_element_by_element_with_string_normalisation():
    gt = [{"plan": {"stops": [["New York", "Boston"]], "weights": [[0.5, 1.5], ""]}}]
    assert ast_check("[plan(stops=['new york', 'BOSTON'])]", [MIXED], gt, "simple_python")
    assert not ast_check("[plan(stops=['Boston', 'New York'])]", [MIXED], gt, "simple_python")
    assert not ast_check("[plan(stops=['New York'])]", [MIXED], gt, "simple_python")
    assert ast_check(
        "[plan(stops=['New York', 'Boston'], weights=[0.5, 1.5])]", [MIXED], gt, "simple_python"
    )
    # nested items keep their declared type: ints are not floats inside a list
    assert not ast_check(
        "[plan(stops=['New York', 'Boston'], weights=[1, 2])]", [MIXED], gt, "simple_python"
    )


def test_tuple_value_is_accepted_as_a_list_for_a_tuple_parameter():
    gt = [{"plan": {"coords": [[1, 2]]}}]
    assert ast_check("[plan(coords=(1, 2))]", [MIXED], gt, "simple_python")
    assert not ast_check("[plan(coords=(2, 1))]", [MIXED], gt, "simple_python")


def test_dict_values_are_checked_key_by_key_with_optional_keys():
    gt = [{"plan": {"options": [{"size": ["large"], "milk": ["almond", ""]}]}}]
    ok = "[plan(options={'size': 'Large', 'milk': 'almond'})]"
    assert ast_check(ok, [MIXED], gt, "simple_python")
    assert ast_check("[plan(options={'size': 'large'})]", [MIXED], gt, "simple_python")
    assert not ast_check("[plan(options={'milk': 'almond'})]", [MIXED], gt, "simple_python")
    assert not ast_check("[plan(options={'size': 'small'})]", [MIXED], gt, "simple_python")
    assert not ast_check(
        "[plan(options={'size': 'large', 'sugar': 1})]", [MIXED], gt, "simple_python"
    )


def test_list_of_dicts_is_checked_position_by_position():
    gt = [{"plan": {"legs": [[{"to": ["Rome"]}, {"to": ["Oslo"]}]]}}]
    assert ast_check("[plan(legs=[{'to': 'rome'}, {'to': 'Oslo'}])]", [MIXED], gt, "simple")
    assert not ast_check("[plan(legs=[{'to': 'Oslo'}, {'to': 'Rome'}])]", [MIXED], gt, "simple")
    assert not ast_check("[plan(legs=[{'to': 'Rome'}])]", [MIXED], gt, "simple")


def test_simple_needs_exactly_one_call():
    two = "[calc.area(base=10, height=5.0), calc.area(base=10, height=5.0)]"
    assert not simple(two)


def test_multiple_checks_the_expected_function_among_several():
    gt = [{"get_weather": {"city": ["Paris"], "days": [""]}}]
    assert ast_check("[get_weather(city='paris')]", [AREA, WEATHER], gt, "multiple")
    assert not ast_check("[calc.area(base=10, height=5)]", [AREA, WEATHER], gt, "multiple")


def test_parallel_calls_match_in_any_order():
    gt = [
        {"get_weather": {"city": ["Paris"], "days": [3]}},
        {"get_weather": {"city": ["Rome"], "days": [3]}},
    ]
    fns = [WEATHER]
    assert ast_check(
        "[get_weather(city='Rome', days=3), get_weather(city='Paris', days=3)]", fns, gt, "parallel"
    )
    assert ast_check(
        "[get_weather(city='Paris', days=3), get_weather(city='Rome', days=3)]", fns, gt, "parallel"
    )
    # each expected call needs its own model call: a duplicate cannot serve twice
    assert not ast_check(
        "[get_weather(city='Paris', days=3), get_weather(city='Paris', days=3)]",
        fns,
        gt,
        "parallel",
    )
    assert not ast_check("[get_weather(city='Paris', days=3)]", fns, gt, "parallel")


def test_parallel_matching_is_greedy_first_fit():
    # Expected call 1 accepts Paris or Rome, call 2 only Paris. Greedy first fit gives call 1
    # the model's first call (Paris), and call 2 then finds no Paris left: the official checker
    # counts this wrong, although the other assignment would succeed.
    gt = [
        {"get_weather": {"city": ["Paris", "Rome"]}},
        {"get_weather": {"city": ["Paris"]}},
    ]
    fns = [WEATHER]
    assert not ast_check(
        "[get_weather(city='Paris'), get_weather(city='Rome')]", fns, gt, "parallel"
    )
    assert ast_check("[get_weather(city='Rome'), get_weather(city='Paris')]", fns, gt, "parallel")


def test_parallel_multiple_mixes_functions():
    gt = [
        {"calc.area": {"base": [2], "height": [3.0], "unit": [""]}},
        {"get_weather": {"city": ["Oslo"], "days": [""]}},
    ]
    out = "[get_weather(city='oslo'), calc.area(base=2, height=3)]"
    assert ast_check(out, [AREA, WEATHER], gt, "live_parallel_multiple")


def test_irrelevance_is_right_only_without_a_call():
    assert ast_check("I cannot help with that, no function fits.", [WEATHER], None, "irrelevance")
    assert ast_check("[]", [WEATHER], None, "live_irrelevance")
    assert not ast_check("[get_weather(city='Paris')]", [WEATHER], None, "irrelevance")


def test_relevance_is_right_only_with_a_call():
    assert ast_check("[get_weather(city='Nowhere')]", [WEATHER], None, "live_relevance")
    assert not ast_check("There is no such function.", [WEATHER], None, "live_relevance")


@pytest.mark.parametrize(
    "output",
    [
        "calc.area(base=10, height=",
        "Sure! Here is the call: calc.area(base=10)",
        "[1, 2, 3]",
        "[calc.area(**kwargs)]",
        "[calc.area(base=10 ** 100000, height=1.0)]",
        "",
        "```python\n[calc.area(base=10, height=5.0)]\n```",
    ],
)
def test_invalid_python_is_a_counted_failure_not_a_crash(output):
    assert simple(output) is False


def test_decoder_strips_backticks_and_adds_missing_brackets_without_running_code():
    assert decode_calls("`calc.area(base=2 * 3, height=-1.5)`\n") == [
        {"calc.area": {"base": 6, "height": -1.5}}
    ]
    assert decode_calls("[f(x=__import__('os').system('true'))]") == [
        {"f": {"x": "__import__('os').system('true')"}}
    ]
    assert not has_call("[]")
    assert has_call("[f()]")


def test_ground_truth_naming_an_absent_function_is_a_clear_error():
    gt = [{"nowhere": {"x": [1]}}]
    with pytest.raises(LokiInputError, match="nowhere"):
        ast_check("[get_weather(city='a')]", [WEATHER], gt, "multiple")


# --- answers built to make the decoder slow: refused as wrong, each well under a second -----

POWER_TOWER = "[f(x=((((9)**64)**64)**64)**64)]"  # 31 characters; 20 s to decode before the bound


@pytest.mark.parametrize(
    "output",
    [
        POWER_TOWER,
        "[f(x=(((((9)**64)**64)**64)**64)**64)]",
        "[f(x=" + "9**60*" * 30 + "1)]",
        "[f(x=" + "9" * 4000 + " * " + "9" * 4000 + ")]",
        '[f(x="a" * 10**9)]',
        "[f(x=[1] * 10**9)]",
        "[" * 10_000 + "]" * 10_000,
        "[f(x=" + "[" * 10_000 + "]" * 10_000 + ")]",
        "[f(x=" + "1+" * 1_000 + "1)]",
        "[f(x=" + "-" * 1_000 + "1)]",
        "[f(x=" + "g(y=" * 40 + "1" + ")" * 40 + ")]",
        "[f(x={[1]: 2})]",
        "[f(x='" + "a" * MAX_OUTPUT_CHARS + "')]",
    ],
)
def test_costly_or_deep_answers_are_refused_quickly(output):
    start = time.monotonic()
    with pytest.raises(DecodeError):
        decode_calls(output)
    assert not simple(output)
    assert not has_call(output)
    assert time.monotonic() - start < 1.0


def test_power_tower_names_the_bound():
    with pytest.raises(DecodeError, match="over 512 bits"):
        decode_calls(POWER_TOWER)


def test_ordinary_arithmetic_still_decodes():
    out = "[f(a=3*4, b=2**10, c=-1.5, d=10**64, e=2.5**3, g=7//2, h=2**-1, i=[1+2, 3.0/2])]"
    assert decode_calls(out) == [
        {
            "f": {
                "a": 12,
                "b": 1024,
                "c": -1.5,
                "d": 10**64,
                "e": 15.625,
                "g": 3,
                "h": 0.5,
                "i": [3, 1.5],
            }
        }
    ]
    nested = "[f(x=" + "[" * 20 + "1" + "]" * 20 + ")]"
    value = decode_calls(nested)[0]["f"]["x"]
    for _ in range(20):
        value = value[0]
    assert value == 1
