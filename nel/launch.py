"""``python -m nel.launch``: compose a run from ``conf/`` with Hydra, validate it, submit it.

::

    python -m nel.launch bench=skills/mmlu shards=8                # array job + reducer, returns
    python -m nel.launch bench=skills/gsm8k shards=4 --wait        # ... and follows it to the end
    python -m nel.launch bench=skills/gsm8k shards=4 --dry-run     # prints what it would submit
    python -m nel.launch bench=skills/gsm8k hydra/launcher=basic   # shards in this process, no SLURM

The composed config is checked against a structured schema derived from
:class:`nel.spec.RunSpec` (plus the launcher's keys: ``shards``, ``cluster``, ``output_root``,
``wait``, ``dry_run``, ``poll_s``), so a misspelt key or a wrong type is refused by Hydra,
and the run keys become exactly one ``RunSpec`` through ``RunSpec.from_dict``.

Launching is idempotent: the default ``output_dir`` is derived from the config hash, so
the same command lands in the same run dir; a complete run is reported, not resubmitted;
a run with live jobs is not submitted twice; otherwise only the shards that are not done
are submitted (they resume from their Parquet parts), plus a reducer.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nel.errors import ConfigError, ExitCode, NelError, exit_code_for
from nel.rundir import RunDir, utcnow
from nel.slurm import ClusterSettings
from nel.spec import RunSpec

SCHEMA_NAME = "nel_launch_schema"
SHARD_POLICIES = ("contiguous",)
LAUNCHERS = {"nel_slurm": "slurm", "basic": "local"}
# Groups whose options live in conf/<group>/ and get a did-you-mean when misspelt.
_CHECKED_GROUPS = ("bench", "model", "cluster", "shards", "judge")


def conf_dir() -> Path:
    """The config directory: ``$NEL_CONF_DIR``, else ``conf/`` next to the ``nel`` package."""
    env = os.environ.get("NEL_CONF_DIR")
    return Path(env).resolve() if env else Path(__file__).resolve().parent.parent / "conf"


# --------------------------------------------------------------------------------------------
# The structured schema, derived from the frozen data classes so it is written only once


@dataclass
class ShardsConf:
    count: int = 1
    policy: str = "contiguous"
    allow_partial: bool = False


_SCHEMAS: dict[type, type] = {}


def _schema_type(hint: Any) -> Any:
    """A field type for the schema: frozen data classes become their mutable schema."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return schema_of(hint)
    args = typing.get_args(hint)
    if type(None) in args and len(args) == 2:
        inner = next(a for a in args if a is not type(None))
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
            return schema_of(inner) | None
    return hint


def schema_of(cls: type, *, name: str | None = None, extra: Sequence[tuple[str, Any, Any]] = ()) -> type:
    """A mutable copy of data class ``cls`` (same fields, types, defaults) for OmegaConf.

    OmegaConf makes frozen data classes read-only nodes, which overrides cannot change;
    deriving the schema keeps RunSpec/ModelSpec/ClusterSettings the single definition.
    ``extra`` adds ``(name, type, dataclasses.field(...))`` fields or replaces existing ones.
    """
    from omegaconf import MISSING

    if not extra and cls in _SCHEMAS:
        return _SCHEMAS[cls]
    hints = typing.get_type_hints(cls)
    replaced = {entry[0]: entry for entry in extra}
    fields: list[tuple[str, Any, Any]] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in replaced:
            fields.append(replaced.pop(f.name))
            continue
        hint = _schema_type(hints[f.name])
        if f.default is not dataclasses.MISSING:
            default = dataclasses.field(default=f.default)
        elif f.default_factory is not dataclasses.MISSING:
            factory: Any = hint if dataclasses.is_dataclass(hint) else f.default_factory
            default = dataclasses.field(default_factory=factory)
        elif dataclasses.is_dataclass(hint):
            default = dataclasses.field(default_factory=hint)  # type: ignore[arg-type]
        else:
            default = dataclasses.field(default=MISSING)
        fields.append((f.name, hint, default))
    fields.extend(replaced.values())
    schema = dataclasses.make_dataclass(name or f"{cls.__name__}Conf", fields)
    schema.__module__ = __name__
    if not extra:
        _SCHEMAS[cls] = schema
    return schema


def launch_schema() -> type:
    """RunSpec's keys (output_dir optional) plus the launcher's own keys."""
    field = dataclasses.field
    return schema_of(
        RunSpec,
        name="LaunchConf",
        extra=[
            ("output_dir", str | None, field(default=None)),
            ("output_root", str, field(default="nel_runs")),
            ("shards", ShardsConf, field(default_factory=ShardsConf)),
            ("cluster", schema_of(ClusterSettings), field(default_factory=schema_of(ClusterSettings))),
            ("wait", bool, field(default=False)),
            ("dry_run", bool, field(default=False)),
            ("poll_s", float, field(default=10.0)),
        ],
    )


def register_schema() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=launch_schema())


# --------------------------------------------------------------------------------------------
# From a composed config to a plan


