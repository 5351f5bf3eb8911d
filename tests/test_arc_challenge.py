"""ARC-Challenge end to end: an upstream-format Parquet file (``allenai/ai2_arc``'s columns) served
over loopback, prepared by ``nel eval run`` itself, answered by a real local model server, scored by
the multichoice scorer; digit labels become letters."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nel.cli import EXIT_OK, main
from nel.errors import DataError
from nel.skills.catalog import get_benchmark
from nel.skills.converters import arc_rows
from nel.skills.data import read_jsonl
from nel.skills.prompts import get_prompt_config
from nel.testing.model_server import ModelServer, Rule

ARC_TYPE = pa.struct([("text", pa.list_(pa.string())), ("label", pa.list_(pa.string()))])
SCHEMA = pa.schema([("id", pa.string()), ("question", pa.string()), ("choices", ARC_TYPE), ("answerKey", pa.string())])

# Rows written for this test in ARC's shape: letter and digit labels, 3, 4 and 5 options.
HANDWRITTEN = [
    ("fixture-1", "Which gas do plants take in from the air to make food?",
     ["Oxygen", "Nitrogen", "Carbon dioxide", "Helium"], list("ABCD"), "C"),
    ("fixture-2", "Which tool is best for measuring the mass of a rock?",
     ["ruler", "balance", "thermometer", "graduated cylinder"], list("1234"), "2"),
    ("fixture-3", "In what state is water at 110 degrees Celsius at sea level?",
     ["liquid", "gas", "solid"], list("ABC"), "B"),
    ("fixture-4", "Which planet is closest to the Sun?",
     ["Venus", "Earth", "Mars", "Jupiter", "Mercury"], list("ABCDE"), "E"),
    ("fixture-5", "Which of these is a renewable resource?",
     ["coal", "oil", "natural gas", "wind"], list("1234"), "4"),
]  # fmt: skip
EXPECTED = ["C", "B", "B", "E", "D"]


def _row(id_: str, question: str, texts: list[str], labels: list[str], key: str) -> dict[str, Any]:
    return {"id": id_, "question": question, "choices": {"text": texts, "label": labels}, "answerKey": key}


def _parquet(rows: list[dict[str, Any]]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), sink)
    return sink.getvalue()


@pytest.fixture(scope="module")
def arc_mirror(fixture_mirror: tuple[Path, str]) -> str:
    """The handwritten rows first, then generated ones up to the real split's 1,172 rows, so the
    row-count check of preparation runs as it does on the real file."""
    root, url = fixture_mirror
    rows = [_row(*r) for r in HANDWRITTEN]
    count = get_benchmark("arc-challenge").num_problems
    assert count == 1172
    rows += [_row(f"filler-{i}", f"Filler question {i}?", ["w", "x", "y", "z"], list("ABCD"), "A")
             for i in range(count - len(rows))]  # fmt: skip
    (root / "arc-challenge").mkdir()
    (root / "arc-challenge" / "test.parquet").write_bytes(_parquet(rows))
    return url


@pytest.fixture(scope="module")
def arc_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("arc-data")


def _answerer(right: bool):
    """A model that states the right letter (or the next offered one) for each handwritten question."""

    def answer(body: dict[str, Any]) -> Rule:
        text = "\n".join(str(m.get("content") or "") for m in body["messages"])
        for (_, question, texts, _, _), letter in zip(HANDWRITTEN, EXPECTED):
            if question in text:
                offered = "ABCDE"[: len(texts)]
                chosen = letter if right else offered[(offered.index(letter) + 1) % len(offered)]
                return Rule(content=f"Let me think about the options.\n\nAnswer: {chosen}")
        return Rule(content="no idea")

    return answer


@pytest.mark.parametrize(("right", "score"), [(True, 100.0), (False, 0.0)])
def test_arc_challenge_through_nel_eval_run(
    tmp_path: Path, arc_mirror: str, arc_data_dir: Path, monkeypatch: pytest.MonkeyPatch, right: bool, score: float
):
    monkeypatch.setenv("NEL_DATA_MIRROR", arc_mirror)
    out = tmp_path / "run"
    with ModelServer(answer_fn=_answerer(right)) as server:
        code = main(["eval", "run", "--bench", "skills://arc-challenge", "--model-url", server.base_url,
                     "--model-id", "m", "--data-dir", str(arc_data_dir), "--output-dir", str(out),
                     "--max-problems", "5", "--progress", "none", "--skills-backend", "native"])  # fmt: skip
        prompts = [r.body["messages"][0]["content"] for r in server.requests]
    assert code == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())["arc-challenge"]
    assert metrics["pass@1"]["symbolic_correct"] == score
    assert metrics["pass@1"]["no_answer"] == 0.0
    rows = sorted(pq.read_table(out / "trajectories.parquet").to_pylist(), key=lambda r: r["problem_idx"])
    assert [r["expected_answer"] for r in rows] == EXPECTED
    if right:
        assert [r["extracted_answer"] for r in rows] == EXPECTED
    # mcq-10choices, the prompt NeMo-Skills gives its variable-option benchmark (MMLU-Pro)
    template = get_prompt_config("eval/aai/mcq-10choices").user
    five = next(p for p in prompts if "closest to the Sun" in p)
    assert five == template.format(problem="Which planet is closest to the Sun?\n\n"
                                   "A) Venus\nB) Earth\nC) Mars\nD) Jupiter\nE) Mercury")  # fmt: skip


def test_prepared_rows_map_digit_labels_to_letters(arc_mirror: str, arc_data_dir: Path):
    path = arc_data_dir / "arc-challenge" / "test.jsonl"
    if not path.exists():
        assert main(["prepare", "arc-challenge", "--data-dir", str(arc_data_dir), "--mirror", arc_mirror,
                     "--skills-backend", "native"]) == EXIT_OK  # fmt: skip
    rows = read_jsonl(path)
    assert len(rows) == 1172
    digit = rows[1]
    assert (digit["answer_key"], digit["expected_answer"]) == ("2", "B")
    assert digit["problem"] == ("Which tool is best for measuring the mass of a rock?\n\n"
                                "A) ruler\nB) balance\nC) thermometer\nD) graduated cylinder")  # fmt: skip
    assert digit["B"] == "balance" and "E" not in digit
    assert (rows[2]["expected_answer"], "D" in rows[2]) == ("B", False)  # three options: no D
    assert rows[3]["E"] == "Mercury" and rows[4]["expected_answer"] == "D"


@pytest.mark.parametrize(
    ("labels", "key", "message"),
    [
        (list("ABD"), "A", r"labels \['A', 'B', 'D'\] are neither"),
        (["1", "2", "B"], "1", "are neither"),
        (list("ABC"), "D", r"answerKey 'D' is not one of the labels"),
    ],
)
def test_bad_arc_rows_name_the_file_and_row(tmp_path: Path, labels: list[str], key: str, message: str):
    path = tmp_path / "test.parquet"
    path.write_bytes(_parquet([_row(*HANDWRITTEN[0]), _row("odd-1", "Q?", ["a", "b", "c"], labels, key)]))
    with pytest.raises(DataError, match=rf"test\.parquet row 1 \(id 'odd-1'\): .*{message}"):
        list(arc_rows([path]))
