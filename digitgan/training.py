"""The training loop, read top to bottom: set up, loop (update, log, sample, save), finish. Everything a checkpoint
holds lives in state.TrainState, the run directory's records in records.RunRecords."""
from __future__ import annotations

import contextlib
import copy
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import checkpoints
from .config import TrainConfig, resolve
from .data import load_dataset
from .devices import Speed, pick_device, speed_settings
from .distributed import World, data_parallel, join
from .errors import ProcessLost, TrainingStopped, WriteError
from .metrics import CSV_KEYS, Judge
from .models import call
from .records import CSV_COLUMNS, RunRecords, animate, archive_run, ensure_writable
from .sampling import prepare_for_inference
from .state import Averager, TrainState

__all__ = ["Averager", "StopRequest", "autocast", "d_update", "g_update", "prepare", "train"]
D_WINS_LOSS = 1e-3  # D loss below this means D separates real from fake almost perfectly


class StopRequest:
    """Turns the first SIGINT/SIGTERM into a flag the loop checks after each step; a second one interrupts."""

    def __init__(self, escalate: bool = True) -> None:
        self.signal: int | None = None
        self.escalate = escalate  # off under torchrun: it passes a Ctrl-C on to processes that had it already
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, sig: int, frame: Any) -> None:
        if self.signal is not None and self.escalate:
            raise KeyboardInterrupt
        self.signal = sig

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision for forward passes in dtype (None: full precision)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model in eval mode (batch norm from its running statistics), then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def d_update(G: torch.nn.Module, D: torch.nn.Module, opt: torch.optim.Optimizer, real: torch.Tensor,
             z: torch.Tensor, ones: torch.Tensor, zeros: torch.Tensor, amp: torch.dtype | None = None,
             y_real: torch.Tensor | None = None, y_fake: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """One discriminator step (labels: a conditional run's); returns (loss, logits on real, logits on fake, the
    gradient's norm), all on the device."""
    with autocast(real.device, amp):
        with torch.no_grad():
            fake = call(G, z, y_fake)
        real_logits, fake_logits = call(D, real, y_real).float(), call(D, fake, y_fake).float()
    loss = F.binary_cross_entropy_with_logits(real_logits, ones) + F.binary_cross_entropy_with_logits(fake_logits, zeros)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = gradient_norm(D)
    opt.step()
    return loss, real_logits, fake_logits, norm


def g_update(G: torch.nn.Module, D: torch.nn.Module, opt: torch.optim.Optimizer, z: torch.Tensor,
             ones: torch.Tensor, amp: torch.dtype | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
    """One generator step with the non-saturating loss (G maximises log D(G(z))); returns (loss, the gradient's
    norm) on the device. D's gradients from it are thrown away, so several processes do not average them."""
    with D.no_sync() if hasattr(D, "no_sync") else contextlib.nullcontext():
        with autocast(z.device, amp):
            logits = call(D, call(G, z, y), y).float()
        loss = F.binary_cross_entropy_with_logits(logits, ones)
        opt.zero_grad(set_to_none=True)
        loss.backward()
    norm = gradient_norm(G)
    opt.step()
    return loss, norm


def gradient_norm(model: torch.nn.Module) -> torch.Tensor:
    """The L2 norm of all of model's gradients together, left on the device (read back with the losses)."""
    return torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])


