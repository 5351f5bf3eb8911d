"""BFCL (v3 and v4): its data as tool-calling rows, and the single-turn verdicts.

The questions, possible answers and function docs are read from an installed package
(``nvidia-bfcl`` ships v3, ``bfcl-eval`` v4); single-turn verdicts are BFCL's own AST checker
(``bfcl.eval_checker.ast_eval.ast_checker``), called on the model's decoded tool calls the
way BFCL's evaluation runner calls it for an OpenAI function-calling model. Multi-turn rows
are played and checked by :mod:`nel.skills.bfcl_multi_turn`.

A function doc becomes an OpenAI tool as BFCL's handlers convert one: a hint naming the
source language is appended to the description, Java and JavaScript parameters become strings
(their values are source text the checker parses), BFCL's types map to JSON Schema types
(``GORILLA_TO_OPENAPI``), and a dotted name (``math.factorial``) is sent as
``math_factorial``, since OpenAI names allow no dots; the checker maps it back.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Row = dict[str, Any]

CHECKER_MODEL = "gpt-4o-2024-11-20-FC"
"""A model name BFCL's checker treats as an OpenAI function-calling model (dots sent as ``_``)."""

ADDED_FUNCTIONS_PROMPT = "I have updated some more functions you can choose from. What about now?"
"""The user turn BFCL sends when held-out functions are added (miss_func), function-calling mode."""


@dataclass(frozen=True)
class Category:
    name: str
    kind: str  # "ast", "irrelevance", "relevance" or "multi_turn"
    language: str = "Python"


def _ast(name: str, language: str = "Python") -> Category:
    return Category(name, "ast", language)


V3_CATEGORIES = (
    _ast("simple"), _ast("multiple"), _ast("parallel"), _ast("parallel_multiple"),
    _ast("java", "Java"), _ast("javascript", "JavaScript"), Category("irrelevance", "irrelevance"),
    _ast("live_simple"), _ast("live_multiple"), _ast("live_parallel"), _ast("live_parallel_multiple"),
    Category("live_irrelevance", "irrelevance"), Category("live_relevance", "relevance"),
    Category("multi_turn_base", "multi_turn"), Category("multi_turn_miss_func", "multi_turn"),
    Category("multi_turn_miss_param", "multi_turn"), Category("multi_turn_long_context", "multi_turn"),
)  # fmt: skip
"""NeMo-Skills' 17 BFCL v3 categories (4,441 rows); the exec_*, rest, sql and chatable files are not scored by BFCL v3."""

V4_CATEGORIES = tuple(
    Category({"simple": "simple_python", "java": "simple_java", "javascript": "simple_javascript"}.get(c.name, c.name),
             c.kind, c.language)
    for c in V3_CATEGORIES
)  # fmt: skip
"""BFCL v4's non-agentic categories: v3's, with simple split by language. Not run: web_search and
memory (agentic: a live search engine and memory backends, which nel does not provide)."""

_HINTS = {"Java": " Note that the provided function is in Java 8 SDK syntax.",
          "JavaScript": " Note that the provided function is in JavaScript syntax."}  # fmt: skip
_PYTHON_HINT = " Note that the provided function is in Python 3 syntax."


def read_lines(path: Path) -> list[Row]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def category_rows(data: Path, prefix: str, category: Category) -> Iterator[Row]:
    """Prepared rows of one category: question, function docs, tools, ground truth, subset."""
    questions = read_lines(data / f"{prefix}_{category.name}.json")
    answers_path = data / "possible_answer" / f"{prefix}_{category.name}.json"
    answers = {a["id"]: a["ground_truth"] for a in read_lines(answers_path)} if answers_path.exists() else {}
    for question in questions:
        row: Row = {
            "id": question["id"],
            "subset_for_metrics": category.name,
            "bfcl_kind": category.kind,
            "language": category.language,
            "turns": question["question"],
            "question": _last_user_text(question["question"]),
            "expected_answer": json.dumps(answers.get(question["id"], [])),
        }
        functions = question.get("function", [])
        if category.kind == "multi_turn":
            functions, held_out = _multi_turn_functions(data, prefix, question)
            row.update(initial_config=question["initial_config"], involved_classes=question["involved_classes"],
                       bfcl_package=_PACKAGE_OF[prefix],
                       held_out_tools={turn: to_tools(docs, category) for turn, docs in held_out.items()})  # fmt: skip
        row["function"] = functions
        row["tools"] = to_tools(functions, category)
        yield row


def _last_user_text(turns: list[list[dict[str, Any]]]) -> str:
    texts = [m.get("content") or "" for turn in turns for m in turn if m.get("role") == "user"]
    return texts[-1] if texts else ""


_PACKAGE_OF = {"BFCL_v3": "bfcl", "BFCL_v4": "bfcl_eval"}
_DOC_FILES = {"bfcl": "bfcl.constant", "bfcl_eval": "bfcl_eval.constants.executable_backend_config"}


