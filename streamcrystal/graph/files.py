"""Pipeline files: a Python file that defines ``make_pipeline(**overrides) -> Pipeline``.

Found by path, or by name in the directories of ``$STREAMCRYSTAL_PIPELINES`` (``:``
separated) and then among the ready files of the project's top-level ``pipelines/``
folder, which is installed with the package as ``streamcrystal.pipelines`` (read with
``importlib.resources``, so any install finds them from any working directory).
"""
from __future__ import annotations

import importlib.resources
import importlib.util
import os
from pathlib import Path
from types import ModuleType

from ..errors import PipelineFileError

__all__ = ["load_pipeline", "pipeline_dirs"]


def pipeline_dirs() -> list[Path]:
    """Where pipeline files are looked up by name, in order: ``$STREAMCRYSTAL_PIPELINES``,
    then the ready files installed with the package.

    Examples
    --------
    >>> (pipeline_dirs()[-1] / "peak_tracking.py").is_file()
    True
    """
    dirs = [Path(p) for p in os.environ.get("STREAMCRYSTAL_PIPELINES", "").split(os.pathsep) if p]
    dirs.append(_installed_dir())
    return dirs


def _installed_dir() -> Path:
    """The folder of ``streamcrystal.pipelines`` (the project's ``pipelines/``, installed)."""
    files = importlib.resources.files("streamcrystal.pipelines")
    return Path(str(files.joinpath("peak_tracking.py"))).parent


def load_pipeline(name_or_path: str | os.PathLike) -> ModuleType:
    """Import a pipeline file; returns the module (call its ``make_pipeline``).

    Examples
    --------
    >>> module = load_pipeline("peak_tracking")
    >>> module.PARAMETERS["separation"]
    100
    """
    candidate = Path(name_or_path)
    if candidate.suffix != ".py" or not candidate.exists():
        searched = [d / f"{Path(name_or_path).stem}.py" for d in pipeline_dirs()]
        found = [path for path in searched if path.exists()]
        if not found:
            names = sorted({path.stem for d in pipeline_dirs() for path in d.glob("*.py") if not path.stem.startswith("_")})
            raise PipelineFileError(
                f"no pipeline file {str(name_or_path)!r}; give a path to a .py file or a name found in "
                f"{[str(d) for d in pipeline_dirs()]}: {', '.join(names) or 'none'} (add directories with "
                "$STREAMCRYSTAL_PIPELINES)"
            )
        candidate = found[0]
    spec = importlib.util.spec_from_file_location(f"streamcrystal_pipeline_{candidate.stem}", candidate)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "make_pipeline", None)):
        raise PipelineFileError(f"pipeline file {str(candidate)!r} defines no make_pipeline(**overrides) function")
    return module