@dataclass(frozen=True)
class LaunchPlan:
    spec: RunSpec
    total_shards: int
    allow_partial: bool
    settings: ClusterSettings
    mode: str  # "slurm" | "local"
    wait: bool = False
    dry_run: bool = False
    poll_s: float = 10.0
    overrides: tuple[str, ...] = ()

    @property
    def run_dir(self) -> Path:
        return Path(self.spec.output_dir)

    def record(self) -> dict[str, Any]:
        """launch/launch.json: how the run was launched, for `nel resume` and `nel sweep`."""
        return {
            "launched_at": utcnow(),
            "mode": self.mode,
            "shards": {
                "count": self.total_shards,
                "policy": "contiguous",
                "allow_partial": self.allow_partial,
            },
            "cluster": self.settings.to_dict(),
            "overrides": list(self.overrides),
        }


def plan_from_config(cfg: Any, *, launcher: str = "nel_slurm", overrides: Sequence[str] = ()) -> LaunchPlan:
    """Validate a composed config (DictConfig) into a plan; every problem is a ConfigError."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    if launcher not in LAUNCHERS:
        raise ConfigError(
            f"hydra/launcher={launcher} is not one nel.launch runs; use nel_slurm (the default: submit "
            "to SLURM) or basic (run the shards in this process)"
        )
    try:
        data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as exc:
        key = getattr(exc, "full_key", None) or "a key"
        raise ConfigError(f"{key} is not set: add {key}=... to the command line") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot resolve the config: {exc}") from None
    assert isinstance(data, dict)
    run_keys = {f.name for f in dataclasses.fields(RunSpec)}
    spec_data = {key: data[key] for key in run_keys if key in data}
    if not spec_data.get("output_dir"):
        spec_data["output_dir"] = default_output_dir(spec_data, str(data.get("output_root") or "nel_runs"))
    spec_data["output_dir"] = str(Path(spec_data["output_dir"]).expanduser().resolve())
    spec = RunSpec.from_dict(spec_data).validate()
    shards = data.get("shards") or {}
    count = int(shards.get("count", 1))
    if count < 1:
        raise ConfigError(f"shards.count must be >= 1, got {count}")
    if shards.get("policy", "contiguous") not in SHARD_POLICIES:
        raise ConfigError(f"shards.policy {shards.get('policy')!r} is not one of {', '.join(SHARD_POLICIES)}")
    return LaunchPlan(
        spec=spec,
        total_shards=count,
        allow_partial=bool(shards.get("allow_partial", False)),
        settings=ClusterSettings.from_dict(data.get("cluster") or {}),
        mode=LAUNCHERS[launcher],
        wait=bool(data.get("wait")),
        dry_run=bool(data.get("dry_run")),
        poll_s=float(data.get("poll_s", 10.0)),
        overrides=tuple(overrides),
    )


def default_output_dir(spec_data: dict[str, Any], output_root: str) -> str:
    """``<output_root>/<bench>__<model>__<config hash>``: one directory per distinct run."""
    probe = RunSpec.from_dict({**spec_data, "output_dir": "-"})
    bench = probe.bench.split("://", 1)[-1]
    model = probe.model.model_id.rstrip("/").rsplit("/", 1)[-1]
    name = "__".join(re.sub(r"[^A-Za-z0-9._-]+", "-", part).strip("-") for part in (bench, model))
    return str(Path(output_root) / f"{name}__{probe.config_hash()}")


def compose_plan(overrides: Sequence[str], *, launcher: str = "nel_slurm") -> LaunchPlan:
    """Compose conf/ with ``overrides`` as ``python -m nel.launch`` would, without running it.

    For ``nel sweep`` and for tests; ``launcher`` stands for the ``hydra/launcher`` choice.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    register_schema()
    args = normalize_overrides(overrides)
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir()), job_name="nel_launch"):
            cfg = compose("config", overrides=args)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"{' '.join(args)}: {exc}") from None
    except (AssertionError, AttributeError) as exc:
        # OmegaConf asserts when an override sets a key below a null node, e.g.
        # model.deployment.command=... on a model config without a deployment block.
        raise ConfigError(
            f"{' '.join(args)}: cannot apply these overrides ({type(exc).__name__}: {exc}); a key below a "
            "null node (such as model.deployment.* on a model without a deployment) cannot be set from the "
            "command line: put the block in a conf/model/*.yaml (see docs/distributed.md)"
        ) from None
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return plan_from_config(OmegaConf.create(OmegaConf.to_container(cfg)), launcher=launcher, overrides=args)


# --------------------------------------------------------------------------------------------
# Carrying out a plan


