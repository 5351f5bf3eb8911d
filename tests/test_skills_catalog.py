"""The catalog covers the issue's benchmark table honestly, and the per-type metrics follow
NeMo-Skills' definitions."""

from __future__ import annotations

import numpy as np
import pytest

from nel.cli import EXIT_OK, main
from nel.metrics import MetricInputs, Metrics, compute_metrics
from nel.skills.backends import NativeBackend
from nel.skills.catalog import CATALOG, get_benchmark
from nel.skills.listing import list_benchmarks
from nel.skills.prompts import PROMPT_CONFIGS, template_fields
from nel.skills.scoring_types import extra_metrics, scoring_type

TABLE = {  # the seed's benchmark table -> catalog name
    "AIME 2024": "aime24", "AIME 2025": "aime25", "HMMT Feb 2025": "hmmt_feb25", "GSM8K": "gsm8k",
    "MATH-500": "math-500", "GPQA Diamond": "gpqa", "MMLU": "mmlu", "MMLU-Pro": "mmlu-pro", "HLE": "hle",
    "SimpleQA": "simpleqa", "LiveCodeBench": "livecodebench", "SciCode": "scicode", "SWE-bench": "swe-bench",
    "IFBench": "ifbench", "IFEval": "ifeval", "BFCL v3": "bfcl_v3", "BFCL v4": "bfcl_v4", "RULER": "ruler",
    "AA-LCR": "aalcr", "ARC-Challenge": "arc-challenge", "TriviaQA": "triviaqa", "Arena-Hard": "arena-hard",
    "AlpacaEval 2.0": "alpaca-eval",
}  # fmt: skip
RUNNABLE = {"gsm8k", "math-500", "aime24", "aime25", "hmmt_feb25", "gpqa", "mmlu", "mmlu-pro", "simpleqa",
            "human-eval", "ifbench", "ifeval", "arc-challenge", "triviaqa", "arena-hard", "alpaca-eval"}  # fmt: skip


def test_every_benchmark_of_the_table_has_a_row():
    assert set(TABLE.values()) <= set(CATALOG)


def test_runnable_rows_are_complete_and_the_others_say_why():
    for bench in CATALOG.values():
        backend = NativeBackend(bench)
        if bench.name in RUNNABLE:
            assert backend.unsupported_reason() is None, bench.name
        if backend.unsupported_reason() is None:
            assert bench.prompt_config in PROMPT_CONFIGS, bench.name
            assert bench.score_names == scoring_type(bench.metrics_type).score_names
            assert bench.convert is not None and bench.sources
            # the prompt only reads fields the prepared rows are checked to have (a multi-step solver fills its own)
            assert bench.solver != "chat" or template_fields(PROMPT_CONFIGS[bench.prompt_config].user) - {
                "examples"} <= set(bench.required_fields)  # fmt: skip
            if bench.judge_prompt_config and bench.metrics_type != "alpaca_eval":  # its prompt is alpaca-eval's file
                assert bench.judge_prompt_config in PROMPT_CONFIGS
        else:  # not runnable says why, or the scoring type does (a package or a data file missing here)
            reason = bench.not_runnable or (bench.scoring.missing() if bench.scoring else None)
            assert reason and len(reason) > 30, bench.name


def test_gated_sources_are_the_hub_ones():
    gated = {b.name for b in CATALOG.values() for s in b.sources if s.gated}
    assert gated == {"gpqa", "hle"}


def test_nel_list_shows_every_row_with_backend_and_status(tmp_path, capsys: pytest.CaptureFixture[str]):
    assert main(["list", "--data-dir", str(tmp_path), "--skills-backend", "native"]) == EXIT_OK
    out = capsys.readouterr().out
    for name in TABLE.values():
        assert f"skills://{name} " in out
    rows = {r.name: r for r in list_benchmarks(tmp_path, "native")}
    assert rows["simpleqa"].status.startswith("runnable (LLM judge")
    assert rows["gsm8k"].problems == "1319" and not rows["gsm8k"].prepared
    assert rows["swe-bench"].status.startswith("agentic")
    assert {r.name for r in rows.values() if r.runnable} >= RUNNABLE
    assert rows["gpqa"].status == "runnable (network to download (or --mirror); HF_TOKEN (gated on the HF hub))"
    assert rows["mmlu"].status == "runnable (network to download (or --mirror))"
    assert rows["human-eval"].status == "runnable"  # its data ships in the human-eval package


