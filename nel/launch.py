"""``python -m nel.launch``: compose a run from ``conf/`` with Hydra, validate it, submit it.

::

    python -m nel.launch bench=skills/mmlu shards=8                # array job + reducer, returns
    python -m nel.launch bench=skills/gsm8k shards=4 --wait        # ... and follows it to the end
    python -m nel.launch bench=skills/gsm8k shards=4 --dry-run     # prints what it would submit
    python -m nel.launch bench=skills/gsm8k hydra/launcher=basic   # shards in this process, no SLURM

The composed config is checked against a structured schema derived from
:class:`nel.spec.RunSpec` (plus the launcher's keys: ``shards``, ``cluster``, ``backend``,
``output_root``, ``wait``, ``dry_run``, ``overwrite``, ``poll_s``), so a misspelt key or a wrong
type is refused before anything is created, in one ``nel: error:`` line (exit 2), and the run
keys become exactly one ``RunSpec`` through ``RunSpec.from_dict``.

Where the shards run is a backend (nel.backends): ``backend=NAME``, else the one the
``hydra/launcher`` choice stands for (``nel.backends.HYDRA_LAUNCHERS``: nel_slurm -> slurm,
basic -> local). Launching is idempotent (nel.reconcile): the default ``output_dir`` is derived
from the config hash, so the same command lands in the same run dir; a complete run is
reported, not resubmitted; a run with live jobs is not submitted twice; otherwise only the
shards that are not done are submitted (they resume from their Parquet parts), plus a reducer.
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

from nel.backends import BACKENDS, HYDRA_LAUNCHERS, backend_for_launcher, get_backend
from nel.backends.base import ClusterSettings
from nel.errors import ConfigError, NelError, RunConflictError, exit_code_for
from nel.rundir import utcnow
from nel.spec import RunSpec

SCHEMA_NAME = "nel_launch_schema"
SHARD_POLICIES = ("contiguous",)
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
            ("backend", str | None, field(default=None)),
            ("wait", bool, field(default=False)),
            ("dry_run", bool, field(default=False)),
            ("overwrite", bool, field(default=False)),
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
    backend: str  # a name in nel.backends.BACKENDS
    wait: bool = False
    dry_run: bool = False
    overwrite: bool = False
    poll_s: float = 10.0
    overrides: tuple[str, ...] = ()

    @property
    def run_dir(self) -> Path:
        return Path(self.spec.output_dir)

    def record(self) -> dict[str, Any]:
        """launch/launch.json: how the run was launched, for `nel resume` and `nel sweep`."""
        return {
            "launched_at": utcnow(),
            "backend": self.backend,
            "shards": {
                "count": self.total_shards,
                "policy": "contiguous",
                "allow_partial": self.allow_partial,
            },
            "cluster": self.settings.to_dict(),
            "overrides": list(self.overrides),
        }


def plan_from_config(cfg: Any, *, launcher: str = "nel_slurm", overrides: Sequence[str] = ()) -> LaunchPlan:
    """Validate a composed config (DictConfig) into a plan; every problem is a ConfigError.

    ``launcher`` is the ``hydra/launcher`` choice: it names the backend when ``backend`` is unset."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    try:
        data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as exc:
        key = getattr(exc, "full_key", None) or "a key"
        raise ConfigError(f"{key} is not set: add {key}=... to the command line") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(f"cannot resolve the config: {_flat(exc)}") from None
    assert isinstance(data, dict)
    backend = data.get("backend") or backend_for_launcher(launcher)
    if backend not in BACKENDS:
        close = difflib.get_close_matches(backend, BACKENDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"backend={backend}: unknown backend{hint} (known: {', '.join(sorted(BACKENDS))})")
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
        backend=backend,
        wait=bool(data.get("wait")),
        dry_run=bool(data.get("dry_run")),
        overwrite=bool(data.get("overwrite")),
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