def _multi_turn_functions(data: Path, prefix: str, question: Row) -> tuple[list[Row], dict[str, list[Row]]]:
    """The docs of the entry's classes, minus the held-out ones (turn index -> their docs)."""
    import importlib

    doc_files = importlib.import_module(_DOC_FILES[_PACKAGE_OF[prefix]]).MULTI_TURN_FUNC_DOC_FILE_MAPPING
    functions: list[Row] = []
    for class_name in question["involved_classes"]:
        functions += read_lines(data / "multi_turn_func_doc" / doc_files[class_name])
    held_out: dict[str, list[Row]] = {}
    for turn, names in (question.get("missed_function") or {}).items():
        held_out[turn] = [f for f in functions if f["name"] in names]
        functions = [f for f in functions if f["name"] not in names]
    return functions, held_out


def to_tools(functions: list[Row], category: Category) -> list[Row]:
    """BFCL function docs as OpenAI tools (see the module docstring for the rules)."""
    from bfcl.model_handler.constant import GORILLA_TO_OPENAPI

    tools = []
    for doc in copy.deepcopy(functions):
        doc["description"] = doc.get("description", "") + _HINTS.get(category.language, _PYTHON_HINT)
        properties = doc["parameters"].get("properties", {})
        if category.language != "Python":
            _as_source_text(properties, category.language)
        doc["name"] = re.sub(r"\.", "_", doc["name"])
        doc["parameters"]["type"] = "object"
        doc["parameters"]["properties"] = _openai_types(properties, GORILLA_TO_OPENAPI)
        tools.append({"type": "function", "function": doc})
    return tools


def _as_source_text(properties: dict[str, Any], language: str) -> None:
    """Java/JavaScript parameters are passed as source text: say so, and type them as strings."""
    for value in properties.values():
        kind = value.get("type")
        if kind == "any":
            value["description"] += f" This parameter can be of any type of {language} object in string representation."
        else:
            value["description"] += f" This is {'Java 8' if language == 'Java' else language} {kind} type parameter in string representation."
        if kind in ("ArrayList", "Array", "array") and "items" in value:
            value["description"] += f" The list elements are of type {value['items']['type']}; they are not in string representation."
            del value["items"]
        if kind == "dict" and "properties" in value:
            value["description"] += (f" The dictionary entries have the following schema; they are not in string "
                                     f"representation. {json.dumps(value['properties'])}")  # fmt: skip
            del value["properties"]
        value["type"] = "string"


