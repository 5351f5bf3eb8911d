"""AlpacaEval 2.0 end to end, checked against alpaca-eval 0.6.6's own code on the same inputs.

The data is upstream-format (``alpaca_eval_gpt4_baseline.json`` and ``df_gamed.csv``, written
here in their shape with made-up text) served over loopback and prepared by ``nel prepare
--mirror``; the model and the judge are real local servers answering by rule, the judge with
top logprobs. alpaca-eval itself runs in a subprocess (tests/alpaca_eval_reference.py) on the
same instructions, outputs and judge logprobs, and must agree on the judge prompts, the
order coin, every preference, the win rates and the length-controlled win rate.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from nel.cli import EXIT_DATA, EXIT_INCOMPLETE, EXIT_OK, main
from nel.errors import ExitCode
from nel.scoring.alpaca_eval import GamedBaselines, NotFitted, length_controlled, switched, win_rate
from nel.skills.catalog import get_benchmark
from nel.testing.model_server import ModelServer, Rule

pytest.importorskip("sklearn")
pytest.importorskip("alpaca_eval")  # pip install --no-deps alpaca-eval==0.6.6 (tools/setup.sh)

N = get_benchmark("alpaca-eval").num_problems
REFERENCE = Path(__file__).with_name("alpaca_eval_reference.py")
WORDS = "the of model answer reason because data code list table write explain first second".split()
DRAWS = {7, 300, 611}
"""Instructions the model answers with the baseline's own output (a draw, no judge call)."""


def _text(rng: random.Random, length: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < length:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def _instruction(i: int, rng: random.Random) -> str:
    if i == 5:  # alpaca-eval fills placeholders first-come: this one takes output_1's text
        return "Instruction 5: repeat the string {output_1} verbatim."
    return f"Instruction {i}: {_text(rng, rng.randint(20, 120))} {{braces}} stay."


class Upstream:
    """The benchmark's files and the model's replies, all made up with one seed."""

    def __init__(self) -> None:
        rng = random.Random(805)
        self.instructions = [_instruction(i, rng) for i in range(N)]
        self.baselines = [_text(rng, rng.randint(100, 2500)) for _ in range(N)]
        self.responses = {
            q: self.baselines[i] if i in DRAWS else _text(rng, rng.randint(50, 4000))
            for i, q in enumerate(self.instructions)
        }
        self.difficulty = [rng.gauss(0, 1) for _ in range(N)]
        self.gamed = [
            [model, i, round(rng.random(), 6), round(sign * abs(rng.gauss(0, 1)), 6), self.difficulty[i], False]
            for model, sign in (("gpt4_gamed_verbose", 1), ("gpt4_gamed_concise", -1))
            for i in range(N)
        ]
        # The second model's rows out of order: the fit must take them in the file's order (its
        # folds follow it). The first model's stay in order: alpaca-eval looks difficulties up there.
        self.gamed[N:] = rng.sample(self.gamed[N:], N)

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        records = [{"dataset": "made-up", "instruction": q, "output": b, "generator": "gpt4_1106_preview"}
                   for q, b in zip(self.instructions, self.baselines)]  # fmt: skip
        (folder / "alpaca_eval_gpt4_baseline.json").write_text(json.dumps(records, indent=2))
        with open(folder / "df_gamed.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["model", "index", "preference", "std_delta_len", "instruction_difficulty",
                             "not_gamed_baseline"])  # fmt: skip
            writer.writerows(self.gamed)


@pytest.fixture(scope="module")
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture(scope="module")
def alpaca_data(fixture_mirror: tuple[Path, str], upstream: Upstream, tmp_path_factory) -> Path:
    root, url = fixture_mirror
    upstream.write(root / "alpaca-eval")
    data_dir = tmp_path_factory.mktemp("alpaca-data")
    assert main(["prepare", "alpaca-eval", "--data-dir", str(data_dir), "--mirror", url,
                 "--skills-backend", "native"]) == EXIT_OK  # fmt: skip
    return data_dir


