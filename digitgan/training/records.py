"""The run's records beside its checkpoints: config.json, metrics.csv, TensorBoard's event files, the curves, the
sample grids and their animation, the real-data grid and reference, and the best checkpoint; also making the
run's directories and moving an old run aside for --fresh.

Every write goes through digitgan.files, so a full disk is one WriteError. The CSV's rows are appended without
fsync (one per --log-every steps): a crash can lose or cut the last few, and a resume rebuilds the file from the
rows up to its checkpoint's step, dropping a cut row. TensorBoard's events are cut back the same way: a resumed
run opens its writer with purge_step, so a reader drops what an earlier session logged after the checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import re
import shutil
import struct
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..config import TrainConfig
from ..core.charts import plot_curves
from ..core.files import append_line, atomic_write, check_out_dir, set_aside
from ..core.pictures import captioned, grid, save_gif, save_grid
from ..data.dataset import to_float
from ..data.shape import GridLayout
from ..errors import UsageError, WriteError
from ..quality.metrics import CSV_KEYS
from . import checkpoints

METERED = (
    "d_loss",
    "g_loss",
    "d_real",
    "d_fake",
    "grad_norm_d",
    "grad_norm_g",
    "augment_p",
)  # averaged over a row's steps
LOGGED = (*METERED[:6], "lr_d", "lr_g", "it_per_s", "augment_p")
CSV_COLUMNS = ("step", "seconds", *LOGGED, *CSV_KEYS)  # seconds: of training only, evaluations left out
# TensorBoard's name for each CSV column, grouped into its panels
TB_TAGS = {
    "d_loss": "loss/discriminator",
    "g_loss": "loss/generator",
    "d_real": "D_output/real_D(x)",
    "d_fake": "D_output/generated_D(G(z))",
    "grad_norm_d": "gradient_norm/discriminator",
    "grad_norm_g": "gradient_norm/generator",
    "lr_d": "learning_rate/discriminator",
    "lr_g": "learning_rate/generator",
    "it_per_s": "speed/iterations_per_second",
    "augment_p": "augment/p",
    **{k: f"quality/{k}" for k in CSV_KEYS},
}
GRID_NAME = re.compile(r"^step_(\d{7,})\.png$")
PR_PANEL = ("precision / recall / coverage", ("precision", "recall", "coverage"))
CLASS_PANEL = ("drawn as the class asked for (conditional)", ("class_accuracy",))
LOSS_PANELS = (
    ("losses", ("d_loss", "g_loss")),
    ("mean D output: real vs generated", ("d_real", "d_fake")),
    ("gradient norms", ("grad_norm_d", "grad_norm_g")),
)
PLOT_EVERY = 30.0  # seconds: the curves are drawn at a checkpoint at most this often, and at a session's end
RUN_FILES = (
    "config.json",
    "metrics.csv",
    "losses.png",
    "metrics.png",
    "real_reference.json",
    "best.pt",
    "best.json",
    "tensorboard",
)


def archive_run(run_dir: Path, force: bool) -> None:
    """For --fresh: move an earlier run's files aside (never delete them); refuse without --force."""
    found = checkpoints.list_checkpoints(run_dir)
    if not found:
        return
    if not force:
        raise UsageError(
            f"--fresh: {run_dir}/ already holds {len(found)} checkpoint(s) (newest {found[-1].name}); "
            f"add --force to move them aside into {run_dir}/previous-<time>/, or pass an empty "
            f"--checkpoint-dir"
        )
    dest = run_dir / time.strftime("previous-%Y%m%d-%H%M%S")
    dest.mkdir()
    for p in run_dir.iterdir():
        if checkpoints.NAME.match(p.name) or ".corrupt" in p.name or p.name in RUN_FILES:
            shutil.move(str(p), dest / p.name)
    print(f"moved the previous run in {run_dir}/ to {dest}/", file=sys.stderr)


class Damaged(ValueError):
    """A record of the run (metrics.csv, a JSON file, TensorBoard's events) that cannot be what it should be."""


