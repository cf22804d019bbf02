"""The training loop, read top to bottom: set up (start.py), loop (update, log, sample, save), finish. Everything a
checkpoint holds lives in state.TrainState, what is minimised in objective.Objective, the update steps in steps.py,
the run directory's records in records.RunRecords."""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..config import TrainConfig
from ..errors import ProcessLost, TrainingStopped, WriteError
from ..nets.drawing import Generator, prepare_for_inference
from ..nets.networks import call
from ..quality.judge import Judge, judge_for
from ..quality.metrics import CSV_KEYS
from . import checkpoints
from .distributed import World, join
from .lock import RunLock
from .records import METERED, RunRecords, animate
from .start import NothingToTrain, Start, start
from .state import TrainState
from .steps import Meter, update

D_WINS_LOSS = 1e-3  # D loss below this means D separates real from fake almost perfectly
EVAL_SHARE_HINT = 0.1  # evaluations costing more than this share of the training time get a hint at the end


class StopRequest:
    """Turns the first SIGINT/SIGTERM into a flag the loop checks after each step; a second one interrupts. Under
    torchrun (escalate off: it passes a Ctrl-C on to processes that had it already) the flag stays for the rest of
    the process: when a rank dies, torchrun sends SIGTERM to the others, and a survivor whose collective has just
    failed must live to print its one line instead of dying silently on the way out."""

    def __init__(self, escalate: bool = True) -> None:
        self.signal: int | None = None
        self.escalate = escalate
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, sig: int, frame: Any) -> None:
        if self.signal is not None and self.escalate:
            raise KeyboardInterrupt
        self.signal = sig

    def __exit__(self, *exc: Any) -> None:
        if not self.escalate:
            return
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model in eval mode (batch norm from its running statistics), then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def health(means: list[float], d_won_steps: int, cfg: TrainConfig, step: int) -> str | None:
    """What is wrong with the run judging by its mean losses, or None."""
    if not all(math.isfinite(m) for m in means):
        return f"a loss became NaN or inf by step {step}"
    if d_won_steps >= cfg.collapse_steps:
        return (
            f"the discriminator has won outright (D loss < {D_WINS_LOSS}) for {d_won_steps} steps, so the "
            f"generator learns nothing"
        )
    return None


def stopped(
    problem: str, last_ckpt: Path | None, advice: str, kind: type[TrainingStopped] = TrainingStopped
) -> TrainingStopped:
    last = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was saved"
    return kind(f"{problem}; {last}. {advice}")


class Clock:
    """Seconds of training summed over a run's sessions; it stands still while an evaluation runs."""

    def __init__(self, elapsed: float, step: int):
        self.start = time.perf_counter() - elapsed
        self.before = elapsed  # trained in earlier sessions
        self.paused, self.pauses = 0.0, 0  # this session's evaluations
        self._lap = (step, elapsed)  # (step, seconds) at the last lap

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def spent(self, minutes: float) -> bool:
        """Whether a budget of minutes (0: none) is used up."""
        return minutes > 0 and self.seconds() >= 60 * minutes

    def lap(self, step: int) -> tuple[float, float]:
        """(seconds of training now, iterations per second since the last lap)."""
        seconds = self.seconds()
        rate = (step - self._lap[0]) / max(seconds - self._lap[1], 1e-9)
        self._lap = (step, seconds)
        return seconds, rate

    @contextlib.contextmanager
    def pause(self) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - t
            self.start, self.paused, self.pauses = self.start + took, self.paused + took, self.pauses + 1