def compose(overrides: Sequence[str]) -> tuple[Any, str]:
    """Compose conf/ with ``overrides`` as ``python -m nel.launch`` would: (config, launcher choice).

    Every Hydra or OmegaConf complaint becomes one ConfigError line."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    register_schema()
    args = list(overrides)
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir()), job_name="nel_launch"):
            cfg = hydra_compose("config", overrides=args, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise _composition_error(args, exc) from None
    except (AssertionError, AttributeError) as exc:
        # OmegaConf asserts when an override sets a key below a null node, e.g.
        # model.deployment.command=... on a model config without a deployment block.
        raise ConfigError(
            f"{' '.join(args)}: cannot apply these overrides ({type(exc).__name__}: {exc}); a key below a "
            "null node (such as model.deployment.* on a model without a deployment) cannot be set from the "
            "command line: put the block in a conf/model/*.yaml (see docs/distributed.md)"
        ) from None
    launcher = str(cfg.hydra.runtime.choices.get("hydra/launcher") or "basic")
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return OmegaConf.create(OmegaConf.to_container(cfg)), launcher


def compose_plan(overrides: Sequence[str]) -> LaunchPlan:
    """The plan ``python -m nel.launch OVERRIDES`` would carry out, without carrying it out
    (for ``nel sweep``, the launcher's own up-front check, and tests)."""
    args = normalize_overrides(overrides)
    cfg, launcher = compose(args)
    return plan_from_config(cfg, launcher=launcher, overrides=args)


def _composition_error(args: Sequence[str], exc: Exception) -> ConfigError:
    """Hydra's several-line message as one line; an unknown key gets a did-you-mean."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else None
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and getattr(cause, "full_key", None):
        key = str(cause.full_key)
        override = next((a for a in args if a.lstrip("+~").split("=", 1)[0] == key), key)
        parent, _, name = key.rpartition(".")
        valid = _schema_keys(parent)
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f"; did you mean {(parent + '.' if parent else '') + close[0]!r}?" if close else ""
        where = f"in {parent}" if parent else "at the top level"
        return ConfigError(
            f"{override}: no key {key!r}{hint} (keys {where}: {', '.join(valid)}; python -m nel.launch --help)"
        )
    text = _flat(exc)
    if cause is not None and _flat(cause) not in text:
        text += f" ({_flat(cause)})"
    return ConfigError(text)


def _flat(exc: BaseException) -> str:
    """An exception's message on one line (OmegaConf appends full_key/object_type lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(("full_key:", "object_type=", "reference_type="))]
    return " ".join(kept) or type(exc).__name__


def _schema_keys(path: str) -> list[str]:
    """The keys the launch schema has at ``path`` ("" for the top level, "model", "cluster.reducer")."""
    cls: Any = launch_schema()
    for part in [p for p in path.split(".") if p]:
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        hint = hints.get(part)
        args = [a for a in typing.get_args(hint) if a is not type(None)] if hint is not None else []
        cls = args[0] if len(args) == 1 else hint
        if not dataclasses.is_dataclass(cls):
            return []
    return sorted(f.name for f in dataclasses.fields(cls))


# --------------------------------------------------------------------------------------------
# Carrying out a plan


def execute(plan: LaunchPlan) -> int:
    """Submit (or run here) the shards of ``plan`` that are not done; return an exit code."""
    from nel.cluster import report_step
    from nel.reconcile import Target, advance

    warning = plan.spec.sampling_warning()
    if warning:
        print(f"nel: warning: {warning}", file=sys.stderr)
    target = Target(plan.spec, plan.total_shards, plan.settings, plan.allow_partial, plan.record())
    backend = get_backend(plan.backend)
    try:
        step = advance(target, backend, dry_run=plan.dry_run, overwrite=plan.overwrite)
    except RunConflictError as exc:
        # rundir's advice names nel eval run's flags; the launcher's own spellings differ.
        why = str(exc).split(". Use another", 1)[0]
        raise RunConflictError(f"{why}. Use another output_dir=..., or --overwrite to start over") from None
    return report_step(step, target, wait=plan.wait, poll_s=plan.poll_s, prog="nel")


# --------------------------------------------------------------------------------------------
# Command line


_FLAGS = {"--wait": "wait=true", "--dry-run": "dry_run=true", "--overwrite": "overwrite=true"}


def normalize_overrides(args: Sequence[str], *, check_groups: bool = True) -> list[str]:
    """Make the documented spellings work and catch misspelt options early.

    ``shards=8``: Hydra parses 8 as an int, which it cannot use as a group option, so it
    becomes ``shards="8"`` (conf/shards/8.yaml) or, for a count without a file,
    ``shards.count=N``. ``bench=skills://gpqa`` becomes ``bench=skills/gpqa``.
    ``--wait``/``--dry-run``/``--overwrite`` become ``wait=true``/``dry_run=true``/``overwrite=true``.
    Already normalized arguments come out unchanged.
    """
    root = conf_dir()
    out: list[str] = []
    for arg in args:
        if arg in _FLAGS:
            out.append(_FLAGS[arg])
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
        if key == "shards" and value.strip('"').isdigit():
            value = value.strip('"')
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


def _natural(text: str) -> list[Any]:
    """Sort key: "16" after "2", "skills/aime24" before "skills/aime25"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _options(root: Path, group: str) -> list[str]:
    return sorted(
        (str(p.relative_to(root / group).with_suffix("")) for p in (root / group).rglob("*.yaml")), key=_natural
    )


def _check_option(root: Path, group: str, option: str) -> None:
    if (root / group / f"{option}.yaml").exists() or not (root / group).is_dir():
        return
    options = _options(root, group)
    close = difflib.get_close_matches(option, options, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"unknown {group} {option!r}{hint} (options in {root / group}: {', '.join(options)})")


def help_text(overrides: Sequence[str]) -> str:
    """``--help``: the groups with every option (numbers in numeric order, the chosen one
    starred), the launchers and backends, then the composed config."""
    from omegaconf import OmegaConf

    cfg, launcher = compose(overrides)
    root = conf_dir()
    defaults = _defaults(root)
    lines = [
        "usage: python -m nel.launch [GROUP=OPTION ...] [KEY=VALUE ...] [--wait] [--dry-run] [--overwrite]",
        "",
        "Compose a run from conf/ (Hydra), validate it, and submit the shards that are not done, plus a",
        "reducer, to a backend (docs/distributed.md). Also: --cfg job (print the config), -m (multirun),",
        "--hydra-help (Hydra's own flags).",
        "",
        "config groups (GROUP=OPTION; * marks the default):",
    ]
    for group in _CHECKED_GROUPS:
        if not (root / group).is_dir():
            continue
        shown = [f"{o}*" if o == defaults.get(group) else o for o in _options(root, group)]
        extra = "  (or any count: shards=N)" if group == "shards" else ""
        extra = "  (default: none)" if group == "judge" and defaults.get(group) is None else extra
        lines.append(f"  {group + ':':<16}{', '.join(shown)}{extra}")
    launchers = ", ".join(
        f"{name}{'*' if name == 'nel_slurm' else ''} (backend {backend})" for name, backend in HYDRA_LAUNCHERS.items()
    )
    lines += [
        f"  {'hydra/launcher:':<16}{launchers}",
        "",
        f"backend=NAME: where the shards run ({', '.join(sorted(BACKENDS))}); unset: the one hydra/launcher "
        f"stands for (now: {cfg.get('backend') or backend_for_launcher(launcher)})",
        "",
        "config (override any key as KEY=VALUE):",
        OmegaConf.to_yaml(cfg).rstrip(),
    ]
    return "\n".join(lines)


def _defaults(root: Path) -> dict[str, str | None]:
    """The group choices of conf/config.yaml's defaults list."""
    import yaml

    found: dict[str, str | None] = {}
    for entry in (yaml.safe_load((root / "config.yaml").read_text()) or {}).get("defaults", []):
        if isinstance(entry, dict):
            for key, value in entry.items():
                found[str(key)] = None if value is None else str(value)
    return found


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
        print(f"nel: error: {exc}", file=sys.stderr, flush=True)
        code = int(exit_code_for(exc))
    _EXIT[0] = max(_EXIT[0], code)


# Hydra flags that choose another config (then conf/ is not what Hydra composes).
_OTHER_CONFIG = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn", "hydra.searchpath")


def _preflight(args: Sequence[str]) -> None:
    """Compose and validate before Hydra runs, so a bad config is one line and exit 2 rather
    than Hydra's report and exit 1. Under --multirun, each sweep's first value stands for it."""
    overrides = [a for a in args if not a.startswith("-") and ("=" in a or a.startswith("~"))]
    if "-m" in args or "--multirun" in args:
        overrides = _first_of_sweeps(overrides)
    compose_plan(overrides)


def _first_of_sweeps(overrides: list[str]) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError(_flat(exc)) from None
    out = []
    for text, override in zip(overrides, parsed):
        if override.is_sweep_override():
            try:
                first = next(iter(override.sweep_string_iterator()))
            except (HydraException, StopIteration, TypeError, ValueError):
                continue  # a sweep nel cannot expand (glob): Hydra checks it
            out.append(f"{override.get_key_element()}={first}")
        else:
            out.append(text)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import hydra

    args = list(sys.argv[1:] if argv is None else argv)
    custom = any(a.startswith(_OTHER_CONFIG) for a in args)
    try:
        args = normalize_overrides(args, check_groups=not custom)
        if not custom and ("--help" in args or "-h" in args):
            print(help_text([a for a in args if a not in ("--help", "-h")]))
            return 0
        if not custom:
            _preflight(args)
    except NelError as exc:
        print(f"nel: error: {exc}", file=sys.stderr)
        return int(exit_code_for(exc))
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
