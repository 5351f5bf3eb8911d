"""`nel report` on real runs (one unsharded with --concurrency auto, one of two shards), opened in Chromium.

The browser is Debian's chromium, driven headless with ``--dump-dom`` (the DOM after the page's
scripts ran): no driver package is needed. The row filter is read from the URL's hash, the same
state the page's selects write, so a filtered page is one command. Without chromium the browser
test skips, unless NEL_REQUIRE_BROWSER=1 (tools/test.sh sets it where it installs chromium, as CI does).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from nel.testing.model_server import ModelServer
from tests.test_cli import gsm8k_answerer, nel, run_args

PROBLEMS = 12


@pytest.fixture(scope="module")
def runs(gsm8k_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report")
    plain, sharded = root / "plain", root / "sharded"
    common = ("--max-problems", str(PROBLEMS), "--repeats", "2", "--temperature", "0.7")
    with ModelServer(answer_fn=gsm8k_answerer(gsm8k_data_dir, right_every=2)) as srv:
        done = nel(*run_args(srv, gsm8k_data_dir, plain, *common, "--concurrency", "auto"))
        assert done.returncode == 0, done.stderr
    with ModelServer(answer_fn=gsm8k_answerer(gsm8k_data_dir, right_every=3)) as srv:
        for idx in range(2):
            shard_env = {"NEL_SHARD_IDX": str(idx), "NEL_TOTAL_SHARDS": "2"}
            assert nel(*run_args(srv, gsm8k_data_dir, sharded, *common), env=shard_env).returncode == 0
    assert nel("reduce", str(sharded)).returncode == 0
    return {"plain": plain, "sharded": sharded}


def test_report_of_a_real_run_is_self_contained(runs: dict[str, Path]) -> None:
    done = nel("report", str(runs["plain"]))
    assert done.returncode == 0, done.stderr
    html = (runs["plain"] / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from anywhere
    assert "50.00 ± " in html  # the headline with its interval
    assert "pass@k" in html and "adaptive concurrency limit" in html and "<polyline" in html
    assert "history" in json.loads((runs["plain"] / "runtime.json").read_text())["concurrency"]["0"]


def test_report_of_two_runs_compares_them(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "both.html"
    done = nel("report", str(runs["plain"]), str(runs["sharded"]), "--out", str(out))
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert "Compare: B minus A" in html and "paired_bootstrap" in html
    assert html.count('class="run"') == 2


def test_report_of_an_unreduced_dir_is_one_line(tmp_path: Path) -> None:
    done = nel("report", str(tmp_path))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "run.json is missing" in done.stderr


def _dom(url: str) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("NEL_REQUIRE_BROWSER") == "1":
            pytest.fail("NEL_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install -y chromium)")
        pytest.skip("no chromium on PATH (apt-get install -y chromium)")
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'data-rows-ready="yes"' in done.stdout, "the page's rows never rendered"
    return done.stdout


def test_report_renders_in_chromium_and_filters_rows(runs: dict[str, Path]) -> None:
    path = runs["sharded"] / "report.html"
    assert nel("report", str(runs["sharded"])).returncode == 0
    everything = _dom(path.as_uri())
    assert re.search(r'class="score"[^>]*>33\.33 ± [0-9.]+<', everything)  # the headline, in the rendered DOM
    svg = re.findall(r"<svg class=\"plot\".*?</svg>", everything, re.S)
    assert svg and all(re.search(r"<(rect|polyline|circle)\b", s) for s in svg)  # plots drawn, not blank
    assert f"{2 * PROBLEMS} of {2 * PROBLEMS} rows match" in everything
    wrong = _dom(path.as_uri() + "#verdict=wrong")
    verdicts = re.findall(r'<details class="row" data-verdict="(\w+)"', wrong)
    assert f"16 of {2 * PROBLEMS} rows match" in wrong  # 8 of 12 problems answered wrongly, twice each
    assert len(verdicts) == 16 and set(verdicts) == {"wrong"}
    assert wrong.count("Solve the following math problem") >= 16  # each row's prompt is browsable
