"""The end-of-run table and `nel show`: real runs over HTTP, read back from their files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from nel.summary import load_summary, print_summary
from nel.testing.model_server import ModelServer
from tests.test_cli import gsm8k_answerer, nel, run_args


def test_end_of_run_prints_a_table_not_a_dict(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    with ModelServer(answer_fn=gsm8k_answerer(gsm8k_data_dir)) as srv:
        done = nel(*run_args(srv, gsm8k_data_dir, tmp_path / "run", "--max-problems", "20", "--repeats", "2"))
    assert done.returncode == 0, done.stderr
    assert "num_entries" not in done.stdout and "{" not in done.stdout
    header, rule, first = done.stdout.splitlines()[1:4]
    assert header.split()[:3] == ["benchmark", "subset", "metric"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert first.split()[:4] == ["gsm8k", "(all)", "pass@1[avg-of-2]", "symbolic_correct"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["gsm8k"]["pass@1[avg-of-2]"]
    low, high = metrics["symbolic_correct_ci95"]
    assert f"50.00 ± {(high - low) / 2:.2f}" in first
    assert "model latency: mean" in done.stdout and " ms" in done.stdout
    report = (tmp_path / "run" / "report.txt").read_text()
    assert "'mean'" not in report and "model latency: mean" in report


def test_show_on_a_sharded_run_after_reduce(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sharded"
    with ModelServer(answer_fn=gsm8k_answerer(gsm8k_data_dir, right_every=4)) as srv:
        for idx in range(2):
            shard = nel(*run_args(srv, gsm8k_data_dir, out, "--max-problems", "12"),
                        env={"NEL_SHARD_IDX": str(idx), "NEL_TOTAL_SHARDS": "2"})  # fmt: skip
            assert shard.returncode == 0, shard.stderr
    before = nel("show", str(out))
    assert before.returncode == 3
    assert before.stderr.startswith("nel: error:") and f"nel reduce {out}" in before.stderr
    assert nel("reduce", str(out)).returncode == 0
    shown = nel("show", str(out))
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if line.startswith("gsm8k"))
    assert row.split()[2:5] == ["pass@1", "symbolic_correct", "25.00"]
    assert row.split()[7:9] == ["12", "0"]  # n, failed


def test_rich_table_on_a_terminal_and_failed_rows_counted(gsm8k_data_dir: Path, tmp_path: Path) -> None:
    from nel.testing.model_server import Rule

    out = tmp_path / "run"
    with ModelServer(rules=[Rule(match="Janet", status=500)], answer_fn=gsm8k_answerer(gsm8k_data_dir)) as srv:
        nel(*run_args(srv, gsm8k_data_dir, out, "--max-problems", "6", "--max-retries", "0", "--allow-partial"))
    summary = load_summary(out)
    assert [r.failed for r in summary.rows] == [1]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    print_summary(out, screen)
    assert "┃" in screen.getvalue() or "│" in screen.getvalue()
    assert "INCOMPLETE" in screen.getvalue()


@pytest.mark.parametrize(("seconds", "text"), [(0.0123, "12 ms"), (3.4, "3.40 s"), (125, "2m 05s"), (3720, "1h 02m")])
def test_seconds_read_in_their_unit(seconds: float, text: str) -> None:
    from nel.summary import seconds_text

    assert seconds_text(seconds) == text
