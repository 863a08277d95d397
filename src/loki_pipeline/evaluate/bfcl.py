"""BFCL-style AST checking of one function-calling answer (the rules of BFCL's own AST checker).

A model answers in bracket-call syntax, ``[f(a=1, b="x"), g(c=[1, 2])]``. The answer is parsed
with Python's ``ast`` (never evaluated) into ``[{name: {arg: value}}]`` and judged against the
item's function specs and its ``ground_truth`` (``[{name: {arg: [allowed values]}}]``), following
the official checker (``bfcl_eval/eval_checker/ast_eval/ast_checker.py`` in the ``bfcl-eval``
wheel) rule for rule, Python categories only:

- the function name must match; no argument outside the spec and the ground truth; every
  required argument present; an argument absent from the answer must allow ``""`` (optional);
- a value's type must be the declared one (``bool`` is not ``int``), except that an ``int`` is
  accepted for a declared ``float`` (not the reverse) and a ``tuple`` for a declared ``tuple``;
  when the allowed values have another type than the declared one (the dataset's "variables"),
  a value of the allowed values' type is accepted and compared as is;
- strings (also inside lists and dicts) are compared after removing spaces and ``,./-_*^`` and
  lower-casing; lists element by element; a dict key by key, each against its own allowed
  values (``""`` marks an optional key); a list of dicts position by position;
- ``simple``: exactly one call; ``multiple``: exactly one call, checked against the expected
  function; ``parallel*``: as many calls as expected, each expected call matched greedily to the
  first unused model call that satisfies it (any order);
- ``irrelevance``: right iff the answer holds no call (unparsable or empty counts as none);
  ``relevance``: right iff it holds at least one call.

An answer that is not valid Python is a counted failure (``False``), never an exception. So is
one the decoder will not spend time on: longer than ``MAX_OUTPUT_CHARS``, nested deeper than
``MAX_DEPTH``, or with arithmetic whose integer result would exceed ``MAX_INT_BITS`` (checked
before computing, so ``((((9)**64)**64)**64)**64`` is refused at once instead of taking minutes).
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Mapping, Sequence
from typing import Any

from loki_pipeline.errors import LokiInputError

#: BFCL's declared parameter types -> the Python type a value must have.
PYTHON_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "float": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "any": str,
}
_NESTED_TYPES = ("array", "tuple")
_STRIP = re.compile(r"[ ,./\-_*^]")

#: Longest model answer the decoder reads (characters); a longer one counts as wrong. BFCL
#: answers are a few hundred characters; the bound keeps ``ast.parse`` and the checks cheap.
MAX_OUTPUT_CHARS = 100_000
#: Deepest syntax tree the decoder resolves (AST levels, a call and its keyword included); real
#: answers nest a handful of lists and dicts, and the resolver recurses once per level.
MAX_DEPTH = 50
#: Largest integer (bits) one arithmetic step may produce, checked before a multiplication or a
#: power is computed: a 31-character answer could otherwise ask for a 10^8-bit number.
MAX_INT_BITS = 512


class DecodeError(ValueError):
    """The answer is not a bracket list of function calls."""


# --------------------------------------------------------------------------------------------
# decoding


def decode_calls(output: str) -> list[dict[str, dict[str, Any]]]:
    """Parse a bracket-call answer into ``[{name: {arg: value}}]`` (BFCL's prompting decoder).

    Like the official decoder: strip backticks, newlines and spaces at both ends, add missing
    outer brackets, drop wrapping single quotes, then read the calls with ``ast``. Dotted names
    (``math.factorial``) keep their dots. Raises ``DecodeError`` for anything else.
    """
    if len(output) > MAX_OUTPUT_CHARS:
        raise DecodeError(f"answer of {len(output)} characters, over {MAX_OUTPUT_CHARS}")
    text = output.strip("`\n ")
    if not text.startswith("["):
        text = "[" + text
    if not text.endswith("]"):
        text = text + "]"
    try:
        body = ast.parse(text.strip().strip("'"), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise DecodeError(f"not valid Python: {err}") from None
    check_depth(body)
    if isinstance(body, ast.Call):
        return [_resolve_call(body)]
    if not isinstance(body, (ast.List, ast.Tuple, ast.Set)):
        raise DecodeError(f"expected a list of calls, got {type(body).__name__}")
    calls = []
    for elem in body.elts:
        if not isinstance(elem, ast.Call):
            raise DecodeError(f"list element is a {type(elem).__name__}, not a call")
        calls.append(_resolve_call(elem))
    return calls


def check_depth(root: ast.AST) -> None:
    """Refuse a tree deeper than ``MAX_DEPTH`` before anything recurses into it."""
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise DecodeError(f"answer nested deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _resolve_call(node: ast.Call) -> dict[str, dict[str, Any]]:
    parts = []
    func = node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    name = ".".join(reversed(parts))
    args = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise DecodeError("**kwargs is not a parameter assignment")
        args[kw.arg] = resolve_value(kw.value)
    return {name: args}


_ARITH = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


def resolve_value(node: ast.AST) -> Any:
    """A literal's value, as the official decoder reads it, without ever running model code."""
    if isinstance(node, ast.Constant):
        return "..." if node.value is Ellipsis else node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = resolve_value(node.operand)
        if not isinstance(value, (int, float, complex)) or isinstance(value, bool):
            raise DecodeError(f"unary sign on a non-number: {ast.unparse(node)}")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.List):
        return [resolve_value(v) for v in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(resolve_value(v) for v in node.elts)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise DecodeError("dict unpacking is not a literal")
        try:
            return {
                resolve_value(k): resolve_value(v)
                for k, v in zip(node.keys, node.values, strict=True)
            }
        except TypeError as err:  # an unhashable key such as {[1]: 2}
            raise DecodeError(f"{ast.unparse(node)}: {err}") from None
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        # The official decoder eval()s arithmetic like 3*4; numbers only here, small powers.
        left, right = resolve_value(node.left), resolve_value(node.right)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right)):
            raise DecodeError(f"arithmetic on non-numbers: {ast.unparse(node)}")
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise DecodeError(f"power too large: {ast.unparse(node)}")
        if _int_bits(node.op, left, right) > MAX_INT_BITS:
            raise DecodeError(f"number over {MAX_INT_BITS} bits: {ast.unparse(node)}")
        try:
            return _ARITH[type(node.op)](left, right)
        except (ZeroDivisionError, OverflowError) as err:
            raise DecodeError(f"{ast.unparse(node)}: {err}") from None
    if isinstance(node, ast.Name):
        return node.id  # a variable name stands for itself, as in the official decoder
    if isinstance(node, ast.Call):
        return ast.unparse(node) if not node.keywords else _resolve_call(node)
    if isinstance(node, (ast.Subscript, ast.Lambda, ast.Attribute)):
        return ast.unparse(node)
    raise DecodeError(f"unsupported value {type(node).__name__}: {ast.unparse(node)}")