def prepare(G: torch.nn.Module, D: torch.nn.Module, speed: Speed,
            world: World = World()) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The (G, D) the update steps call: in channels_last, compiled when asked, and under torchrun in their own
    DistributedDataParallel wrappers with global batch norm. The state stays in G and D."""
    if speed.channels_last:
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
    G_step, D_step = (torch.compile(G), torch.compile(D)) if speed.compile else (G, D)
    if world.size > 1:
        G_step, D_step = data_parallel(G_step), data_parallel(D_step)
    return G_step, D_step


def nothing_to_train(cfg: TrainConfig, saved: dict[str, Any], path: Path) -> str | None:
    """Why a rerun has nothing to train (the steps are reached, or the time budget is spent), or None."""
    if saved["step"] >= cfg.steps:
        return f"nothing to train: {path} is at step {saved['step']} and --steps is {cfg.steps}; raise --steps to go on"
    if cfg.minutes and saved["elapsed"] >= 60 * cfg.minutes:
        return (f"the time budget of {cfg.minutes:g} minutes is spent ({saved['elapsed'] / 60:.2f} minutes trained, "
                f"up to step {saved['step']} in {path}); raise --minutes, or pass --minutes 0 for no limit")
    return None


def health(means: list[float], d_won_steps: int, cfg: TrainConfig, step: int) -> str | None:
    """What is wrong with the run judging by its mean losses, or None."""
    if not all(math.isfinite(m) for m in means):
        return f"a loss became NaN or inf by step {step}"
    if d_won_steps >= cfg.collapse_steps:
        return (f"the discriminator has won outright (D loss < {D_WINS_LOSS}) for {d_won_steps} steps, so the "
                f"generator learns nothing")
    return None


def stopped(problem: str, last_ckpt: Path | None, advice: str,
            kind: type[TrainingStopped] = TrainingStopped) -> TrainingStopped:
    last = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was saved"
    return kind(f"{problem}; {last}. {advice}")


def evaluate(judge: Judge, state: TrainState) -> dict[str, Any]:
    """The quality of the sampling generator now, by the path `evaluate --num EVAL_NUM` takes for a checkpoint of
    this step (a batch-norm-folded copy, the same noise), so the two give the same figures."""
    generator = prepare_for_inference(copy.deepcopy(state.G_show), state.cfg, state.device)
    return judge.score_generator(generator, state.cfg, state.cfg.eval_num)


def setup(overrides: dict[str, Any], fresh: bool, force: bool,
          world: World) -> tuple[TrainConfig, dict[str, Any] | None, Path | None, str | None]:
    """The run's config, the checkpoint it resumes from and its path, and why there is nothing to train (or
    None); makes the run's directories, and for --fresh moves an earlier run aside."""
    first = resolve(overrides)  # reject bad values before touching the disk
    if fresh or "batch_size" in overrides:
        world.check_batch(first.batch_size)
    run_dir = ensure_writable(overrides.get("checkpoint_dir", TrainConfig.checkpoint_dir), "--checkpoint-dir")
    overrides = {**overrides, "checkpoint_dir": str(run_dir)}
    if fresh:
        archive_run(run_dir, force)
    saved, last_ckpt = checkpoints.load_latest(run_dir, quarantine=True) or (None, None)
    cfg = resolve(overrides, saved["config"] if saved else None)
    world.check_batch(cfg.batch_size)
    if saved and (why := nothing_to_train(cfg, saved, last_ckpt)):
        return cfg, saved, last_ckpt, why
    ensure_writable(cfg.sample_dir, "--sample-dir")
    return cfg, saved, last_ckpt, None


def train(overrides: dict[str, Any] | None = None, fresh: bool = False, force: bool = False,
          backend: str = "auto", timeout: float = 300.0) -> Path:
    """Train to cfg.steps, resuming from the newest usable checkpoint; return the last checkpoint's path.
    Under torchrun, every process calls this (backend, timeout: the process group's; see distributed.py)."""
    world = join(backend, timeout, (overrides or {}).get("device", TrainConfig.device))
    try:
        return _train(dict(overrides or {}), fresh, force, world)
    finally:
        world.close()


