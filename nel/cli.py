"""The ``nel`` command line.

Exit codes: ``nel.errors.ExitCode`` (docs/cli.md prints the table). Every failure nel can name
ends as one ``nel: error:`` line on stderr: flag errors too (argparse's usage block would be
three), and an OSError that reached this boundary is mapped once, here, to an EnvironmentFault
naming the path. Every line printed on an error path has the run's secrets scrubbed out.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from nel.client import redact, split_credentials
from nel.errors import ConfigError, EnvironmentFault, ExitCode, NelError, exit_code_for
from nel.spec import ModelSpec, RunSpec, check_flush
from nel.version import __version__

# Kept for scripts and tests that imported them from here; ExitCode is the table.
EXIT_OK, EXIT_INCOMPLETE, EXIT_CONFIG, EXIT_DATA = (
    ExitCode.OK,
    ExitCode.INCOMPLETE,
    ExitCode.USAGE,
    ExitCode.DATA,
)


# Commands with their own argument parsers, imported only when used (they pull in torch, Hydra or
# submitit). main() hands them the rest of the command line.
DELEGATED = {
    "serve": ("nel.serving.server", "serve_main", "serve a local model over an OpenAI-compatible API"),
    "status": ("nel.cluster", "status_main", "show each shard of a run: done, running, failed, missing"),
    "resume": ("nel.cluster", "resume_main", "resubmit the shards of a run that are not done, and a reducer"),
    "sweep": ("nel.sweep", "sweep_main", "submit what a sweep file lists and is not done yet (for cron)"),
    "show": ("nel.summary", "show_main", "print the summary table of a reduced run"),
    "compare": ("nel.compare", "compare_main", "paired test of two runs on the same problems"),
    "rescore": ("nel.rescore", "rescore_main", "score a run's stored responses again, without model calls"),
    "report": ("nel.report", "report_main", "write a self-contained HTML report of one run (or two: compared)"),
}


# Where secrets may come from, to scrub them from anything printed (the values, never the names).
_SECRET_VARIABLES = ("NEL_API_KEY", "OPENAI_API_KEY", "NEL_JUDGE_API_KEY", "HF_TOKEN", "NEL_MODEL_URL", "NEL_JUDGE_URL")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one ``nel: error:`` line (exit 2) like every other error."""

    def error(self, message: str) -> typing.NoReturn:
        print(f"nel: error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(int(ExitCode.USAGE))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    secrets = _secrets(argv)
    try:
        if argv and argv[0] in DELEGATED:
            module, func, _ = DELEGATED[argv[0]]
            return int(getattr(importlib.import_module(module), func)(argv[1:]))
        parser = _parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_CONFIG
        return int(args.func(args))
    except NelError as exc:
        return _fail(exc, secrets)
    except OSError as exc:  # the one place an unnamed OSError becomes a line naming the path
        return _fail(EnvironmentFault.from_os_error(exc), secrets)
    except KeyboardInterrupt:
        print("nel: interrupted; rerun the same command to resume", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)


def _fail(exc: NelError, secrets: list[str]) -> int:
    print(f"nel: error: {redact(str(exc), secrets)}", file=sys.stderr)
    return int(exit_code_for(exc))


def _secrets(argv: Sequence[str]) -> list[str]:
    """Keys and URL passwords this command was given (flags, environment), to scrub from messages."""
    found = []
    values = [os.environ.get(name) or "" for name in _SECRET_VARIABLES]
    for i, token in enumerate(argv):
        if token.startswith("--api-key="):
            found.append(token.split("=", 1)[1])
        elif token == "--api-key" and i + 1 < len(argv):
            found.append(argv[i + 1])
        values.append(token.split("=", 1)[-1])
    for value in values:
        if "://" in value and "@" in value:
            try:
                found.append(split_credentials(value)[2] or "")
            except ValueError:
                continue
    found += [os.environ.get(name) or "" for name in _SECRET_VARIABLES if "URL" not in name]
    return [value for value in found if value]


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nel", description="Evaluate language models on benchmarks.")
    parser.add_argument("--version", action="version", version=f"nel {__version__}")
    sub = parser.add_subparsers(dest="command")

    eval_parser = sub.add_parser("eval", help="evaluate a model")
    eval_sub = eval_parser.add_subparsers(dest="eval_command")
    run = eval_sub.add_parser("run", help="run (or resume) an evaluation")
    _add_run_flags(run)
    run.set_defaults(func=_cmd_eval_run)

    reduce = sub.add_parser("reduce", help="merge a run's shards into metrics")
    reduce.add_argument("run_dir")
    reduce.add_argument(
        "--allow-partial", action="store_true", help="reduce even with missing or failed rows"
    )
    reduce.set_defaults(func=_cmd_reduce)

    lister = sub.add_parser("list", help="list the benchmarks nel knows")
    lister.add_argument(
        "--data-dir", help="where prepared data lives (default: NEL_DATA_DIR or a user cache)"
    )
    lister.add_argument("--skills-backend", choices=("auto", "native", "nemo_skills"), default="auto")
    lister.set_defaults(func=_cmd_list)

    prep = sub.add_parser("prepare", help="download and prepare a benchmark's data")
    prep.add_argument("names", nargs="+", metavar="NAME")
    prep.add_argument("--data-dir")
    prep.add_argument("--mirror", help="fetch sources from this base URL instead (also NEL_DATA_MIRROR)")
    prep.add_argument("--skills-backend", choices=("auto", "native", "nemo_skills"), default="auto")
    ruler = prep.add_argument_group("ruler (generated for the evaluated model's tokenizer)")
    ruler.add_argument("--tokenizer", help="Hugging Face tokenizer name or folder (the evaluated model's)")
    ruler.add_argument("--max-seq-length", help="context lengths in tokens, comma-separated: 4096,8192 (or 4k,8k)")
    ruler.add_argument("--num-samples", type=int, default=500, help="samples per task and length (default 500)")
    ruler.add_argument("--template-tokens", type=int, default=50, help="tokens left for the chat template (50)")
    ruler.add_argument("--tasks", help="comma-separated subset of the 13 tasks (default: all)")
    prep.set_defaults(func=_cmd_prepare)
    for name, (_, _, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _add_run_flags(run: argparse.ArgumentParser) -> None:
    env = os.environ.get
    run.add_argument("--bench", required=True, help="benchmark URI, e.g. skills://gsm8k")
    run.add_argument(
        "--model-url", default=env("NEL_MODEL_URL"), help="OpenAI-compatible base URL (NEL_MODEL_URL)"
    )
    run.add_argument(
        "--model-id", default=env("NEL_MODEL_ID"), help="model name sent in requests (NEL_MODEL_ID)"
    )
    run.add_argument(
        "--api-key", help="API key (default: NEL_API_KEY or OPENAI_API_KEY); never written anywhere"
    )
    run.add_argument("--repeats", type=int, default=1, help="samples per problem (1-10000)")
    run.add_argument("--max-problems", type=int)
    run.add_argument("--system-prompt")
    run.add_argument("--prompt-template", help="user template with {field} placeholders from the dataset row")
    run.add_argument("--temperature", type=float, help="sampling temperature (default 0.0: greedy)")
    run.add_argument("--top-p", type=float)
    run.add_argument("--max-tokens", type=int)
    run.add_argument("--seed", type=int, help="sampling seed sent to the endpoint")
    run.add_argument("--concurrency", help="requests in flight: N, auto or auto:MAX (default 64; local://: its batch size)")
    run.add_argument("--timeout", type=float, default=600.0, help="seconds per HTTP attempt")
    run.add_argument("--max-retries", type=int, default=5)
    run.add_argument("--data-dir")
    run.add_argument(
        "--skills-backend",
        choices=("auto", "native", "nemo_skills"),
        default="auto",
        help="skills:// benchmarks: nel's native catalog or the nemo_skills package (auto: it if importable)",
    )
    run.add_argument(
        "--judge-url", default=env("NEL_JUDGE_URL"), help="judge endpoint for judge-graded benchmarks"
    )
    run.add_argument(
        "--judge-model", default=env("NEL_JUDGE_MODEL"), help="judge model name (key: NEL_JUDGE_API_KEY)"
    )
    run.add_argument("--answer-prefix", choices=("text", "chat"), default="text",
                     help="prompts ending in an answer prefix (RULER): text = /completions, chat = continue the "
                     "assistant message (default: text)")  # fmt: skip
    run.add_argument("--output-dir", required=True)
    run.add_argument("--overwrite", action="store_true", help="delete a previous run in --output-dir first")
    run.add_argument("--allow-partial", action="store_true", help="write metrics even if rows failed")
    run.add_argument("--progress", choices=("auto", "rich", "plain", "none"), default="auto")
    run.add_argument("--flush-rows", type=int, default=2000, help="write a Parquet part every N rows")
    run.add_argument("--flush-seconds", type=float, default=10.0, help="... or every S seconds")
    run.add_argument("--reasoning-tags", help="inline reasoning tags kept out of the answer, OPEN,CLOSE "
                     "(default '<think>,</think>'), or 'none'")
    run.add_argument("--cache-dir", help="answer repeated requests from this response cache (shared by shards and runs)")


def _spec_from_args(args: argparse.Namespace) -> RunSpec:
    # Sampling flags that were not given keep ModelSpec's defaults: the same as python -m nel.launch.
    sampling = {name: getattr(args, name) for name in ("temperature", "top_p", "max_tokens", "seed")}
    model = ModelSpec(
        url=args.model_url or "",
        model_id=args.model_id or "",
        timeout=args.timeout,
        max_retries=args.max_retries,
        **{name: value for name, value in sampling.items() if value is not None},
    )
    if model.url.startswith("local://") and not model.model_id:
        from nel.serving import model_id_for

        model = dataclasses.replace(model, model_id=model_id_for(model.url))
    judge = None
    if args.judge_url or args.judge_model:
        judge = ModelSpec(url=args.judge_url or "", model_id=args.judge_model or "", api_key_env="NEL_JUDGE_API_KEY",
                          timeout=args.timeout, max_retries=args.max_retries)  # fmt: skip
    return RunSpec(
        bench=args.bench,
        model=model,
        output_dir=args.output_dir,
        repeats=args.repeats,
        max_problems=args.max_problems,
        system_prompt=args.system_prompt,
        prompt_template=args.prompt_template,
        data_dir=args.data_dir,
        skills_backend=args.skills_backend,
        judge=judge,
        concurrency=args.concurrency,
        cache_dir=args.cache_dir,
        **({} if args.reasoning_tags is None else {"reasoning_tags": args.reasoning_tags}),
        answer_prefix=args.answer_prefix,
    ).validate()


def _cmd_eval_run(args: argparse.Namespace) -> int:
    from nel.runner import Interrupted, run_shard
    from nel.sharding import shard_from_env

    spec = _spec_from_args(args)
    check_flush(args.flush_rows, args.flush_seconds)
    _check_output_dir(Path(args.output_dir))
    shard = shard_from_env()
    warning = spec.sampling_warning()
    if warning:
        print(f"nel: warning: {warning}", file=sys.stderr)
    try:
        result = run_shard(
            spec,
            shard_idx=shard.idx,
            total_shards=shard.total,
            api_key=args.api_key,
            overwrite=args.overwrite,
            allow_partial=args.allow_partial,
            progress=args.progress,
            flush_rows=args.flush_rows,
            flush_seconds=args.flush_seconds,
        )
    except Interrupted as exc:
        print(f"nel: {exc}", file=sys.stderr)
        return 128 + exc.signum
    print(f"shard {shard.idx + 1}/{shard.total}: {result.done}/{result.total} done "
          f"({result.already_done} from before), {result.failed} failed; run dir {result.run_dir}")  # fmt: skip
    if result.metrics is not None:
        from nel.summary import print_summary

        print_summary(result.run_dir)
        print(f"metrics: {result.paths['metrics']}")
    if result.incomplete:
        print(f"nel: incomplete: {redact(result.incomplete, _secrets(sys.argv[1:]))}", file=sys.stderr)
        return EXIT_INCOMPLETE
    if shard.total > 1:
        print(f"when every shard is done: nel reduce {result.run_dir}")
    return EXIT_OK if result.failed == 0 else EXIT_INCOMPLETE


def _check_output_dir(path: Path) -> None:
    """A file where the run dir (or one of its parents) should be is a flag error, said before any work."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                where = "is a file" if candidate == path else f"is inside {candidate}, which is a file"
                raise ConfigError(f"--output-dir {path} {where}; pass a directory (it is created if missing)")
            return


def _cmd_reduce(args: argparse.Namespace) -> int:
    from nel.reduce import reduce_run
    from nel.summary import print_summary

    result = reduce_run(Path(args.run_dir), allow_partial=args.allow_partial)
    print_summary(args.run_dir)
    print(f"wrote {', '.join(str(p) for p in result.paths.values())}")
    if not result.complete:
        print(f"nel: partial result: {result.problem_summary}", file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_OK


def _cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from nel.skills.data import resolve_data_dir
    from nel.skills.listing import list_benchmarks

    data_dir = resolve_data_dir(args.data_dir)
    table = Table(title=f"benchmarks (data: {data_dir})")
    for column in ("benchmark", "name", "metrics type", "problems", "backend", "prepared", "status"):
        table.add_column(column)
    for row in list_benchmarks(data_dir, args.skills_backend):
        table.add_row(f"skills://{row.name}", row.title, row.metrics_type, row.problems, row.backend,
                      "yes" if row.prepared else "no", row.status)  # fmt: skip
    Console(width=200).print(table)
    return EXIT_OK


def _cmd_prepare(args: argparse.Namespace) -> int:
    from nel.skills.backends import select_backend
    from nel.skills.data import resolve_data_dir

    data_dir = resolve_data_dir(args.data_dir)
    if "ruler" in args.names or args.tokenizer or args.max_seq_length:
        return _prepare_ruler(args, data_dir)
    for name in args.names:
        backend = select_backend(name, args.skills_backend)
        path = backend.prepare(data_dir, mirror=args.mirror, show_progress=sys.stderr.isatty())
        print(f"prepared {name} ({backend.kind} backend): {path}")
    return EXIT_OK


def _prepare_ruler(args: argparse.Namespace, data_dir: Path) -> int:
    """RULER is generated, not downloaded: for one tokenizer and the given lengths."""
    from nel.skills.ruler import TASKS, RulerSettings, parse_lengths, prepare_ruler

    if args.names != ["ruler"]:
        raise ConfigError("--tokenizer and --max-seq-length are RULER's: run `nel prepare ruler ...` on its own")
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks else TASKS
    settings = RulerSettings(tokenizer=args.tokenizer or "", lengths=parse_lengths(args.max_seq_length or ""),
                             num_samples=args.num_samples, template_tokens=args.template_tokens, tasks=tasks)  # fmt: skip
    path = prepare_ruler(data_dir, settings.validate())
    print(f"prepared ruler ({len(tasks)} tasks x {len(settings.lengths)} lengths): {path}")
    return EXIT_OK