@dataclass(frozen=True)
class Due:
    """What the loop does after a step."""

    row: bool  # read the means back, check the run's health, write a CSV row
    evaluate: bool  # score the sampling generator (rank 0)
    grid: bool  # draw the fixed noise's grid
    save: bool  # write a checkpoint
    stop: bool  # the last step of this session

    @staticmethod
    def at(cfg: TrainConfig, step: int, out_of_time: bool, stop_signal: int | None) -> Due:
        finished = step == cfg.steps or out_of_time
        stop = finished or stop_signal is not None
        save = step % cfg.checkpoint_every == 0 or stop
        evaluate = bool(cfg.eval_every) and (step % cfg.eval_every == 0 or finished)
        return Due(
            step % cfg.log_every == 0 or save or evaluate, evaluate, step % cfg.sample_every == 0 or stop, save, stop
        )


class Saver:
    """Writes the run's checkpoints and knows the last good one (what a stop message points to)."""

    def __init__(self, run_dir: str | Path, keep: int, last: Path | None):
        self.run_dir, self.keep, self.last = Path(run_dir), keep, last

    def save(self, state: TrainState, clock: Clock) -> None:
        state.elapsed = clock.seconds()
        self.last = checkpoints.save(self.run_dir, state.state_dict(), self.keep)

    def stopped(self, problem: str, advice: str, kind: type[TrainingStopped] = TrainingStopped) -> TrainingStopped:
        return stopped(problem, self.last, advice, kind)

    @contextlib.contextmanager
    def failures_as_stops(self, world: World) -> Iterator[None]:
        """A failed write, or under torchrun a lost process, ends the run as one line naming the last good
        checkpoint."""
        try:
            yield
        except WriteError as e:
            raise self.stopped(
                str(e),
                f"Free some space in {e.path.parent}/ (or make it writable), then run the same command again to resume",
            ) from None
        except RuntimeError as e:
            if (why := world.lost(e)) is None:
                raise
            raise self.stopped(
                f"another process of this run failed or stopped answering ({why})",
                "Run the same command again to resume",
                ProcessLost,
            ) from None


def read_row(state: TrainState, meter: Meter, clock: Clock, world: World, saver: Saver, save: bool) -> dict[str, Any]:
    """The CSV row of this step: the means read back, after checking the run's health (and at a save step that
    the weights are finite, before anything draws from them); a sick run stops here."""
    means, count = meter.read(world)
    state.d_won_steps = state.d_won_steps + count if means[0] < D_WINS_LOSS else 0
    problem = health(means, state.d_won_steps, state.cfg, state.step)
    if problem is None and save and (bad := state.nonfinite()):
        problem = f"the {' and '.join(bad)} became NaN or inf by step {state.step}"
    if problem:
        raise saver.stopped(
            problem,
            "Rerun with a lower --lr-d or --lr-g to resume from it with them, or start "
            "over with another --seed (--fresh --force)",
        )
    seconds, rate = clock.lap(state.step)
    row = {
        "step": state.step,
        "seconds": seconds,
        **dict(zip(METERED, means)),
        "lr_d": state.opt_d.param_groups[0]["lr"],
        "lr_g": state.opt_g.param_groups[0]["lr"],
        "it_per_s": rate,
    }
    return {**row, "augment_p": row["augment_p"] if state.augmenter.mode != "off" else ""}


def evaluate_and_keep_best(
    judge: Judge, state: TrainState, records: RunRecords, row: dict[str, Any], say: Callable[[str], None]
) -> None:
    """Score the sampling generator into the row; a new lowest headline figure (FID, or KID on small data) writes
    best.pt and best.json."""
    scores = evaluate(judge, state)
    row.update({k: scores[k] for k in CSV_KEYS if scores.get(k) is not None})
    key, ref = judge.headline, judge.reference
    classes = f", {scores['classes_covered']} classes" if "classes_covered" in scores else ""
    say(
        f"step {state.step}: {key.upper()} {scores[key]:.{2 if key == 'fid' else 4}f} (real data: "
        f"{ref[key]:.{2 if key == 'fid' else 4}f}), precision {scores['precision']:.3f}, recall "
        f"{scores['recall']:.3f}{classes}"
    )
    best = state.best  # comparable when of the same figure in the same space (a best from before spaces: digits)
    comparable = best is not None and key in best and best.get("features", judge.space.name) == judge.space.name
    if math.isfinite(scores[key]) and (best is None or not comparable or scores[key] < best[key]):
        state.best = {"step": state.step, key: scores[key], "features": judge.space.name}
        state.elapsed = row["seconds"]
        records.best(state.state_dict())


