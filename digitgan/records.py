"""The run's records beside its checkpoints: config.json, metrics.csv, the curves, the sample grids, and the
real-data reference; also making the run's directories and moving an old run aside for --fresh.

Every write goes through digitgan.files, so a full disk is one WriteError. The CSV's rows are appended without
fsync (one per --log-every steps): a crash can lose or cut the last few, and a resume rebuilds the file from the
rows up to its checkpoint's step, dropping a cut row.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from . import checkpoints
from .config import TrainConfig
from .errors import UsageError
from .files import append_line, atomic_write
from .images import plot_curves, save_grid
from .metrics import CSV_KEYS

CSV_COLUMNS = ("step", "seconds", "d_loss", "g_loss", "d_real", "d_fake") + CSV_KEYS  # seconds: training only
METRIC_PANELS = (("FID (MNIST evaluator features; lower is better)", ("fid",)),
                 ("precision / recall / coverage", ("precision", "recall", "coverage")))
CLASS_PANEL = ("drawn as the class asked for (conditional)", ("class_accuracy",))
LOSS_PANELS = (("losses", ("d_loss", "g_loss")), ("mean D output: real vs generated", ("d_real", "d_fake")))
RUN_FILES = ("config.json", "metrics.csv", "losses.png", "metrics.png", "real_reference.json")


def ensure_writable(directory: str | Path, flag: str) -> Path:
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=d).close()
    except OSError as e:
        raise UsageError(f"{flag} {d} is not a writable directory ({e.strerror}); pass one you can write to")
    return d


def archive_run(run_dir: Path, force: bool) -> None:
    """For --fresh: move an earlier run's files aside (never delete them); refuse without --force."""
    found = checkpoints.list_checkpoints(run_dir)
    if not found:
        return
    if not force:
        raise UsageError(f"--fresh: {run_dir}/ already holds {len(found)} checkpoint(s) (newest {found[-1].name}); "
                         f"add --force to move them aside into {run_dir}/previous-<time>/, or pass an empty "
                         f"--checkpoint-dir")
    dest = run_dir / time.strftime("previous-%Y%m%d-%H%M%S")
    dest.mkdir()
    for p in run_dir.iterdir():
        if p.is_file() and (checkpoints.NAME.match(p.name) or p.suffix == ".corrupt" or p.name in RUN_FILES):
            shutil.move(str(p), dest / p.name)
    print(f"moved the previous run in {run_dir}/ to {dest}/", file=sys.stderr)


def _parse(row: dict[str, Any]) -> dict[str, Any] | None:
    try:
        parsed = {k: float(v) if v not in ("", None) else "" for k, v in row.items() if k is not None}
    except ValueError:
        return None
    return parsed if parsed.get("step") not in ("", None) else None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The CSV's rows as numbers ("" where empty); a row cut short by a crash or a full disk is left out."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [r for r in map(_parse, csv.DictReader(f)) if r is not None]


def _line(row: dict[str, Any]) -> str:
    return ",".join(_fmt(row.get(c, "")) for c in CSV_COLUMNS)


def _fmt(v: Any) -> str:
    return "" if v == "" else f"{v:.6g}" if isinstance(v, float) else str(v)


def _json(value: Any) -> Any:
    return lambda f: f.write(json.dumps(value, indent=2).encode() + b"\n")


class RunRecords:
    """Opens a run's records at a step: config.json is written anew and metrics.csv cut back to the rows up to
    that step (what was logged after the checkpoint is redone); then rows, grids and curves are added as the run
    goes."""

    def __init__(self, cfg: TrainConfig, step: int):
        self.run_dir, self.sample_dir = Path(cfg.checkpoint_dir), Path(cfg.sample_dir)
        self.metric_panels = METRIC_PANELS + ((CLASS_PANEL,) if cfg.conditional == "on" else ())
        self.csv = self.run_dir / "metrics.csv"
        self.rows = [r for r in read_rows(self.csv) if r["step"] <= step]
        atomic_write(self.csv, lambda f: f.write("".join(line + "\n" for line in
                                                         [",".join(CSV_COLUMNS), *map(_line, self.rows)]).encode()))
        atomic_write(self.run_dir / "config.json", _json(dataclasses.asdict(cfg)))

    def reference(self, figures: dict[str, Any]) -> None:
        """The real-data reference beside which quality figures are read."""
        atomic_write(self.run_dir / "real_reference.json", _json(figures))

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        append_line(self.csv, _line(row))

    def grid(self, step: int, images: torch.Tensor) -> None:
        """The fixed batch's grid: 8x8, or for a conditional run 10x10 with row c drawn as class c."""
        save_grid(images, self.sample_dir / f"step_{step:07d}.png", nrow=8 if len(images) == 64 else 10)

    def plot(self, metrics: bool) -> None:
        """losses.png, and metrics.png when quality is tracked."""
        plot_curves(self.rows, self.run_dir / "losses.png", LOSS_PANELS)
        if metrics:
            plot_curves(self.rows, self.run_dir / "metrics.png", self.metric_panels)