def _outputs(prompt: str) -> tuple[str, str]:
    """The two outputs in a judge prompt, as shown (``m`` first)."""
    parts = prompt.split('"output": """')
    return parts[1].split('"""')[0], parts[2].split('"""')[0]


def _number_of(prompt: str) -> int:
    """The instruction's number (``Instruction <n>: ...``) in a judge prompt."""
    return int(prompt.split('"instruction": """Instruction ')[1].split(":")[0])


class LogprobJudge:
    """A judge that prefers the longer output and the model on easy instructions, noisily, and
    answers with alpaca-eval's one token and its top logprobs; some replies hold only one
    identifier, some neither (no preference). ``sent``: instruction number -> the top logprobs."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.sent: dict[int, dict[str, float]] = {}

    def __call__(self, body: dict[str, Any]) -> Rule:
        prompt = body["messages"][-1]["content"]
        first, second = _outputs(prompt)
        i = _number_of(prompt)
        rng = random.Random(i)
        model_first = self.upstream.responses[self.upstream.instructions[i]] == first
        ease = -self.upstream.difficulty[i] if model_first else self.upstream.difficulty[i]
        p_first = 1 / (1 + math.exp(-(len(first) - len(second)) / 900 - ease + rng.gauss(0, 1)))
        p_first = min(max(p_first, 1e-6), 1 - 1e-6)
        top = {"m": math.log(p_first), "M": math.log(1 - p_first), "Both": -9.5, "The": -11.25}
        kind = rng.random()
        if kind < 0.04:
            del top["m"]
        elif kind < 0.08:
            del top["M"]
        elif kind < 0.10:
            del top["m"], top["M"]
        top = dict(sorted(top.items(), key=lambda kv: -kv[1]))
        self.sent[i] = top
        return Rule(content=next(iter(top)), top_logprobs=[top])


def _model(upstream: Upstream, **special: Rule):
    def answer(body: dict[str, Any]) -> Rule:
        question = body["messages"][-1]["content"]
        return special.get(question) or Rule(content=upstream.responses[question])

    return answer


def _run(data: Path, out: Path, model: ModelServer, judge: ModelServer, *extra: str) -> int:
    return main(["eval", "run", "--bench", "skills://alpaca-eval", "--model-url", model.base_url, "--model-id", "m",
                 "--judge-url", judge.base_url, "--judge-model", "gpt-4-1106-preview", "--data-dir", str(data),
                 "--output-dir", str(out), "--progress", "none", "--skills-backend", "native", *extra])  # fmt: skip


def _rows(out: Path) -> list[dict[str, Any]]:
    table = pq.read_table(out / "trajectories.parquet").to_pylist()
    return sorted(table, key=lambda r: r["problem_idx"])


def _reference(cases: list[list[dict[str, Any]]], gamed: list[list[Any]], tmp: Path) -> list[dict[str, Any]]:
    """alpaca-eval's own results, with df_gamed.csv where its hf_hub_download finds it offline."""
    revision = "0" * 40
    repo = tmp / "hf" / "datasets--tatsu-lab--alpaca_eval"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    with open(repo / "snapshots" / revision / "df_gamed.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["model", "index", "preference", "std_delta_len", "instruction_difficulty",
                         "not_gamed_baseline"])  # fmt: skip
        writer.writerows(gamed)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp / "hf"), "HF_HOME": str(tmp / "hf-home")}
    done = subprocess.run(
        [sys.executable, str(REFERENCE)], input=json.dumps({"cases": [{"rows": c} for c in cases]}),
        capture_output=True, text=True, env=env, cwd=tmp, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)["results"]


COMPARED = ("length_controlled_winrate", "lc_standard_error", "win_rate", "standard_error", "discrete_win_rate",
            "n_wins", "n_wins_base", "n_draws", "n_total")  # fmt: skip


