"""BFCL in the catalog: where the installed packages keep the data, and the converters."""

from __future__ import annotations

import importlib.resources
import importlib.util
from collections.abc import Iterable
from pathlib import Path

from nel.errors import DataError
from nel.scoring.bfcl import V3_CATEGORIES, V4_CATEGORIES, Row, category_rows

PACKAGES = {"v3": ("bfcl", "nvidia-bfcl==26.3", "BFCL_v3"), "v4": ("bfcl_eval", "bfcl-eval==2026.3.23", "BFCL_v4")}


def package_data(version: str) -> tuple[Path, str]:
    """The data directory of the package that ships BFCL ``version``, and its file prefix."""
    module, requirement, prefix = PACKAGES[version]
    if importlib.util.find_spec(module) is None:
        raise DataError(f"BFCL {version}'s data ships in {requirement}: pip install --no-deps {requirement}")
    return Path(str(importlib.resources.files(module).joinpath("data"))), prefix


def v3_rows(_paths: list[Path]) -> Iterable[Row]:
    data, prefix = package_data("v3")
    for category in V3_CATEGORIES:
        yield from category_rows(data, prefix, category)


def v4_rows(_paths: list[Path]) -> Iterable[Row]:
    data, prefix = package_data("v4")
    for category in V4_CATEGORIES:
        yield from category_rows(data, prefix, category)