def _int_bits(op: ast.operator, left: float, right: float) -> int:
    """Upper bound on the bits of an integer product or power, before computing it.

    Only these two grow an integer faster than by a bit; a float is fixed-size (its overflow
    raises ``OverflowError`` or gives ``inf``) and costs nothing to compute.
    """
    if not (isinstance(left, int) and isinstance(right, int)):
        return 0
    if isinstance(op, ast.Mult):
        return left.bit_length() + right.bit_length()
    if isinstance(op, ast.Pow) and right > 0:
        return abs(left).bit_length() * right
    return 0


def is_call_list(decoded: Any) -> bool:
    """``[{name: {arg: value}}, ...]`` (an empty list included)."""
    return isinstance(decoded, list) and all(
        isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item.values())), dict)
        for item in decoded
    )


def has_call(output: str) -> bool:
    """Whether the answer holds at least one function call (BFCL's relevance decision)."""
    try:
        decoded = decode_calls(output)
    except DecodeError:
        return False
    if not is_call_list(decoded) or not decoded:
        return False
    return not (len(decoded) == 1 and not decoded[0])


# --------------------------------------------------------------------------------------------
# value rules


def standardize_string(text: str) -> str:
    """Drop spaces and ``,./-_*^``, lower-case, and read single quotes as double quotes."""
    return _STRIP.sub("", text).lower().replace("'", '"')


def _std(value: Any) -> Any:
    return standardize_string(value) if isinstance(value, str) else value


def _allowed_type(allowed: Sequence[Any]) -> type | None:
    """Type of the first allowed value that is not the optional marker ``""``."""
    for value in allowed:
        if value != "":
            return type(value)
    return None


def _type_ok(
    value: Any, allowed: Sequence[Any], expected: type, nested: type | None
) -> tuple[bool, bool]:
    """``(valid, is_variable)``: the official ``type_checker`` for one value."""
    allowed_type = _allowed_type(allowed)
    is_variable = allowed_type is not None and allowed_type is not expected
    if type(value) is expected:
        if nested is None:
            return True, is_variable
        for option in allowed:
            if not isinstance(option, list) or all(
                _type_ok(item, option, nested, None)[0] for item in value
            ):
                return True, is_variable
    # A value of the allowed values' own type stands for a variable: compare it as is.
    if allowed_type is not None and type(value) is allowed_type:
        return True, True
    return False, is_variable