def _parse(row: dict[str, Any]) -> dict[str, Any] | None:
    try:
        parsed = {k: float(v) if v not in ("", None) else "" for k, v in row.items() if k is not None}
    except ValueError:
        return None
    return parsed if parsed.get("step") not in ("", None) else None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The CSV's rows as numbers ("" where empty); a row cut short by a crash or a full disk is left out. Damaged
    when the file is not text, or not a metrics.csv (its header does not start with `step`)."""
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or reader.fieldnames[0] != "step":
                raise Damaged("its first line is not a metrics.csv header")
            return [r for r in map(_parse, reader) if r is not None]
    except UnicodeDecodeError:
        raise Damaged("it is not text") from None
    except csv.Error as e:
        raise Damaged(f"it is not CSV ({e})") from None


def read_record(path: Path) -> dict[str, Any] | None:
    """A JSON record of the run (config.json, best.json, real_reference.json); None when there is none."""
    try:
        value = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:  # JSON's errors and UnicodeDecodeError
        raise Damaged("it is not JSON") from None
    if not isinstance(value, dict):
        raise Damaged("it is not a JSON object")
    return value


def events_damage(board_dir: Path) -> str | None:
    """What is wrong with a TensorBoard folder, or None: not a folder, or an event file with a record whose
    checksum fails (TensorBoard stops reading a file there). A last record cut short by a crash is no damage:
    readers stop at it, and the resumed run's events go into a new file."""
    if not board_dir.exists():
        return None
    if not board_dir.is_dir():
        return "it is not a folder"
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c  # what TensorBoard checks

    for f in sorted(board_dir.glob("*tfevents*")):
        data, pos = f.read_bytes(), 0
        while pos + 12 <= len(data):
            head, (crc,) = data[pos : pos + 8], struct.unpack("<I", data[pos + 8 : pos + 12])
            end = pos + 12 + struct.unpack("<Q", head)[0]
            if crc != masked_crc32c(head):
                return f"{f.name} is damaged at byte {pos} (a record's length fails its checksum)"
            if end + 4 > len(data):
                break  # cut short
            if struct.unpack("<I", data[end : end + 4])[0] != masked_crc32c(data[pos + 12 : end]):
                return f"{f.name} is damaged at byte {pos} (a record fails its checksum)"
            pos = end + 4
    return None


def _line(row: dict[str, Any]) -> str:
    return ",".join(_fmt(row.get(c, "")) for c in CSV_COLUMNS)


def _fmt(v: Any) -> str:
    return "" if v == "" else f"{v:.8g}" if isinstance(v, float) else str(v)  # float32's precision


def _json(value: Any) -> Any:
    return lambda f: f.write(json.dumps(value, indent=2).encode() + b"\n")


def _after_earlier_events(board_dir: Path) -> None:
    """Wait, if need be, for the clock to pass the second in an earlier session's event file name. Readers take the
    files in name order, which is the second they were opened, then host and pid: a session resumed within the second
    a killed one started, by a process of lower pid, would be read first, and the reader, meeting the older file's
    steps after its own, would drop the new ones as out of order."""
    stamps = (
        [
            int(m.group(1))
            for f in board_dir.glob("events.out.tfevents.*")
            if (m := re.match(r"events\.out\.tfevents\.(\d+)\.", f.name))
        ]
        if board_dir.is_dir()
        else []
    )
    if stamps and max(stamps) >= time.time() // 1:
        time.sleep(max(stamps) + 1 - time.time())


