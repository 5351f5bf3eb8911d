#!/usr/bin/env bash
# Set up from scratch and run the whole test suite (what CI runs).
# As root on Debian it also starts a single-node SLURM cluster for the launcher tests
# (tools/slurm_up.sh); elsewhere those tests skip with a reason, unless NEL_REQUIRE_SLURM=1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --test
# The converted local model (~500 MB) is cached per run in a temp dir, never in the repo.
export NEL_MODEL_CACHE=${NEL_MODEL_CACHE:-${TMPDIR:-/tmp}/nel-test-models}
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ "${NEL_SKIP_SLURM:-0}" != 1 ]; then
  bash tools/slurm_up.sh
  export NEL_REQUIRE_SLURM=${NEL_REQUIRE_SLURM:-1}
fi
# nel report's browser test (tests/test_report.py) drives Debian's chromium headless; where it is
# installed here, the test must run, not skip.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }
  export NEL_REQUIRE_BROWSER=${NEL_REQUIRE_BROWSER:-1}
fi
.venv/bin/ruff check nel tests benchmarks
.venv/bin/mypy nel
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