def execute(plan: LaunchPlan, *, out: Any = None) -> int:
    """Submit (or run here) the shards of ``plan`` that are not done; return an exit code."""
    from nel import cluster
    from nel.runner import open_spec_run
    from nel.slurm import require_slurm, submit, write_launch_record

    out = out or sys.stdout
    run_dir = plan.run_dir
    if plan.dry_run:
        todo = _todo(plan) if RunDir(run_dir).run_file.exists() else list(range(plan.total_shards))
        print(f"nel: dry run ({plan.mode}); nothing is created or submitted", file=out)
        print(cluster.describe_submission(plan.spec, plan.total_shards, todo, plan.settings), file=out)
        return cluster.EXIT_COMPLETE
    if plan.mode == "slurm":
        require_slurm()  # before creating anything
    open_spec_run(plan.spec, plan.total_shards)  # creates run.json, or refuses a clashing config
    write_launch_record(run_dir, plan.record())
    status = cluster.run_status(run_dir, with_slurm=plan.mode == "slurm")
    if status.complete and not status.active:
        print(f"nel: {run_dir} is already complete; nothing submitted", file=out)
        print(RunDir(run_dir).report.read_text() if RunDir(run_dir).report.exists() else "", file=out)
        return cluster.EXIT_COMPLETE
    if status.active:
        print(f"nel: {run_dir} already has jobs in SLURM; nothing submitted\n{status.headline()}", file=out)
        return cluster.finish_wait(run_dir, plan.poll_s) if plan.wait else cluster.EXIT_COMPLETE
    todo = [s.idx for s in status.shards if s.state != "done"]
    if plan.mode == "local":
        print(f"nel: run dir {run_dir}; running shard(s) {todo or 'none'} here", file=out, flush=True)
        return cluster.run_here(
            plan.spec, total_shards=plan.total_shards, shards=todo, allow_partial=plan.allow_partial, out=out
        )
    submission = submit(
        run_dir,
        plan.spec,
        total_shards=plan.total_shards,
        shards=todo,
        settings=plan.settings,
        allow_partial=plan.allow_partial,
    )
    print(cluster.describe_submitted(run_dir, submission), file=out, flush=True)
    return cluster.finish_wait(run_dir, plan.poll_s) if plan.wait else cluster.EXIT_COMPLETE


def _todo(plan: LaunchPlan) -> list[int]:
    from nel.cluster import run_status

    return [s.idx for s in run_status(plan.run_dir, with_slurm=False).shards if s.state != "done"]


# --------------------------------------------------------------------------------------------
# Command line


def normalize_overrides(args: Sequence[str], *, check_groups: bool = True) -> list[str]:
    """Make the documented spellings work and catch misspelt options early.

    ``shards=8``: Hydra parses 8 as an int, which it cannot use as a group option, so it
    becomes ``shards="8"`` (conf/shards/8.yaml) or, for a count without a file,
    ``shards.count=N``. ``bench=skills://gpqa`` becomes ``bench=skills/gpqa``.
    ``--wait``/``--dry-run`` become ``wait=true``/``dry_run=true``.
    """
    root = conf_dir()
    out: list[str] = []
    for arg in args:
        if arg in ("--wait", "--dry-run"):
            out.append(arg[2:].replace("-", "_") + "=true")
            continue
        key, sep, value = arg.partition("=")
        if not sep or key not in _CHECKED_GROUPS:
            out.append(arg)
            continue
        if key == "bench" and "://" in value:
            value = value.replace("://", "/", 1)
        if key == "shards" and "," in value and all(v.isdigit() for v in value.split(",")):
            out.append(f"shards.count={value}")  # a --multirun sweep over shard counts
            continue
        if key == "shards" and value.isdigit():
            out.append(
                f'shards="{value}"'
                if (root / "shards" / f"{value}.yaml").exists()
                else f"shards.count={value}"
            )
            continue
        if check_groups and "(" not in value:  # not a sweep function such as glob(...)
            for option in value.split(","):  # a --multirun sweep: a,b,c
                _check_option(root, key, option)
        out.append(f"{key}={value}")
    return out


def _check_option(root: Path, group: str, option: str) -> None:
    if (root / group / f"{option}.yaml").exists() or not (root / group).is_dir():
        return
    options = sorted(str(p.relative_to(root / group).with_suffix("")) for p in (root / group).rglob("*.yaml"))
    close = difflib.get_close_matches(option, options, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"unknown {group} {option!r}{hint} (options in {root / group}: {', '.join(options)})")


_EXIT = [0]


def _task(cfg: Any) -> None:
    """The Hydra task function: one composed config, one run."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    launcher = hydra_cfg.runtime.choices.get("hydra/launcher") or "basic"
    try:
        plan = plan_from_config(cfg, launcher=launcher, overrides=list(hydra_cfg.overrides.task))
        code = execute(plan)
    except NelError as exc:
        print(f"nel.launch: {exc}", file=sys.stderr, flush=True)
        code = int(exit_code_for(exc))
    _EXIT[0] = max(_EXIT[0], code)


def main(argv: Sequence[str] | None = None) -> int:
    import hydra

    args = list(sys.argv[1:] if argv is None else argv)
    custom_search = any(a.startswith(("--config-dir", "-cd", "hydra.searchpath")) for a in args)
    try:
        args = normalize_overrides(args, check_groups=not custom_search)
    except ConfigError as exc:
        print(f"nel.launch: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE)
    register_schema()
    entry = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(_task)
    saved = sys.argv
    sys.argv = [saved[0] if saved else "nel.launch", *args]
    try:
        _EXIT[0] = 0
        entry()
    finally:
        sys.argv = saved
    return _EXIT[0]


if __name__ == "__main__":
    sys.exit(main())