def _quiet_board_thread(hook: Any) -> Any:
    """threading.excepthook, less the traceback of TensorBoard's writer thread failing to write: the writer raises
    that OSError again in the training thread, where it becomes the run's one-line WriteError."""

    def quiet(args: threading.ExceptHookArgs) -> None:
        if not (isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread"):
            hook(args)

    return quiet


class RunRecords:
    """Opens a run's records at a step: config.json is written anew, metrics.csv cut back to the rows up to that
    step and TensorBoard's later events marked for purging (what was logged after the checkpoint is redone); then
    rows, grids, curves and the best checkpoint are added as the run goes."""

    def __init__(self, cfg: TrainConfig, step: int):
        self.run_dir, self.sample_dir = Path(cfg.checkpoint_dir), Path(cfg.sample_dir)
        self.conditional = cfg.conditional == "on"
        self.metric_panels: tuple = ()  # metrics.png's, known once the run's quality is judged (reference())
        self.csv = self.run_dir / "metrics.csv"
        anew = f"a fresh one is written from step {step}"
        self.rows = [r for r in self._readable(self.csv, read_rows, [], anew) if r["step"] <= step]
        atomic_write(
            self.csv,
            lambda f: f.write(
                "".join(line + "\n" for line in [",".join(CSV_COLUMNS), *map(_line, self.rows)]).encode()
            ),
        )
        for name in ("config.json", "real_reference.json"):  # written anew: config.json now, the reference if judged
            self._readable(self.run_dir / name, read_record, None, anew)
        if self._readable(self.run_dir / "best.json", read_record, False, "it is made again from best.pt") is False:
            self._best_json_from_best_pt()
        atomic_write(self.run_dir / "config.json", _json(dataclasses.asdict(cfg)))
        self.board, self.board_seconds, self._hook = None, 0.0, None  # board_seconds: TensorBoard's cost
        if cfg.tensorboard == "on":
            self.board_dir = self.run_dir / "tensorboard"
            damage = events_damage(self.board_dir)
            if damage:
                self._set_aside(
                    self.board_dir, damage, f"a fresh one starts, holding the CSV's curves up to step {step}"
                )
            self._hook, threading.excepthook = threading.excepthook, _quiet_board_thread(threading.excepthook)
            with self._board():
                from torch.utils.tensorboard import SummaryWriter

                _after_earlier_events(self.board_dir)
                # Events from step + 1 on are an earlier session's lost stretch: readers drop them.
                self.board = SummaryWriter(self.board_dir, purge_step=step + 1, flush_secs=60)
                settings = "\n".join(f"    {k} = {v}" for k, v in dataclasses.asdict(cfg).items())
                self.board.add_text("config", f"The settings from step {step + 1} on:\n\n{settings}", step + 1)
            if damage:
                for row in self.rows:
                    self._board_row(row)
        real = self.sample_dir / "real.png"
        self.write_real = not real.exists()
        self.plotted = time.monotonic()  # when the curves were last drawn (this session's start, to begin with)

    def _set_aside(self, path: Path, why: str, then: str) -> None:
        print(f"warning: {path} is damaged ({why}): kept as {set_aside(path).name}; {then}", file=sys.stderr)

    def _readable(self, path: Path, read: Any, damaged: Any, then: str) -> Any:
        """read(path); a damaged record is set aside (saying so, and what happens `then`), and `damaged` stands in
        for what it held."""
        try:
            return read(path)
        except Damaged as e:
            self._set_aside(path, str(e), then)
            return damaged

    def _best_json_from_best_pt(self) -> None:
        """best.json again from best.pt's own record of its step and FID, after a damaged one was set aside."""
        try:
            best = checkpoints.load(self.run_dir / "best.pt").get("best")
        except (OSError, ValueError, UsageError):
            return  # no usable best.pt either: the next evaluation that improves writes both
        if best:
            atomic_write(self.run_dir / "best.json", _json({**best, "checkpoint": "best.pt"}))

    @contextlib.contextmanager
    def _board(self) -> Iterator[None]:
        """Around each TensorBoard call: its time counted, and a failed write (reported by the writer as an
        OSError, its thread's or its own) made the run's WriteError."""
        t = time.perf_counter()
        try:
            yield
        except OSError as e:
            raise WriteError(self.board_dir, e) from None
        self.board_seconds += time.perf_counter() - t

    def reference(self, figures: dict[str, Any], headline: str) -> None:
        """The real-data reference beside which quality figures are read, and what metrics.png shows: the headline
        figure (FID, or KID on small data) in its feature space, precision/recall/coverage, class accuracy."""
        atomic_write(self.run_dir / "real_reference.json", _json({**figures, "headline": headline}))
        self.metric_panels = (
            (f"{headline.upper()} in {figures['features']} (lower is better)", (headline,)),
            PR_PANEL,
            *((CLASS_PANEL,) if self.conditional and "class_accuracy" in figures else ()),
        )

    def real_grid(self, pixels: torch.Tensor, labels: torch.Tensor, layout: GridLayout) -> None:
        """SAMPLE_DIR/real.png, once: training images (uint8 pixels) to hold the grids against, laid out like them:
        random ones, or by class a row of each of the first classes (a class of fewer images shows them again)."""
        if self.write_real:
            pick = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(0))
            if layout.by_class:
                rows = [pick[labels[pick] == c] for c in range(layout.rows)]
                pick = torch.cat([row[torch.arange(layout.cols) % len(row)] for row in rows if len(row)])
            save_grid(to_float(pixels[pick[: layout.count]]), self.sample_dir / "real.png", nrow=layout.cols)
            self.write_real = False

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        append_line(self.csv, _line(row))
        if self.board:
            self._board_row(row)

    def _board_row(self, row: dict[str, Any]) -> None:
        board = self.board
        if board is None:
            return
        with self._board():
            for key, value in row.items():
                if key in TB_TAGS and value != "":
                    board.add_scalar(TB_TAGS[key], value, row["step"])

    def grid(self, step: int, images: torch.Tensor, layout: GridLayout) -> None:
        """The fixed batch's grid, laid out as the data's layout says (by class: row c drawn as class c)."""
        save_grid(images, self.sample_dir / f"step_{step:07d}.png", nrow=layout.cols)
        if self.board:
            with self._board():
                picture = grid(images, layout.cols)
                self.board.add_image(
                    "samples/fixed_noise", picture, step, dataformats="HW" if picture.ndim == 2 else "HWC"
                )

    def best(self, state: dict[str, Any]) -> None:
        """best.pt (the whole state at the lowest FID so far; never pruned, never resumed from) and best.json."""
        checkpoints.save_as(self.run_dir / "best.pt", state)
        atomic_write(self.run_dir / "best.json", _json({**state["best"], "checkpoint": "best.pt"}))

    def plot(self, metrics: bool, last: bool) -> None:
        """At a checkpoint: losses.png, and metrics.png when quality is tracked, drawn again at the session's last
        save and at most every PLOT_EVERY seconds before it; TensorBoard's events flushed to disk."""
        if last or time.monotonic() - self.plotted >= PLOT_EVERY:
            plot_curves(self.rows, self.run_dir / "losses.png", LOSS_PANELS)
            if metrics:
                plot_curves(self.rows, self.run_dir / "metrics.png", self.metric_panels)
            self.plotted = time.monotonic()
        if self.board:
            with self._board():
                self.board.flush()

    def close(self, quiet: bool = False) -> None:
        """Flush and close TensorBoard's writer (quiet: on the way out of a failed run, a failure to is ignored)."""
        board, self.board = self.board, None
        try:
            if board:
                with contextlib.suppress(WriteError) if quiet else contextlib.nullcontext(), self._board():
                    board.close()
        finally:
            if self._hook:
                threading.excepthook, self._hook = self._hook, None


