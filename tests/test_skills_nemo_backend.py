"""The nemo_skills backend, and nel's native catalog checked against NeMo-Skills itself.

These tests need the ``nemo_skills`` package, which is not on the package index: install it
from NeMo-Skills' source into a scratch environment (docs/benchmarks.md says how) and run
``pytest -m nemo_skills``. Without it every test here is skipped.
"""

from __future__ import annotations

import asyncio
import csv
import importlib
import io
import json
import random
import tarfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.nemo_skills
pytest.importorskip("nemo_skills", reason="nemo_skills is not installed (see docs/benchmarks.md)")

from nel import ChatSolver, ModelClient, run_evaluation
from nel.cli import EXIT_OK, main
from nel.environments.skills import SkillsEnvironment
from nel.errors import ConfigError, UnknownBenchmarkError
from nel.skills import converters as cv
from nel.skills.backends import NativeBackend, select_backend
from nel.skills.catalog import CATALOG, get_benchmark
from nel.skills.data import read_jsonl, write_jsonl_atomic
from nel.skills.listing import list_benchmarks
from nel.skills.nemo_backend import NemoSkillsBackend, parse_args
from nel.skills.prepare import prepare
from nel.skills.prompts import PROMPT_CONFIGS
from nel.testing.model_server import ModelServer, Rule