def _dict_ok(value: Mapping[str, Any], allowed: Sequence[Any]) -> bool:
    for option in allowed:
        if option == "" or not isinstance(option, Mapping):
            continue
        if all(
            key in option and _std(v) in [_std(a) for a in option[key]] for key, v in value.items()
        ) and all(key in value or "" in vals for key, vals in option.items()):
            return True
    return False


def _list_of_dicts_ok(value: Sequence[Any], allowed: Sequence[Any]) -> bool:
    for option in allowed:
        if not isinstance(option, list) or len(option) != len(value):
            continue
        if all(
            isinstance(v, Mapping) and _dict_ok(v, [o]) for v, o in zip(value, option, strict=True)
        ):
            return True
    return False


def _value_ok(param: str, value: Any, spec: Mapping[str, Any], allowed: Sequence[Any]) -> bool:
    declared = spec.get("type")
    expected = PYTHON_TYPES.get(declared)
    if expected is None:  # an undeclared or unknown type: only the value itself can be judged
        return value in allowed
    nested = None
    if declared in _NESTED_TYPES:
        nested = PYTHON_TYPES.get((spec.get("items") or {}).get("type"))
    if declared == "tuple" and isinstance(value, tuple):
        value = list(value)
    if declared == "float" and type(value) is int:
        value = float(value)  # Python would widen it; the reverse is a type error
    valid, is_variable = _type_ok(value, allowed, expected, nested)
    if not valid:
        return False
    if not is_variable:
        if expected is dict:
            return isinstance(value, Mapping) and _dict_ok(value, allowed)
        if expected is list and nested is dict:
            return _list_of_dicts_ok(value, allowed)
        if expected is str:
            return standardize_string(value) in [
                standardize_string(a) for a in allowed if isinstance(a, str)
            ]
        if expected is list:
            # The official checker iterates every option, so the optional "" acts as [].
            return [_std(v) for v in value] in [
                [_std(a) for a in option] for option in allowed if isinstance(option, (list, str))
            ]
    return value in allowed


# --------------------------------------------------------------------------------------------
# call rules


def check_call(
    function: Mapping[str, Any],
    call: Mapping[str, Mapping[str, Any]],
    expected: Mapping[str, Mapping[str, Sequence[Any]]],
) -> bool:
    """One model call against one spec and one ground-truth call (``simple_function_checker``)."""
    allowed_args = next(iter(expected.values()))
    name = function["name"]
    if name not in call:
        return False
    args = call[name]
    params = function.get("parameters") or {}
    properties = params.get("properties") or {}
    if any(req not in args for req in params.get("required") or []):
        return False
    for param, value in args.items():
        if param not in properties or param not in allowed_args:
            return False
        if not _value_ok(param, value, properties[param], allowed_args[param]):
            return False
    return all(param in args or "" in allowed for param, allowed in allowed_args.items())


def _find_function(functions: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    for function in functions:
        if function.get("name") == name:
            return function
    raise LokiInputError(
        f"BFCL ground truth names function {name!r}, which is not in the item's function list "
        f"{[f.get('name') for f in functions]}"
    )


def ast_check(
    output: str,
    functions: Sequence[Mapping[str, Any]],
    ground_truth: Sequence[Mapping[str, Mapping[str, Sequence[Any]]]] | None,
    category: str,
) -> bool:
    """Whether the raw ``output`` answers a BFCL item right, by the rules in the module docstring.

    ``functions`` is the item's ``function`` list, ``ground_truth`` its ``possible_answer`` entry's
    ``ground_truth`` (unused, may be ``None``, for relevance and irrelevance) and ``category`` the
    BFCL category (``simple_python``, ``live_parallel``, ``irrelevance``...), which picks the rule.
    Raises ``LokiInputError`` only for a malformed item, never for a bad answer.
    """
    if "java" in category:
        raise LokiInputError(f"BFCL category {category!r}: only the Python categories are checked")
    if "irrelevance" in category:
        return not has_call(output)
    if "relevance" in category:
        return has_call(output)
    if not ground_truth:
        raise LokiInputError(f"BFCL category {category!r} needs a non-empty ground_truth")
    try:
        calls = decode_calls(output)
    except DecodeError:
        return False
    if not is_call_list(calls) or len(calls) != len(ground_truth):
        return False
    if "parallel" in category:
        used: set[int] = set()
        for expected in ground_truth:
            function = _find_function(functions, next(iter(expected)))
            match = next(
                (
                    i
                    for i, c in enumerate(calls)
                    if i not in used and check_call(function, c, expected)
                ),
                None,
            )
            if match is None:
                return False
            used.add(match)
        return True
    expected = ground_truth[0]
    if "multiple" in category:
        function = _find_function(functions, next(iter(expected)))
    else:
        function = functions[0]  # simple: the item's one function, as the official checker
    return check_call(function, calls[0], expected)
