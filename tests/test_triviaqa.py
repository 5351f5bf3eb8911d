"""TriviaQA (rc.nocontext) end to end, and exact match over every alias.

The data is an upstream-format Parquet file (``mandarjoshi/trivia_qa``'s columns) served over
loopback, prepared by ``nel prepare --mirror``; a real local model server answers by rule; the
normalization is checked against TriviaQA's official definition, written out here independently.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import re
import string
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nel.cli import EXIT_OK, main
from nel.errors import DataError, ScoringError
from nel.scoring.exact_match import normalize_answer, score_exact_match
from nel.skills.catalog import get_benchmark
from nel.skills.converters import triviaqa_rows
from nel.skills.prompts import get_prompt_config
from nel.skills.scoring_types import ScoringOptions, scoring_type
from nel.testing.model_server import ModelServer, Rule

_S = pa.list_(pa.string())
SCHEMA = pa.schema([
    ("question", pa.string()), ("question_id", pa.string()), ("question_source", pa.string()),
    ("entity_pages", pa.struct([("doc_source", _S), ("filename", _S), ("title", _S), ("wiki_context", _S)])),
    ("search_results", pa.struct([("description", _S), ("filename", _S), ("rank", pa.list_(pa.int32())),
                                  ("title", _S), ("url", _S), ("search_context", _S)])),
    ("answer", pa.struct([("aliases", _S), ("normalized_aliases", _S), ("matched_wiki_entity_name", pa.string()),
                          ("normalized_matched_wiki_entity_name", pa.string()), ("normalized_value", pa.string()),
                          ("type", pa.string()), ("value", pa.string())])),
])  # fmt: skip

# question, value, aliases, normalized aliases, a right reply (a non-first alias, articles,
# punctuation, case) and a wrong one. Written for this test in TriviaQA's shape.
HANDWRITTEN = [
    ("Which English city is home to the football club Aston Villa?", "Birmingham",
     ["Birmingham", "Brum", "City of Birmingham"], ["birmingham", "brum", "city of birmingham"],
     "It is in the West Midlands.\n\n\\boxed{Brum}", "\\boxed{Manchester}"),
    ("Who wrote the novel Frankenstein", "Mary Shelley",
     ["Mary Shelley", "Mary Wollstonecraft Shelley", "Mary W. Shelley"],
     ["mary shelley", "mary wollstonecraft shelley", "mary w shelley"],
     "\\boxed{\\text{Mary W Shelley}}", "\\boxed{Percy Shelley}"),
    ("Which band released the album Abbey Road in 1969?", "The Beatles",
     ["The Beatles", "Beatles", "The Fab Four"], ["beatles", "fab four"],
     "That was \\boxed{the Fab Four!}", "\\boxed{The Rolling Stones}"),
    ("What is the chemical symbol for gold?", "Au", ["Au"], ["au"], "**Answer:** au.", "**Answer:** Ag"),
    ("Which Russian city was called Leningrad from 1924 to 1991?", "Saint Petersburg",
     ["Saint Petersburg", "Sankt-Peterburg", "St. Petersburg"],
     ["saint petersburg", "sankt peterburg", "st petersburg"],
     "\\boxed{Sankt Peterburg}", "\\boxed{Moscow}"),
]  # fmt: skip


def _row(i: int, question: str, value: str, aliases: list[str], normalized: list[str]) -> dict[str, Any]:
    return {
        "question": question, "question_id": f"fixture_{i}", "question_source": "http://example.invalid/quiz",
        "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
        "search_results": {"description": [], "filename": [], "rank": [], "title": [], "url": [],
                           "search_context": []},
        "answer": {"aliases": aliases, "normalized_aliases": normalized, "matched_wiki_entity_name": "",
                   "normalized_matched_wiki_entity_name": "", "normalized_value": normalized[0], "type": "WikipediaEntity",
                   "value": value},
    }  # fmt: skip


def _parquet(rows: list[dict[str, Any]]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), sink)
    return sink.getvalue()


@pytest.fixture(scope="module")
def triviaqa_data(fixture_mirror: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``nel prepare triviaqa --mirror``: the handwritten rows, then generated ones up to the real
    split's 17,944 rows, so the row-count check runs as it does on the real file."""
    root, url = fixture_mirror
    count = get_benchmark("triviaqa").num_problems
    assert count == 17944
    rows = [_row(i, *r[:4]) for i, r in enumerate(HANDWRITTEN)]
    rows += [_row(i, f"Filler question {i}?", f"answer {i}", [f"answer {i}"], [f"answer {i}"])
             for i in range(len(rows), count)]  # fmt: skip
    (root / "triviaqa").mkdir()
    (root / "triviaqa" / "validation.parquet").write_bytes(_parquet(rows))
    data_dir = tmp_path_factory.mktemp("triviaqa-data")
    assert main(["prepare", "triviaqa", "--data-dir", str(data_dir), "--mirror", url,
                 "--skills-backend", "native"]) == EXIT_OK  # fmt: skip
    return data_dir