def evaluate(judge: Judge, state: TrainState) -> dict[str, Any]:
    """The quality of the sampling generator now, by the path `evaluate --num EVAL_NUM` takes for a checkpoint of
    this step (a batch-norm-folded copy, the same noise), so the two give the same figures."""
    generator = prepare_for_inference(copy.deepcopy(state.G_show), state.cfg, state.device)
    return judge.score_generator(Generator(generator, state.cfg, state.step, state.shape), judge.eval_num)


def draw_grid(state: TrainState, records: RunRecords) -> None:
    """The fixed noise's grid, drawn by the sampling generator in eval mode."""
    with eval_mode(state.G_show) as G_show, torch.no_grad():
        records.grid(state.step, call(G_show, state.fixed_z, state.fixed_y), state.layout)


def report(
    state: TrainState,
    clock: Clock,
    start_step: int,
    board_seconds: float,
    saver: Saver,
    out_of_time: bool,
    stop_signal: int | None,
) -> None:
    """The session's closing lines: what the records cost, and why it ended."""
    cfg = state.cfg
    trained = clock.seconds() - clock.before
    if clock.pauses or board_seconds:
        print(
            f"records: {clock.pauses} evaluations took {clock.paused:.1f} s ({100 * clock.paused / trained:.1f} % "
            f"of this session's {trained:.0f} s of training), TensorBoard {board_seconds:.2f} s "
            f"({100 * board_seconds / trained:.2f} %)",
            file=sys.stderr,
        )
    if clock.paused > EVAL_SHARE_HINT * trained and clock.pauses > 1:
        print(
            f"note: the evaluations cost more than {EVAL_SHARE_HINT:.0%} of the training time; pass a larger "
            f"--eval-every (now {cfg.eval_every}) or a smaller --eval-num to train faster",
            file=sys.stderr,
        )
    if out_of_time:
        print(
            f"time limit: stopped after {cfg.minutes} minutes of training at step {state.step}, saved {saver.last}",
            file=sys.stderr,
        )
    elif stop_signal is not None:
        print(
            f"{signal.Signals(stop_signal).name}: stopped at step {state.step} of {cfg.steps}, saved {saver.last}. "
            f"Run the same command again to resume.",
            file=sys.stderr,
        )
    else:
        rate = (state.step - start_step) / max(trained, 1e-9)
        print(
            f"done: step {state.step} ({rate:.1f} it/s this session); checkpoint {saver.last}, grids and their "
            f"animation progress.gif in {cfg.sample_dir}/",
            file=sys.stderr,
        )


def train(
    overrides: dict[str, Any] | None = None,
    fresh: bool = False,
    force: bool = False,
    backend: str = "auto",
    timeout: float = 300.0,
) -> Path | None:
    """Train to cfg.steps, resuming from the newest usable checkpoint; return the last checkpoint's path (None if
    there is none: a run stopped before its first save).
    Under torchrun, every process calls this (backend, timeout: the process group's; see distributed.py)."""
    world, lock = join(backend, timeout, (overrides or {}).get("device", TrainConfig.device)), RunLock()
    broken = False
    try:
        return _train(dict(overrides or {}), fresh, force, world, lock)
    except ProcessLost:
        broken = True
        raise
    finally:
        lock.release()
        world.close(broken)


def _train(overrides: dict[str, Any], fresh: bool, force: bool, world: World, lock: RunLock) -> Path | None:
    """train() in this process: set up (start.py), then the loop."""
    run = start(overrides, fresh, force, world, lock)
    if isinstance(run, NothingToTrain):
        if world.main:
            print(run.why, file=sys.stderr)
        return run.last_ckpt
    return loop(run, world)