def test_nel_list_drops_the_download_needs_once_prepared(tmp_path):
    path = tmp_path / "gpqa" / "diamond.jsonl"
    path.parent.mkdir()
    path.write_text('{"problem": "q", "expected_answer": "A"}\n', encoding="utf-8")
    rows = {r.name: r for r in list_benchmarks(tmp_path, "native")}
    assert rows["gpqa"].status == "runnable" and rows["gpqa"].prepared and rows["gpqa"].problems == "1"


def test_unknown_name_suggests_a_close_one():
    with pytest.raises(Exception, match="did you mean 'mmlu-pro'"):
        get_benchmark("mmlu_pro")


# ---------------------------------------------------------------- per-type metrics


def compute_metrics_for(metrics_type: str, data: MetricInputs) -> Metrics:
    return compute_metrics(data, extra_metrics(metrics_type))


def _inputs(scores: dict[str, list[list[float]]], answers: list[list[int]] | None = None) -> MetricInputs:
    shape = np.asarray(next(iter(scores.values()))).shape
    return MetricInputs(
        scores={k: np.asarray(v, dtype=float) for k, v in scores.items()},
        answers=np.asarray(answers) if answers is not None else np.zeros(shape, dtype=int),
        completion_tokens=np.full(shape, 10.0),
        reasoning_tokens=np.zeros(shape),
    )


def test_simpleqa_f1_and_accuracy_given_attempted():
    # 5 questions, 1 repeat: 2 correct, 1 incorrect, 2 not attempted
    data = _inputs({"correct": [[1], [1], [0], [0], [0]], "incorrect": [[0], [0], [1], [0], [0]],
                    "not_attempted": [[0], [0], [0], [1], [1]]})  # fmt: skip
    out = compute_metrics_for("simpleqa", data)["pass@1"]
    assert out["correct"] == pytest.approx(40.0) and out["not_attempted"] == pytest.approx(40.0)
    given = 2 / 3
    assert out["accuracy_given_attempted"] == pytest.approx(100 * given)
    assert out["f1"] == pytest.approx(100 * 2 * given * 0.4 / (given + 0.4))
    assert "no_answer" not in out


def test_hle_has_no_no_answer_and_plain_types_are_untouched():
    data = _inputs({"judge_correct": [[1, 0], [0, 0]]})
    assert all("no_answer" not in bucket for bucket in compute_metrics_for("hle", data).values())
    math = compute_metrics_for("math", _inputs({"symbolic_correct": [[1, 0], [0, 0]]}))
    assert math["pass@1[avg-of-2]"]["no_answer"] == 0.0


def test_if_metrics_are_micro_averaged_over_instructions():
    # problem 0: 3 instructions, strict follows 1 (prompt fails), loose all 3; problem 1: 1 instruction, followed
    data = _inputs({
        "prompt_strict": [[0], [1]], "instruction_strict": [[1], [1]],
        "prompt_loose": [[1], [1]], "instruction_loose": [[3], [1]], "num_instructions": [[3], [1]],
    })  # fmt: skip
    out = compute_metrics_for("if", data)["pass@1"]
    assert out["num_prompts"] == 2 and out["num_instructions"] == 4
    assert out["prompt_strict_accuracy"] == pytest.approx(50.0)
    assert out["instruction_strict_accuracy"] == pytest.approx(100 * 2 / 4)  # not the mean of 1/3 and 1
    assert out["instruction_loose_accuracy"] == pytest.approx(100.0)
    assert out["average_score"] == pytest.approx((50 + 50 + 100 + 100) / 4)