@pytest.mark.parametrize(("right", "score"), [(True, 100.0), (False, 0.0)])
def test_triviaqa_through_nel_eval_run(tmp_path: Path, triviaqa_data: Path, right: bool, score: float):
    rules = [Rule(match=q, content=good if right else bad) for q, _, _, _, good, bad in HANDWRITTEN]
    out = tmp_path / "run"
    with ModelServer(rules=rules) as server:
        code = main(["eval", "run", "--bench", "skills://triviaqa", "--model-url", server.base_url,
                     "--model-id", "m", "--data-dir", str(triviaqa_data), "--output-dir", str(out),
                     "--max-problems", str(len(HANDWRITTEN)), "--progress", "none",
                     "--skills-backend", "native"])  # fmt: skip
        prompts = [r.body["messages"][0]["content"] for r in server.requests]
    assert code == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())["triviaqa"]
    assert metrics["pass@1"]["correct"] == score
    rows = sorted(pq.read_table(out / "trajectories.parquet").to_pylist(), key=lambda r: r["problem_idx"])
    # the accepted answers are one field: aliases then normalized aliases, duplicates dropped
    assert json.loads(rows[2]["expected_answer"]) == ["The Beatles", "Beatles", "The Fab Four", "beatles", "fab four"]
    if right:
        details = [json.loads(r["details"]) for r in rows]
        assert [d["matched_answer"] for d in details] == ["Brum", "Mary W. Shelley", "The Fab Four", "Au",
                                                          "Sankt-Peterburg"]  # fmt: skip
    template = get_prompt_config("generic/general-boxed").user
    assert template.format(examples="", problem=HANDWRITTEN[3][0]) in prompts


# --------------------------------------------------------------------------- the definition


def official_normalize(s: str) -> str:
    """TriviaQA's ``normalize_answer`` as its evaluation script defines it (SQuAD's, punctuation to spaces)."""
    s = s.replace("_", " ").lower()
    excluded = set(string.punctuation + "\u2018\u2019\u00b4`")
    s = "".join(" " if ch in excluded else ch for ch in s)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split()).strip()


@pytest.mark.parametrize(
    "text",
    ["The Beatles", "O'Neil", "Washington, D.C.", "an apple a day", "Theatre of the Absurd", "A.A. Milne",
     "rock_and_roll", "  Mount   Everest. ", "Guns N' Roses", "`quoted` answer", "$1,000", "AN Other", "a-ha"],
)
def test_ascii_normalization_is_the_official_one(text: str):
    assert normalize_answer(text) == official_normalize(text)


def test_every_official_match_is_a_nel_match():
    """``nel(x) == nel(official(x))`` for every x, so official(p) == official(a) implies nel(p) == nel(a);
    over random strings of letters, articles, ASCII and Unicode punctuation and compatibility forms."""
    rng = random.Random(11)
    pieces = ["a", "an", "the", "The", "A", "x", "Bo", "é", "ß", "ﬁ", "Ⅻ", "ＡＢ", "½", "3", "\u2018", "\u2019",
              "\u00b4", "`", "“", "”", "–", "—", "'", "-", ".", ",", "_", " ", "\t", "£", "°"]  # fmt: skip
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        assert normalize_answer(text) == normalize_answer(official_normalize(text)), repr(text)


def test_unicode_forms_match_where_the_official_script_would_not():
    assert score_exact_match("\\boxed{“Hamlet”}", ["Hamlet"]).reward == 1.0
    assert official_normalize("“Hamlet”") != official_normalize("Hamlet")
    assert score_exact_match("\\boxed{Jean–Paul Sartre}", ["Jean-Paul Sartre"]).reward == 1.0


@pytest.mark.parametrize(
    ("response", "aliases", "reward"),
    [
        ("\\boxed{the Beatles}", ["Beatles"], 1.0),  # article dropped
        ("\\boxed{Beatles}", ["The Beatles"], 1.0),
        ("\\boxed{A.A. Milne}", ["A. A. Milne"], 1.0),  # both "milne": the initials are articles
        ("\\boxed{A.A. Milne}", ["AA Milne"], 0.0),  # "milne" is not "aa milne"
        ("\\boxed{Washington DC}", ["Washington, D.C."], 0.0),  # "washington d c": spaces count
        ("\\boxed{Brum}", ["Birmingham", "Brum"], 1.0),  # a non-first alias
        ("\\boxed{fab four}", ["The Fab Four", "beatles", "fab four"], 1.0),  # a normalized alias
        ("\\boxed{Birmingham, England}", ["Birmingham"], 0.0),  # exact, not containment
        ("Answer: ", ["Birmingham"], 0.0),
    ],
)
def test_alias_matching(response: str, aliases: list[str], reward: float):
    assert score_exact_match(response, aliases).reward == reward


def test_converter_keeps_aliases_then_normalized_aliases(tmp_path: Path):
    path = tmp_path / "validation.parquet"
    path.write_bytes(_parquet([_row(0, *HANDWRITTEN[2][:4])]))
    (row,) = triviaqa_rows([path])
    assert row["problem"] == HANDWRITTEN[2][0] and row["answer_value"] == "The Beatles"
    assert row["expected_answer"] == ["The Beatles", "Beatles", "The Fab Four", "beatles", "fab four"]


@pytest.mark.parametrize("expected", [[], ["Paris", 3], 7, None])
def test_malformed_expected_answer_is_a_scoring_error(expected: Any):
    scorer = scoring_type("exact_match").make_scorer(ScoringOptions(benchmark="triviaqa", metrics_type="exact_match"))
    with pytest.raises(ScoringError, match="row 9 of f.jsonl: expected_answer must be a string or a non-empty list"):
        asyncio.run(scorer.score("\\boxed{Paris}", {"expected_answer": expected}, where="row 9 of f.jsonl"))


def test_a_file_without_the_answer_column_names_it(tmp_path: Path):
    path = tmp_path / "validation.parquet"
    pq.write_table(pa.table({"question": ["Q?"], "question_id": ["q1"]}), path)
    with pytest.raises(DataError, match=r"validation\.parquet: no column question_source, answer \(it has question, "):
        list(triviaqa_rows([path]))


def test_an_answer_that_normalizes_to_nothing_never_matches():
    assert official_normalize("The The") == official_normalize("the") == ""
    assert score_exact_match("\\boxed{the}", ["The The"]).reward == 0.0