def loop(run: Start, world: World) -> Path | None:
    """Update, log, sample and save until the run's steps, its time budget or a stop signal; then finish."""
    cfg, state = run.cfg, run.state
    meter, saver, start_step = Meter(run.device), Saver(cfg.checkpoint_dir, cfg.keep, run.last_ckpt), state.step
    clock = Clock(state.elapsed, state.step)
    records: RunRecords | None = None  # rank 0's alone: the one process that writes the run's files
    judge: Judge | None = None
    pbar: tqdm | None = None
    stop_signal: int | None = None
    out_of_time = False
    try:
        with saver.failures_as_stops(world), StopRequest(escalate=not world.group) as stop:
            if world.main:  # the one process that writes the run's files, and evaluates
                records, judge = open_records(run)
            clock = Clock(state.elapsed, state.step)  # from the loop's start: a first Judge can embed for a minute
            pbar = progress_bar(cfg, state.step, world)
            while True:
                # update
                meter.add(update(state, run.G_step, run.D_step, run.batches, run.objective))
                pbar.update(1)
                out_of_time, stop_signal = world.agree(
                    state.step % cfg.log_every == 0, clock.spent(cfg.minutes), stop.signal
                )
                due = Due.at(cfg, state.step, out_of_time, stop_signal)
                # log: the only host read-back
                if due.row:
                    log_row(state, meter, clock, world, saver, due, pbar, judge, records)
                # sample
                if records is not None and due.grid:
                    draw_grid(state, records)
                # save
                if records is not None and due.save:
                    saver.save(state, clock)
                    records.plot(metrics=judge is not None, last=due.stop)
                if due.stop:
                    break
            if records is not None:
                if stop_signal is None:
                    animate(cfg.sample_dir, up_to=state.step)
                records.close()
    finally:
        if pbar is not None:
            pbar.close()
        if records is not None:
            records.close(quiet=True)  # closed already, unless the run failed
    # finish
    if records is not None:
        report(state, clock, start_step, records.board_seconds, saver, out_of_time, stop_signal)
    world.finish()
    return saver.last


def open_records(run: Start) -> tuple[RunRecords, Judge | None]:
    """Rank 0's records of the run (with the real images' grid and, where evaluations are on, their reference) and
    the Judge of its evaluations; then the line saying where it trains, once the input has passed every check (so
    that a refusal stays one line)."""
    records = RunRecords(run.cfg, run.state.step)
    records.real_grid(run.data.pixels, run.data.labels, run.state.layout)
    judge = judge_for(run.cfg, run.device)
    if judge is not None:
        records.reference({**judge.reference, "eval_num": judge.eval_num}, judge.headline)
    print(f"training on {run.speed.describe(run.device)}", file=sys.stderr)
    return records, judge


def progress_bar(cfg: TrainConfig, step: int, world: World) -> tqdm:
    return tqdm(total=cfg.steps, initial=step, unit="it", dynamic_ncols=True, mininterval=1.0, disable=not world.main)


def log_row(
    state: TrainState,
    meter: Meter,
    clock: Clock,
    world: World,
    saver: Saver,
    due: Due,
    pbar: tqdm,
    judge: Judge | None,
    records: RunRecords | None,
) -> None:
    """The CSV row of this step: the means read back (the loop's one host read), shown on the progress bar,
    scored when an evaluation is due (rank 0; the others wait) and written (rank 0)."""
    row = read_row(state, meter, clock, world, saver, due.save)
    pbar.set_postfix(D=f"{row['d_loss']:.3f}", G=f"{row['g_loss']:.3f}", Dx=f"{row['d_real']:.2f}",
                     DGz=f"{row['d_fake']:.2f}")  # fmt: skip
    if due.evaluate and judge is not None and records is not None:
        with clock.pause():
            evaluate_and_keep_best(judge, state, records, row, pbar.write)
    if records is not None:
        records.log(row)
