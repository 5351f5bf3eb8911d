"""The curated public API: what `nel` exports is exactly what __all__ says."""

from __future__ import annotations

import nel


def test_exported_members() -> None:
    public = {name for name in dir(nel) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(nel, name)).__name__ == "module"}
    assert set(nel.__all__) == (public - modules) | {"__version__"}
    assert {"run_evaluation", "ChatSolver", "ModelClient", "EvalEnvironment", "SeedResult", "VerifyResult",
            "Solver", "SolveResult"} <= set(nel.__all__)  # fmt: skip


def test_skills_environment_import_path() -> None:
    from nel.environments.skills import SkillsEnvironment

    assert issubclass(SkillsEnvironment, nel.EvalEnvironment)