def grids(sample_dir: str | Path, up_to: int | None = None) -> list[tuple[int, Path]]:
    """The run's grids (step_NNNNNNN.png) by step, up to a step if given."""
    d = Path(sample_dir)
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := GRID_NAME.match(p.name))] if d.is_dir() else []
    return sorted((s, p) for s, p in found if up_to is None or s <= up_to)


def _picture(path: Path) -> np.ndarray:
    """A grid PNG as uint8 pixels: (H, W) grey, or (H, W, 3) colour."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L" if image.mode in ("L", "1") else "RGB"))


def animate(
    sample_dir: str | Path, out: str | Path | None = None, fps: float = 4.0, up_to: int | None = None
) -> tuple[Path, list[int]]:
    """An animated GIF of the grids in step order, each with its step written above it (default
    SAMPLE_DIR/progress.gif); returns it and the steps it shows."""
    if out is not None:
        if Path(out).suffix != ".gif":
            raise UsageError(f"--out {out}: the name must end in .gif")
        check_out_dir(Path(out))
    found = grids(sample_dir, up_to)
    if not found:
        raise UsageError(
            f"no grids (step_NNNNNNN.png) in {sample_dir}/: train first, or pass the --sample-dir the run wrote to"
        )
    frames = [_picture(p) for _, p in found]
    # A sample dir shared by runs of another grid size: animate those of the newest grid's size.
    keep = [(step, f) for (step, _), f in zip(found, frames) if f.shape == frames[-1].shape]
    return save_gif(
        [captioned(f, f"step {step}") for step, f in keep], Path(out) if out else Path(sample_dir) / "progress.gif", fps
    ), [step for step, _ in keep]