def _text(body: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content") or "") for m in body["messages"])


async def _run(env: SkillsEnvironment, base_url: str, out: Path, **kw: Any):
    client = ModelClient(base_url, "test-model", max_retries=0)
    try:
        return await run_evaluation(env, ChatSolver(client), output_dir=out, progress="none", **kw)
    finally:
        await env.aclose()


# ---------------------------------------------------------------- the native catalog agrees with NeMo-Skills


def test_prompt_configs_are_nemo_skills_verbatim():
    from nemo_skills.prompt.utils import load_config

    for name, config in PROMPT_CONFIGS.items():
        upstream = load_config(name)
        assert config.user == upstream["user"], name
        assert config.system == upstream.get("system"), name


def test_catalog_metadata_matches_dataset_modules():
    checked = 0
    for bench in CATALOG.values():
        try:
            ns = NemoSkillsBackend(bench.name)
        except UnknownBenchmarkError:  # bfcl_v4 is not in NeMo-Skills
            assert bench.name == "bfcl_v4"
            continue
        if not ns.metrics_type:
            continue
        assert bench.metrics_type == ns.metrics_type, bench.name
        assert bench.eval_split == ns.eval_split, bench.name
        assert bench.prompt_config == ns.prompt_config, bench.name
        assert bench.judge_prompt_config == ns.judge_prompt_config, bench.name
        checked += 1
    assert checked >= 15


def test_generation_args_parse():
    assert parse_args(
        "++prompt_config=generic/codegen ++eval_type=evalplus ++eval_config.evalplus.dataset=humaneval"
    ) == {
        "prompt_config": "generic/codegen",
        "eval_type": "evalplus",
        "eval_config": {"evalplus": {"dataset": "humaneval"}},
    }


def _ns_prepare_module(name: str) -> Any:
    return importlib.import_module(f"nemo_skills.dataset.{name}.prepare")


def test_gsm8k_converter_equals_nemo_skills_prepare(tmp_path: Path, sources_mirror: str):
    """Run NeMo-Skills' own gsm8k prepare against the same upstream file (URL pointed at the mirror)."""
    module = _ns_prepare_module("gsm8k")
    original_url = module.URL
    module.URL = sources_mirror + "/gsm8k/{}.jsonl"
    try:
        module.save_data("test")
    finally:
        module.URL = original_url
    theirs = read_jsonl(Path(module.__file__).parent / "test.jsonl")
    ours = read_jsonl(prepare(get_benchmark("gsm8k"), tmp_path, mirror=sources_mirror, show_progress=False))
    assert ours == theirs


def test_aime_converter_equals_the_shipped_file(tmp_path: Path, sources_mirror: str):
    for name in ("aime24", "aime25"):
        shipped = Path(importlib.import_module(f"nemo_skills.dataset.{name}").__file__).parent / "test.txt"
        ours = read_jsonl(prepare(get_benchmark(name), tmp_path, mirror=sources_mirror, show_progress=False))
        assert ours == read_jsonl(shipped)


def test_mmlu_converter_equals_nemo_skills_prepare(tmp_path: Path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in (
            ("data/test/virology_test.csv", 'What is a virus?,"a, b",c,d,e,B\nshort,row\nQ2,1,2,3,4,A\n'),
            ("data/test/formal_logic_test.csv", "Is P?,yes,no,maybe,both,C\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = tmp_path / "data.tar"
    archive.write_bytes(buf.getvalue())
    module = _ns_prepare_module("mmlu")
    theirs = []
    for subject, questions in module.read_csv_files_from_tar(str(archive), "test").items():
        for entry in questions:  # the body of NeMo-Skills' save_data loop
            entry["subtopic"] = subject
            entry.update(module.get_mcq_fields(entry.pop("question"), [entry[c] for c in "ABCD"]))
            entry["subset_for_metrics"] = module.subcategories[subject][0]
            entry["examples_type"] = f"mmlu_few_shot_{entry['subtopic']}"
            theirs.append(entry)
    assert list(cv.mmlu_rows([archive])) == theirs
    assert cv.MMLU_SUBJECT_CATEGORY == {k: v[0] for k, v in module.subcategories.items()}


def test_gpqa_converter_equals_nemo_skills_format_entry(tmp_path: Path):
    fields = ["Question", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3", "Correct Answer",
              "Explanation", "Subdomain", "Writer's Difficulty Estimate"]  # fmt: skip
    raw = [
        dict(zip(fields, [f"Q{i}?\n", f"a{i}", f"b{i}  c", f"d [title]{i}", f"right{i}", "why" if i % 3 else "",
                          "Organic Chemistry", "Easy undergraduate level (or easier)" if i % 2 else ""]))
        for i in range(20)
    ]  # fmt: skip
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(raw)
    path = tmp_path / "gpqa_diamond.csv"
    path.write_text(out.getvalue())
    module = _ns_prepare_module("gpqa")
    random.seed(42)  # what save_data does before formatting the split
    theirs = [module.format_entry({k: (v or None) for k, v in row.items()}) for row in raw]
    assert list(cv.gpqa_rows([path])) == theirs


def test_mmlu_pro_and_simpleqa_converters_equal_nemo_skills_format_entry(tmp_path: Path):
    import pandas as pd
    import pyarrow as pa

    pro = [{"question": "Q?", "options": ["x", "y", "z"], "answer": "B", "category": "computer science"}]
    pq.write_table(pa.Table.from_pylist(pro), tmp_path / "pro.parquet")
    assert list(cv.mmlu_pro_rows([tmp_path / "pro.parquet"])) == [
        _ns_prepare_module("mmlu-pro").format_entry(pro[0])
    ]
    qa = [{"original_index": 3, "problem": "Who?", "answer": "Ada", "topic": "Science"}]
    pq.write_table(pa.Table.from_pylist(qa), tmp_path / "qa.parquet")
    frame = pd.DataFrame(qa)
    theirs = [_ns_prepare_module("simpleqa").format_entry_verified(row, idx) for idx, row in frame.iterrows()]
    assert json.loads(json.dumps(list(cv.simpleqa_verified_rows([tmp_path / "qa.parquet"])))) == json.loads(
        json.dumps(theirs, default=int)
    )


# ---------------------------------------------------------------- the backend end to end


def test_auto_prefers_nemo_skills_where_it_can_score():
    assert select_backend("gsm8k", "auto").kind == "nemo_skills"
    assert select_backend("gsm8k", "native").kind == "native"
    if not Path("/opt/benchmarks/IFBench").is_dir():
        assert isinstance(select_backend("ifbench", "auto"), NativeBackend)
        assert "/opt/benchmarks/IFBench" in (
            select_backend("ifbench", "nemo_skills").unsupported_reason() or ""
        )
    assert "evalplus" in (select_backend("human-eval", "nemo_skills").unsupported_reason() or "")


def test_forced_backend_that_cannot_score_fails_at_construction(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"human-eval cannot run with the nemo_skills backend: .*evalplus"):
        SkillsEnvironment("human-eval", data_dir=tmp_path, backend="nemo_skills")


def test_aime24_with_nemo_skills_prepare_prompt_and_math_evaluator(tmp_path: Path, sources_dir: Path):
    upstream = read_jsonl(sources_dir / "aime24" / "test.jsonl")
    correct = {0, 4, 9}

    def answer(body: dict[str, Any]) -> Rule:
        text = _text(body)
        idx = next(i for i, r in enumerate(upstream) if r["problem"] in text)
        value = upstream[idx]["expected_answer"] if idx in correct else "-1"
        return Rule(content=f"Work...\nFinal: \\boxed{{{value}}}")

    env = SkillsEnvironment("aime24", data_dir=tmp_path / "data", backend="nemo_skills", show_progress=False)
    with ModelServer(answer_fn=answer) as server:
        result = asyncio.run(_run(env, server.base_url, tmp_path / "run", n_repeats=2))
        first = server.requests[0].body["messages"]
    assert read_jsonl(tmp_path / "data" / "aime24" / "test.jsonl") == upstream  # NeMo-Skills' prepare.py ran
    assert first[0]["content"].startswith("Solve the following math problem.")
    assert result.complete
    assert result.metrics["aime24"]["pass@1[avg-of-2]"]["symbolic_correct"] == pytest.approx(10.0)
    table = pq.read_table(result.paths["trajectories"])
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["nel.skills_backend"] == "nemo_skills"
    details = json.loads(table.to_pylist()[0]["details"])
    assert details["backend"] == "nemo_skills" and "predicted_answer" in details


def test_multichoice_with_nemo_skills_file_evaluator(tmp_path: Path):
    rows = [{"expected_answer": a, "subset_for_metrics": "Physics", **cv.mcq_fields(f"Question number {i}?", list("wxyz"))}
            for i, a in enumerate("ACDB")]  # fmt: skip
    write_jsonl_atomic(tmp_path / "gpqa" / "diamond.jsonl", rows)
    replies = ["**Answer:** A", "I pick \\boxed{C}.\nAnswer: (c)", "\\boxed{2x+1}\nAnswer: B", "Not sure."]
    rules = [Rule(match=f"Question number {i}?", content=r) for i, r in enumerate(replies)]
    env = SkillsEnvironment("gpqa", data_dir=tmp_path, backend="nemo_skills")
    with ModelServer(rules=rules) as server:
        result = asyncio.run(_run(env, server.base_url, tmp_path / "run"))
    assert result.complete
    assert result.metrics["gpqa"]["pass@1"]["symbolic_correct"] == 50.0
    assert result.metrics["gpqa"]["pass@1"]["no_answer"] == 25.0


def test_simpleqa_with_nemo_skills_judge_config_through_the_cli(tmp_path: Path):
    rows = [{"id": i, "question": q, "expected_answer": a, "metadata": {}}
            for i, (q, a) in enumerate([("Capital of France?", "Paris"), ("Who wrote Hamlet?", "Shakespeare")])]  # fmt: skip
    write_jsonl_atomic(tmp_path / "data" / "simpleqa" / "verified.jsonl", rows)
    model_rules = [Rule(match="France", content="Paris"), Rule(match="Hamlet", content="Marlowe")]

    def judge(body: dict[str, Any]) -> Rule:
        return Rule(content="B" if "Predicted answer: Marlowe" in _text(body) else "A")

    out = tmp_path / "run"
    with ModelServer(rules=model_rules) as model, ModelServer(answer_fn=judge) as judge_server:
        code = main(["eval", "run", "--bench", "skills://simpleqa", "--model-url", model.base_url, "--model-id", "m",
                     "--judge-url", judge_server.base_url, "--judge-model", "j", "--data-dir", str(tmp_path / "data"),
                     "--output-dir", str(out), "--progress", "none", "--skills-backend", "nemo_skills"])  # fmt: skip
    assert code == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())["simpleqa"]["pass@1"]
    assert metrics["correct"] == 50.0 and metrics["incorrect"] == 50.0
    assert metrics["f1"] == pytest.approx(50.0)


def test_nel_list_shows_the_serving_backend(tmp_path: Path):
    rows = {row.name: row for row in list_benchmarks(tmp_path, "auto")}
    assert rows["gsm8k"].backend == "nemo_skills" and rows["gsm8k"].runnable
    assert rows["human-eval"].backend == "native" and rows["human-eval"].runnable
    assert "amc23" in rows  # NeMo-Skills datasets beyond the catalog are listed too
    native = {row.name: row for row in list_benchmarks(tmp_path, "native")}
    assert set(native) == set(CATALOG) and {r.backend for r in native.values()} == {"native"}