def _train(overrides: dict[str, Any], fresh: bool, force: bool, world: World) -> Path | None:
    """train() in this process: set up, loop (update, log, sample, save), finish."""
    cfg, saved, last_ckpt, why = world.on_main(lambda: setup(overrides, fresh, force, world))
    if why:
        if world.main:
            print(why, file=sys.stderr)
        return last_ckpt
    run_dir, sample_dir = Path(cfg.checkpoint_dir), Path(cfg.sample_dir)
    device = world.device(pick_device(cfg.device))
    speed = speed_settings(cfg, device, world.size)
    data = world.main_first(lambda: load_dataset(cfg.dataset, "train", cfg.data_dir, cfg.cache_dir))
    images, labels = (t.to(device if speed.data_on_device else "cpu") for t in (data.images, data.labels))
    conditional = cfg.conditional == "on"
    if speed.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    state = TrainState(cfg, device, speed, len(images), world.share)
    if saved:
        state.load_state_dict(saved)
        if world.main:
            print(f"resuming from {last_ckpt} (step {state.step} of {cfg.steps})", file=sys.stderr)
    G_step, D_step = prepare(state.G, state.D, speed, world)
    ones = torch.ones(cfg.batch_size // world.size, device=device)
    zeros = torch.zeros(cfg.batch_size // world.size, device=device)
    sums, count = torch.zeros(6, device=device), 0  # LOGGED's first six; read back every log_every
    elapsed_before, start_step = state.elapsed, state.step
    stop_signal, out_of_time, stopping, eval_seconds, evals = None, False, False, 0.0, 0
    records = pbar = None
    try:
        if world.main:  # the one process that writes the run's files
            records = RunRecords(cfg, state.step)
            records.real_grid(data.images, data.labels, conditional)
        judge = Judge(cfg.dataset, cfg.cache_dir, cfg.data_dir, device) if cfg.eval_every and world.main else None
        if judge is not None:
            records.reference(judge.reference)
        pbar = tqdm(total=cfg.steps, initial=state.step, unit="it", dynamic_ncols=True, mininterval=1.0,
                    disable=not world.main)
        start = time.perf_counter() - state.elapsed  # moves on past evaluations: they don't count as training
        last_log = (state.step, state.elapsed)  # (step, training seconds) at the last CSV row: for it/s
        with StopRequest(escalate=world.size == 1) as stop:
            while not stopping:
                # update
                state.set_hyperparameters()
                for _ in range(cfg.d_steps):
                    idx = state.batch()
                    real = images[idx].to(device, non_blocking=True)
                    y_real = labels[idx].to(device, non_blocking=True) if conditional else None
                    z, y_fake = state.noise()
                    d_loss, real_logits, fake_logits, d_norm = d_update(G_step, D_step, state.opt_d, real, z, ones,
                                                                        zeros, speed.autocast, y_real, y_fake)
                for _ in range(cfg.g_steps):
                    z, y_fake = state.noise()
                    g_loss, g_norm = g_update(G_step, D_step, state.opt_g, z, ones, speed.autocast, y_fake)
                if state.ema:
                    state.ema.update(state.step)
                sums += torch.stack([d_loss, g_loss, real_logits.sigmoid().mean(), fake_logits.sigmoid().mean(),
                                     d_norm, g_norm]).detach()
                count += 1
                state.step += 1
                step = state.step
                pbar.update(1)

                out_of_time, stop_signal = world.agree(
                    step % cfg.log_every == 0, cfg.minutes > 0 and time.perf_counter() - start >= 60 * cfg.minutes,
                    stop.signal)
                finished = step == cfg.steps or out_of_time
                stopping = finished or stop_signal is not None
                save_now = step % cfg.checkpoint_every == 0 or stopping
                eval_step = cfg.eval_every and (step % cfg.eval_every == 0 or finished)
                # log: the only host read-back; at a save step the weights are checked too, before anything uses them
                if step % cfg.log_every == 0 or save_now or eval_step:
                    means = world.mean(sums / count).tolist()
                    sums.zero_()
                    state.d_won_steps = state.d_won_steps + count if means[0] < D_WINS_LOSS else 0
                    count = 0
                    pbar.set_postfix(D=f"{means[0]:.3f}", G=f"{means[1]:.3f}", Dx=f"{means[2]:.2f}", DGz=f"{means[3]:.2f}")
                    problem = health(means, state.d_won_steps, cfg, step)
                    if problem is None and save_now and (bad := state.nonfinite()):
                        problem = f"the {' and '.join(bad)} became NaN or inf by step {step}"
                    if problem:
                        raise stopped(problem, last_ckpt, "Rerun with a lower --lr-d or --lr-g to resume from it "
                                      "with them, or start over with another --seed (--fresh --force)")
                    seconds = time.perf_counter() - start
                    rate = (step - last_log[0]) / max(seconds - last_log[1], 1e-9)
                    row = dict(zip(CSV_COLUMNS, [step, seconds, *means, state.opt_d.param_groups[0]["lr"],
                                                 state.opt_g.param_groups[0]["lr"], rate]))
                    last_log = (step, seconds)
                    if eval_step and judge is not None:  # on rank 0: the others wait for it
                        t = time.perf_counter()
                        scores = evaluate(judge, state)
                        row.update({k: scores[k] for k in CSV_KEYS if k in scores})
                        pbar.write(f"step {step}: FID {scores['fid']:.2f} (real data: {judge.reference['fid']:.2f}), "
                                   f"precision {scores['precision']:.3f}, recall {scores['recall']:.3f}, "
                                   f"{scores['classes_covered']} classes")
                        if math.isfinite(scores["fid"]) and (state.best is None or scores["fid"] < state.best["fid"]):
                            state.best = {"step": step, "fid": scores["fid"]}
                            state.elapsed = seconds
                            records.best(state.state_dict(), scores["fid"])
                        eval_seconds, evals = eval_seconds + time.perf_counter() - t, evals + 1
                        start += time.perf_counter() - t
                    if world.main:
                        records.log(row)
                # sample
                if world.main and (step % cfg.sample_every == 0 or stopping):
                    with eval_mode(state.G_show) as G_show, torch.no_grad():
                        records.grid(step, call(G_show, state.fixed_z, state.fixed_y))
                # save
                if save_now and world.main:
                    state.elapsed = time.perf_counter() - start
                    last_ckpt = checkpoints.save(run_dir, state.state_dict(), cfg.keep)
                    records.plot(metrics=judge is not None)
        if world.main:
            if stop_signal is None:
                animate(sample_dir, up_to=state.step)
            records.close()
    except WriteError as e:
        raise stopped(str(e), last_ckpt, f"Free some space in {e.path.parent}/ (or make it writable), then run the "
                      f"same command again to resume") from None
    except RuntimeError as e:
        if (why := world.lost(e)) is None:
            raise
        raise stopped(f"another process of this run failed or stopped answering ({why})", last_ckpt,
                      "Run the same command again to resume", ProcessLost) from None
    finally:
        if pbar is not None:
            pbar.close()
        if records is not None:
            records.close(quiet=True)  # closed already, unless the run failed

    # finish
    if not world.main:
        return last_ckpt
    trained = time.perf_counter() - start - elapsed_before
    rate = (state.step - start_step) / max(trained, 1e-9)
    if evals or records.board_seconds:
        print(f"records: {evals} evaluations took {eval_seconds:.1f} s ({100 * eval_seconds / trained:.1f} % of this "
              f"session's {trained:.0f} s of training), TensorBoard {records.board_seconds:.2f} s "
              f"({100 * records.board_seconds / trained:.2f} %)", file=sys.stderr)
    if out_of_time:
        print(f"time limit: stopped after {cfg.minutes} minutes of training at step {state.step}, saved {last_ckpt}",
              file=sys.stderr)
    elif stop_signal is not None:
        print(f"{signal.Signals(stop_signal).name}: stopped at step {state.step} of {cfg.steps}, saved {last_ckpt}. "
              f"Run the same command again to resume.", file=sys.stderr)
    else:
        print(f"done: step {state.step} ({rate:.1f} it/s this session); checkpoint {last_ckpt}, grids and their "
              f"animation progress.gif in {sample_dir}/", file=sys.stderr)
    return Path(last_ckpt)