def test_the_whole_benchmark_agrees_with_alpaca_eval(alpaca_data: Path, upstream: Upstream, tmp_path: Path):
    """All 805 instructions through ``nel eval run``; alpaca-eval on the same outputs and logprobs."""
    judge_fn = LogprobJudge(upstream)
    out = tmp_path / "run"
    with ModelServer(answer_fn=_model(upstream)) as model, ModelServer(answer_fn=judge_fn) as judge:
        assert _run(alpaca_data, out, model, judge) == EXIT_OK
        sent = {_number_of(r.body["messages"][-1]["content"]): r.body for r in judge.requests}
    assert len(sent) == N - len(DRAWS)
    body = next(iter(sent.values()))
    assert (body["max_tokens"], body["temperature"], body["logprobs"], body["top_logprobs"]) == (1, 1, True, 5)
    rows = _rows(out)
    assert [r["problem_idx"] for r in rows] == list(range(N))

    case = [{"instruction": q, "baseline": b, "response": upstream.responses[q], "top_logprobs": judge_fn.sent.get(i)}
            for i, (q, b) in enumerate(zip(upstream.instructions, upstream.baselines))]  # fmt: skip
    ref = _reference([case], upstream.gamed, tmp_path)[0]

    for i, row in enumerate(rows):
        calls = json.loads(row["details"])["judge_calls"]
        if i in DRAWS:
            assert ref["messages"][i] is None and calls == []
        else:
            assert sent[i]["messages"] == ref["messages"][i], f"judge prompt of instruction {i}"
            assert calls[0]["model_output_first"] == ref["switched"][i]
        mine, theirs = row["scores"], ref["preferences"][i]
        preference = dict(mine)["preference"] if isinstance(mine, list) else mine["preference"]
        if theirs is None:
            assert math.isnan(preference), i
        else:
            assert preference == pytest.approx(theirs, abs=1e-12), i
    assert sum(p is None for p in ref["preferences"]) >= 5  # the no-preference path was exercised
    # alpaca-eval's first-come filling: instruction 5's "{output_1}" took the first output's text
    assert "{output_1}" not in sent[5]["messages"][1]["content"].split("## Model Outputs")[0]

    metrics = json.loads((out / "metrics.json").read_text())["alpaca-eval"]["pass@1"]
    for key in COMPARED:
        assert metrics[key] == pytest.approx(ref["metrics"][key], rel=1e-9, abs=1e-9), key
    assert abs(metrics["length_controlled_winrate"] - metrics["win_rate"]) > 1  # the length correction did work
    lc, se = metrics["length_controlled_winrate"], metrics["lc_standard_error"]
    assert metrics["length_controlled_winrate_ci95"] == pytest.approx([lc - 1.96 * se, lc + 1.96 * se]) and se > 0
    assert metrics["no_answer"] == 0 and metrics["judged_by_label"] == 0 and metrics["num_entries"] == N


