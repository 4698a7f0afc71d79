"""Request bodies of the runs API (validated by FastAPI; bad input is a 422 with the reason)."""

from __future__ import annotations

import itertools
from typing import Any

from croniter import croniter
from pydantic import BaseModel, Field, field_validator, model_validator


def _relative(value: str | None) -> str | None:
    if value is None:
        return None
    parts = value.replace("\\", "/").split("/")
    if value.startswith("/") or ".." in parts or not value.strip():
        raise ValueError("must be a path relative to the home directory, without '..'")
    return value


class RunRequest(BaseModel):
    """What to execute: a notebook (nbformat 4 JSON) or the path of one in the user's home."""

    notebook: dict[str, Any] | None = Field(
        None, description="The notebook itself (nbformat 4 JSON)."
    )
    path: str | None = Field(None, description="Or: a notebook in the user's home, relative path.")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Papermill parameters.")
    timeout: float | None = Field(None, ge=0, description="Seconds; 0 unlimited; null the default.")
    kernel_name: str | None = Field(None, description="Kernel; null uses the notebook's own.")
    cwd: str | None = Field(
        None,
        description="Working directory in the home (default: the "
        "notebook's directory, or the run directory for uploads).",
    )
    name: str = Field("", max_length=255, description="A label for listings.")
    site: str | None = Field(
        None,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Compute site (compute.sites, GET /sites); null: the default site.",
    )

    @field_validator("path", "cwd")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return _relative(value)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.notebook is None) == (self.path is None):
            raise ValueError("give exactly one of 'notebook' and 'path'")
        nb = self.notebook
        if nb is not None and (nb.get("nbformat") != 4 or not isinstance(nb.get("cells"), list)):
            raise ValueError("'notebook' must be an nbformat 4 notebook (with a 'cells' list)")
        if self.path is not None and not self.path.endswith(".ipynb"):
            raise ValueError("'path' must name a .ipynb file")
        return self


class SweepRequest(RunRequest):
    """One run per parameter set: an explicit list, and/or the product of a grid."""

    parameter_sets: list[dict[str, Any]] | None = Field(
        None, description="Each set is merged over 'parameters'."
    )
    grid: dict[str, list[Any]] | None = Field(
        None, description="Name -> values; every combination becomes a parameter set."
    )

    def expand(self) -> list[dict[str, Any]]:
        sets = list(self.parameter_sets or [])
        if self.grid:
            names = list(self.grid)
            for combo in itertools.product(*(self.grid[n] for n in names)):
                sets.append(dict(zip(names, combo, strict=True)))
        if not sets:
            raise ValueError("a sweep needs 'parameter_sets' or 'grid' with at least one set")
        return [{**self.parameters, **s} for s in sets]


class ScheduleRequest(RunRequest):
    cron: str = Field(..., description="Cron expression (5 fields, or 6 with seconds last).")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"not a valid cron expression: {value!r}")
        return value