def _openai_types(properties: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    for value in properties.values():
        kind = value.get("type", "string")
        if kind == "float":
            value["format"] = "float"
            value["description"] = value.get("description", "") + " This is a float type value."
        value["type"] = mapping.get(kind, "string")
        if "properties" in value:
            value["properties"] = _openai_types(value["properties"], mapping)
        items = value.get("items")
        if isinstance(items, dict) and "type" in items:
            items["type"] = mapping.get(items["type"], "string")
            if "properties" in items:
                items["properties"] = _openai_types(items["properties"], mapping)
            inner = items.get("items")
            if isinstance(inner, dict) and "type" in inner:
                inner["type"] = mapping.get(inner["type"], "string")
    return properties


# --------------------------------------------------------------------------- decoding and verdicts


def decode_calls(tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI tool calls as BFCL's decoded form ``[{name: {arg: value}}]``; raises ValueError
    when an arguments string is not a JSON object (BFCL's decoder fails there too)."""
    decoded = []
    for call in tool_calls:
        function = call.get("function") or {}
        arguments = function.get("arguments") or "{}"
        try:
            args = json.loads(arguments) if isinstance(arguments, str) else arguments
        except json.JSONDecodeError as exc:
            raise ValueError(f"arguments of {function.get('name')!r} are not JSON: {exc}") from exc
        if not isinstance(args, dict):
            raise ValueError(f"arguments of {function.get('name')!r} are not a JSON object")
        decoded.append({str(function.get("name")): args})
    return decoded


def single_turn_verdict(row: Row, tool_calls: list[dict[str, Any]]) -> tuple[bool, dict[str, Any]]:
    """BFCL's verdict on one single-turn row: (correct, evidence)."""
    error: str | None = None
    try:
        decoded = decode_calls(tool_calls)
    except ValueError as exc:
        decoded, error = [], str(exc)
    kind = row["bfcl_kind"]
    if kind in ("irrelevance", "relevance"):
        called = bool(decoded)
        correct = called if kind == "relevance" else not called
        return correct, {"decoded": decoded, "decode_error": error, "called_a_function": called}
    if error is not None:
        return False, {"error_type": "ast_decoder:decoder_failed", "error": error}
    if not decoded:
        return False, {"error_type": "ast_decoder:no_function_call", "error": "the model called no function"}
    from bfcl.eval_checker.ast_eval.ast_checker import ast_checker

    try:
        result = ast_checker(row["function"], decoded, json.loads(row["expected_answer"]), row["language"],
                             row["subset_for_metrics"], CHECKER_MODEL)  # fmt: skip
    except Exception as exc:  # the checker raises on some malformed values; BFCL counts those wrong too
        return False, {"decoded": decoded, "error_type": "ast_checker:exception", "error": f"{type(exc).__name__}: {exc}"}
    details = {"decoded": decoded, **{k: v for k, v in result.items() if k != "valid"}}
    return bool(result["valid"]), details


def ground_truth_calls(expected: list[dict[str, Any]], functions: list[Row], language: str = "Python") -> list[dict[str, Any]]:
    """OpenAI tool calls that make the possible answer, for the test server and the ground-truth
    figure: an optional parameter that may be left out (``""`` allowed) is left out, any other
    takes its first allowed value (nested dicts alike); dots sent as ``_``; Java and JavaScript
    values as their source text."""
    docs = {f["name"]: f.get("parameters", {}) for f in functions}
    calls = []
    for item in expected:
        for name, params in item.items():
            schema = docs.get(name, {})
            args = _pick_all(params, set(schema.get("required", [])))
            if language != "Python":
                props = schema.get("properties", {})
                args = {k: _source_text(v, language, props.get(k, {}).get("type"),
                                        (props.get(k, {}).get("items") or {}).get("type")) for k, v in args.items()}  # fmt: skip
            calls.append({"name": re.sub(r"\.", "_", name), "arguments": args})
    return calls


def _pick_all(params: dict[str, Any], required: set[str] | None = None) -> dict[str, Any]:
    out = {}
    for key, allowed in params.items():
        allowed = allowed if isinstance(allowed, list) else [allowed]
        chosen = [v for v in allowed if v != ""]
        if chosen and not ("" in allowed and required is not None and key not in required):
            out[key] = _pick(chosen[0])
    return out


def _pick(value: Any) -> Any:
    if isinstance(value, dict):
        return _pick_all(value)
    if isinstance(value, list):
        return [_pick(v) for v in value]
    return value


def _source_text(value: Any, language: str, kind: str | None = None, item_kind: str | None = None) -> str:
    if language == "Java" and kind == "long" and not isinstance(value, bool):
        return f"{value}L"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if language == "Java" and isinstance(value, list):
        items = ", ".join(_java_literal(v, item_kind) for v in value)
        return f"new ArrayList<>(Arrays.asList({items}))" if kind == "ArrayList" else f"new Object[]{{{items}}}"
    if language == "Java" and isinstance(value, dict):
        puts = " ".join(f"put({_java_literal(k)}, {_java_literal(v)});" for k, v in value.items())
        return f"new HashMap<String, Object>() {{{{ {puts} }}}}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _java_literal(value: Any, kind: str | None = None) -> str:
    """An element or map entry; BFCL's Java parser keeps the quotes of a ``String`` element, so
    those go unquoted (as its own possible answers read)."""
    if isinstance(value, str):
        return value if kind == "String" else json.dumps(value)
    return _source_text(value, "Java", kind)


# --------------------------------------------------------------------------- aggregation


_NON_LIVE_SIMPLE = ("simple", "java", "javascript", "simple_python", "simple_java", "simple_javascript")
_NON_LIVE_OTHER = ("multiple", "parallel", "parallel_multiple")
_LIVE_AST = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
_MULTI_TURN = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context")


def _combine(parts: list[tuple[float, int]], weighted: bool) -> tuple[float, int]:
    """(accuracy, entries) of several parts: their mean, by entries when ``weighted``."""
    total = sum(n for _, n in parts)
    if not parts or total == 0:
        return 0.0, 0
    if weighted:
        return sum(a * n for a, n in parts) / total, total
    return sum(a for a, _ in parts) / len(parts), total


def overall_accuracy(per_category: dict[str, tuple[float, int]]) -> dict[str, float]:
    """BFCL's summary scores from per-category (accuracy, entries), as NeMo-Skills' ``bfcl_score``
    computes them: non-live (simple categories averaged first, then unweighted), live (weighted by
    entries), multi-turn (unweighted); overall is the unweighted mean of the three. A group with no
    category in the run is left out."""
    def pick(names: tuple[str, ...]) -> list[tuple[float, int]]:
        return [per_category[n] for n in names if n in per_category]

    groups: dict[str, tuple[float, int]] = {}
    simple = pick(_NON_LIVE_SIMPLE)
    non_live = ([_combine(simple, False)] if simple else []) + pick(_NON_LIVE_OTHER) + pick(("irrelevance",))
    if non_live:
        groups["overall_non_live"] = _combine(non_live, False)
    live = pick(_LIVE_AST) + pick(("live_irrelevance", "live_relevance"))
    if live:
        groups["overall_live"] = _combine(live, True)
    multi = pick(_MULTI_TURN)
    if multi:
        groups["overall_multi_turn"] = _combine(multi, False)
    out = {name: 100.0 * acc for name, (acc, _) in groups.items()}
    if groups:
        out["overall_accuracy"] = 100.0 * _combine(list(groups.values()), False)[0]
    return out