def test_the_fit_agrees_with_alpaca_eval_on_more_preference_sets(upstream: Upstream, tmp_path: Path):
    """nel's win rates and length-controlled fit against alpaca-eval's on three more sets of
    preferences over the same instructions: hard labels with gaps, a length-gamed model, many draws."""
    rng = np.random.default_rng(11)
    base_len = np.array([len(b) for b in upstream.baselines], dtype=float)
    cases, nel_inputs = [], []
    for name in ("hard", "gamed", "draws"):
        model_len = rng.integers(50, 4000, N) if name != "gamed" else (base_len * 3).astype(int)
        if name == "hard":
            prefs = rng.choice([1.0, 2.0, np.nan], N, p=[0.55, 0.4, 0.05])
        elif name == "gamed":
            prefs = np.clip(1.5 + 0.4 * np.tanh((model_len - base_len) / 800) + rng.normal(0, 0.2, N), 1, 2)
        else:
            prefs = rng.choice([1.0, 1.5, 2.0, 1.25, 1.8], N)
        responses = ["x" * int(n) for n in model_len]
        cases.append([{"instruction": q, "baseline": b, "response": r, "top_logprobs": _logprobs_for(p, switched(q))}
                      for q, b, r, p in zip(upstream.instructions, upstream.baselines, responses, prefs)])  # fmt: skip
        nel_inputs.append((prefs, base_len, model_len.astype(float)))
    results = _reference(cases, upstream.gamed, tmp_path)
    columns = list(zip(*upstream.gamed))
    gamed = GamedBaselines(np.array(columns[2]), np.array(columns[3]), np.array(columns[4]))
    difficulty = np.array(columns[4][:N])
    for (prefs, base, model_len), ref in zip(nel_inputs, results):
        # the reference parsed the preferences back from logprobs built for them: compare what it parsed
        parsed = np.array([np.nan if p is None else p for p in ref["preferences"]])
        model_first = np.array(ref["switched"])
        assert np.allclose(np.where(np.isnan(prefs), 0, prefs), np.where(np.isnan(parsed), 0, parsed), atol=1e-9)
        rate = win_rate(parsed)
        lc = length_controlled(parsed, base, model_len, difficulty, gamed)
        mine = {"win_rate": rate.win_rate, "standard_error": rate.standard_error, "n_wins": rate.n_wins,
                "n_wins_base": rate.n_wins_base, "n_draws": rate.n_draws, "n_total": rate.n_total,
                "discrete_win_rate": rate.discrete_win_rate, "length_controlled_winrate": lc.win_rate,
                "lc_standard_error": lc.standard_error}  # fmt: skip
        for key in COMPARED:
            assert mine[key] == pytest.approx(ref["metrics"][key], rel=1e-9, abs=1e-9), key
        assert model_first.any() and not model_first.all()


def _logprobs_for(preference: float, model_first: bool) -> dict[str, float]:
    """Top logprobs that alpaca-eval parses back to ``preference`` (baseline vs model) when the
    outputs are shown in this order; neither identifier for no preference."""
    if np.isnan(preference):
        return {"Both": -0.1}
    p_first = preference - 1 if model_first else 2 - preference
    top = {"m": math.log(p_first) if p_first > 0 else -1e9, "M": math.log(1 - p_first) if p_first < 1 else -1e9}
    return dict(sorted(top.items(), key=lambda kv: -kv[1]))


def test_a_judge_without_logprobs_is_read_by_its_token(alpaca_data: Path, upstream: Upstream, tmp_path: Path):
    """An endpoint that ignores ``logprobs`` and one that refuses it (HTTP 400): the token decides."""
    longer = Rule(content="x" * 5000)  # always longer than the baseline: the judge below always prefers it

    def judge_fn(body: dict[str, Any]) -> Rule:
        if refuse and body.get("logprobs"):
            return Rule(status=400, message="logprobs are not supported for this model")
        first, second = _outputs(body["messages"][-1]["content"])
        return Rule(content="m" if len(first) > len(second) else "M")

    for refuse in (False, True):
        out = tmp_path / f"run-{refuse}"
        with ModelServer(default=longer) as model, ModelServer(answer_fn=judge_fn) as judge:
            code = _run(alpaca_data, out, model, judge, "--max-problems", "8", "--concurrency", "1")
            asked = [bool(r.body.get("logprobs")) for r in judge.requests]
        assert code == EXIT_OK
        assert asked == ([True] + [False] * 8 if refuse else [True] * 8)  # refused once, then never asked again
        metrics = json.loads((out / "metrics.json").read_text())["alpaca-eval"]["pass@1"]
        assert metrics["win_rate"] == 100.0 and metrics["judged_by_label"] == 8 and metrics["n_wins"] == 8
        calls = [json.loads(r["details"])["judge_calls"][0] for r in _rows(out)]
        assert {c["preference_source"] for c in calls} == {"label"}
        refused = {c["logprobs_refused"] for c in calls}
        assert len(refused) == 1 and ("not supported" in refused.pop() if refuse else refused == {None})


def test_a_row_the_model_did_not_answer_is_a_loss(alpaca_data: Path, upstream: Upstream, tmp_path: Path):
    too_long = Rule(status=400, message="This model's maximum context length is 4096 tokens")
    judge_fn = LogprobJudge(upstream)
    out = tmp_path / "run"
    first = upstream.instructions[0]
    with ModelServer(answer_fn=_model(upstream, **{first: too_long})) as model, \
            ModelServer(answer_fn=judge_fn) as judge:  # fmt: skip
        assert _run(alpaca_data, out, model, judge, "--max-problems", "40") == EXIT_OK
    rows = _rows(out)
    assert rows[0]["error_kind"] == "context_length"
    metrics = json.loads((out / "metrics.json").read_text())["alpaca-eval"]["pass@1"]
    preferences = [dict(r["scores"])["preference"] if r["scores"] else None for r in rows[1:]]
    valid = [p - 1 for p in preferences if p is not None and not math.isnan(p)]
    assert metrics["no_answer"] == 1 and metrics["n_total"] == len(valid) + 1
    assert metrics["win_rate"] == pytest.approx(100 * sum(valid) / (len(valid) + 1))
    assert metrics["length_controlled_winrate"] is not None and "lc_not_fitted" not in metrics


def test_a_failing_judge_is_a_scoring_error(alpaca_data: Path, upstream: Upstream, tmp_path: Path):
    out = tmp_path / "run"
    with ModelServer(answer_fn=_model(upstream)) as model, ModelServer(default=Rule(status=503)) as judge:
        code = _run(alpaca_data, out, model, judge, "--max-problems", "3", "--max-retries", "0")
    assert code == EXIT_INCOMPLETE
    parts = [r for path in sorted(out.rglob("part-*.parquet")) for r in pq.read_table(path).to_pylist()]
    assert {r["error_kind"] for r in parts} == {"scoring_error"}
    assert all("judge 'gpt-4-1106-preview'" in r["error"] and "server_error" in r["error"] for r in parts)


def test_alpaca_eval_needs_a_judge(alpaca_data: Path, tmp_path: Path):
    with ModelServer(default=Rule(content="x")) as model:
        code = main(["eval", "run", "--bench", "skills://alpaca-eval", "--model-url", model.base_url,
                     "--model-id", "m", "--data-dir", str(alpaca_data), "--output-dir", str(tmp_path / "run"),
                     "--progress", "none", "--skills-backend", "native"])  # fmt: skip
    assert code == ExitCode.USAGE
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_too_few_rows_to_fit_says_why():
    gamed = GamedBaselines(np.array([0.2, 0.7]), np.array([0.5, -0.5]), np.array([0.1, 0.1]))
    with pytest.raises(NotFitted, match="fewer than 5 folds"):
        length_controlled(np.array([1.2, 1.9]), np.array([100.0, 80.0]), np.array([50.0, 90.0]),
                          np.array([0.1, 0.2]), gamed)  # fmt: skip
    with pytest.raises(NotFitted, match="distinct values"):
        length_controlled(np.array([1.2, 1.7]), np.array([100.0, 100.0]), np.array([50.0, 50.0]),
                          np.array([0.1, 0.2]), gamed)  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text.replace(",not_gamed_baseline", ",other"), "missing column(s) not_gamed_baseline"),
        (lambda text: "\n".join(text.splitlines()[:1] + text.splitlines()[2:]) + "\n",
         "instruction 0 has 1 gamed-baseline rows"),
    ],
)
def test_a_malformed_df_gamed_is_named(upstream: Upstream, tmp_path: Path, edit, message: str, capsys):
    folder = tmp_path / "mirror" / "alpaca-eval"
    upstream.write(folder)
    (folder / "df_gamed.csv").write_text(edit((folder / "df_gamed.csv").read_text()))
    code = main(["prepare", "alpaca-eval", "--data-dir", str(tmp_path / "data"), "--mirror", str(tmp_path / "mirror"),
                 "--skills-backend", "native"])  # fmt: skip
    assert code == EXIT_DATA
    err = capsys.readouterr().err
    assert message in err and "df_gamed.csv" in err and "Traceback" not in err
