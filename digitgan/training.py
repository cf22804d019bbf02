"""The training loop: one function, top to bottom, plus the few helpers it calls."""
from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import json
import math
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import checkpoints
from .config import TrainConfig, resolve
from .data import BatchSampler, load_dataset
from .devices import Speed, pick_device, speed_settings
from .errors import TrainingStopped, UsageError
from .images import plot_curves, save_grid
from .metrics import KEYS, Judge
from .models import build_models, sample_noise
from .sampling import generate

CSV_COLUMNS = ("step", "seconds", "d_loss", "g_loss", "d_real", "d_fake") + KEYS  # seconds: training only
METRIC_PANELS = (("FID (MNIST evaluator features; lower is better)", ("fid",)),
                 ("precision / recall / coverage", ("precision", "recall", "coverage")))
LOSS_PANELS = (("losses", ("d_loss", "g_loss")), ("mean D output: real vs generated", ("d_real", "d_fake")))
RUN_FILES = ("config.json", "metrics.csv", "losses.png", "metrics.png", "real_reference.json")
D_WINS_LOSS = 1e-3  # D loss below this means D separates real from fake almost perfectly


def ensure_writable(directory: str | Path, flag: str) -> Path:
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=d).close()
    except OSError as e:
        raise UsageError(f"{flag} {d} is not a writable directory ({e.strerror}); pass one you can write to")
    return d


def read_rows(path: Path) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else "" for k, v in row.items()} for row in csv.DictReader(f)]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite the CSV (atomically) with exactly these rows."""
    lines = [",".join(CSV_COLUMNS)] + [_line(r) for r in rows]
    checkpoints.atomic_write(path, lambda f: f.write(("\n".join(lines) + "\n").encode()))


def _line(row: dict[str, Any]) -> str:
    return ",".join(_fmt(row.get(c, "")) for c in CSV_COLUMNS)


def _fmt(v: Any) -> str:
    return "" if v == "" else f"{v:.6g}" if isinstance(v, float) else str(v)


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


class StopRequest:
    """Turns the first SIGINT/SIGTERM into a flag the loop checks after each step; a second one interrupts."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, sig: int, frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = sig

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision for forward passes in dtype (None: full precision)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def d_update(G: torch.nn.Module, D: torch.nn.Module, opt: torch.optim.Optimizer, real: torch.Tensor,
             z: torch.Tensor, ones: torch.Tensor, zeros: torch.Tensor,
             amp: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
    """One discriminator step; returns (loss, logits on real, logits on fake)."""
    with autocast(real.device, amp):
        with torch.no_grad():
            fake = G(z)
        real_logits, fake_logits = D(real).float(), D(fake).float()
    loss = F.binary_cross_entropy_with_logits(real_logits, ones) + F.binary_cross_entropy_with_logits(fake_logits, zeros)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss, real_logits, fake_logits


def g_update(G: torch.nn.Module, D: torch.nn.Module, opt: torch.optim.Optimizer, z: torch.Tensor,
             ones: torch.Tensor, amp: torch.dtype | None = None) -> torch.Tensor:
    """One generator step with the non-saturating loss (G maximises log D(G(z)))."""
    with autocast(z.device, amp):
        logits = D(G(z)).float()
    loss = F.binary_cross_entropy_with_logits(logits, ones)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


class Averager:
    """An exponential moving average of a model's weights and buffers (Yazici et al. 2019: averaged GAN
    generators score markedly better). The decay warms up as min(decay, (1 + t) / (10 + t))."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model, self.decay = copy.deepcopy(model).eval().requires_grad_(False), decay
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values()))
        # Split once: floats are averaged, integer buffers (BatchNorm's batch counter) copied.
        self._avg = [a for a, _ in pairs if a.is_floating_point()]
        self._src = [p for a, p in pairs if a.is_floating_point()]
        self._copies = [(a, p) for a, p in pairs if not a.is_floating_point()]

    @torch.no_grad()
    def update(self, step: int) -> None:
        torch._foreach_lerp_(self._avg, self._src, 1 - min(self.decay, (1 + step) / (10 + step)))
        for a, p in self._copies:
            a.copy_(p)


def lr_scale(cfg: TrainConfig, step: int) -> float:
    """The learning rates' factor at a step: 1, then linear to 0 over the last lr_decay of cfg.steps."""
    return min(1.0, (cfg.steps - step) / (cfg.lr_decay * cfg.steps)) if cfg.lr_decay else 1.0


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def prepare(G: torch.nn.Module, D: torch.nn.Module, speed: Speed) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The (G, D) the update steps call: in channels_last and compiled when asked. The state stays in G and D."""
    if speed.channels_last:
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
    return (torch.compile(G), torch.compile(D)) if speed.compile else (G, D)


def train(overrides: dict[str, Any] | None = None, fresh: bool = False, force: bool = False) -> Path:
    """Train to cfg.steps, resuming from the newest readable checkpoint; return the last checkpoint's path."""
    overrides = dict(overrides or {})
    resolve(overrides)  # reject bad values before touching the disk
    run_dir = ensure_writable(overrides.get("checkpoint_dir", TrainConfig.checkpoint_dir), "--checkpoint-dir")
    overrides["checkpoint_dir"] = str(run_dir)
    if fresh:
        archive_run(run_dir, force)
    found = checkpoints.load_latest(run_dir, quarantine=True)
    state, resumed_from = found if found else (None, None)
    cfg = resolve(overrides, state["config"] if state else None)
    sample_dir = ensure_writable(cfg.sample_dir, "--sample-dir")
    device = pick_device(cfg.device)
    speed = speed_settings(cfg, device)
    data_device = device if speed.data_on_device else torch.device("cpu")
    images = load_dataset(cfg.dataset, "train", cfg.data_dir, cfg.cache_dir).images.to(data_device)
    if speed.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)

    torch.manual_seed(cfg.seed)
    G, D = (m.to(device) for m in build_models(cfg))
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    sampler = BatchSampler(len(images), cfg.batch_size, cfg.seed + 2, data_device)
    noise_device = device if speed.noise_on_device else torch.device("cpu")
    noise_gen = torch.Generator(noise_device).manual_seed(cfg.seed + 1)
    fixed_z = sample_noise(cfg, 64, torch.Generator().manual_seed(cfg.seed), "cpu").to(device)
    step, elapsed, d_won_steps = 0, 0.0, 0
    if state:
        G.load_state_dict(state["generator"])
        D.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        fixed_z = state["fixed_noise"].to(device)
        try:
            noise_gen.set_state(state["rng"]["noise"])
        except RuntimeError:  # saved by a generator on another kind of device
            print("note: the noise stream restarts: it was saved on another kind of device", file=sys.stderr)
        sampler.load_state_dict(state["rng"]["sampler"])
        checkpoints.restore_rng(state["rng"])
        step, elapsed, d_won_steps = state["step"], state["elapsed"], state["health"]["d_won_steps"]
        print(f"resuming from {resumed_from} (step {step} of {cfg.steps})", file=sys.stderr)
    csv_path = run_dir / "metrics.csv"
    rows = [r for r in read_rows(csv_path) if r["step"] <= step]  # drop what was logged after the checkpoint
    write_rows(csv_path, rows)
    checkpoints.atomic_write(run_dir / "config.json",
                             lambda f: f.write(json.dumps(dataclasses.asdict(cfg), indent=2).encode() + b"\n"))

    G_step, D_step = prepare(G, D, speed)  # after loading: channels_last survives load_state_dict
    ema = Averager(G, cfg.ema) if cfg.ema else None
    if ema and state and "generator_ema" in state:
        ema.model.load_state_dict(state["generator_ema"])
    G_show = ema.model if ema else G  # what grids and evaluations draw from
    noise = lambda: sample_noise(cfg, cfg.batch_size, noise_gen, noise_device).to(device, non_blocking=True)
    ones = torch.ones(cfg.batch_size, device=device)
    zeros = torch.zeros(cfg.batch_size, device=device)
    sums, count = torch.zeros(4, device=device), 0  # d_loss, g_loss, D(x), D(G(z)); read back every log_every
    last_ckpt = resumed_from
    judge = Judge(cfg.dataset, cfg.cache_dir, cfg.data_dir, device) if cfg.eval_every else None
    if judge is not None:
        checkpoints.atomic_write(run_dir / "real_reference.json",
                                 lambda f: f.write(json.dumps(judge.reference, indent=2).encode() + b"\n"))
    start, start_step = time.perf_counter() - elapsed, step  # `start` moves on past evaluations: they don't count
    pbar = tqdm(total=cfg.steps, initial=step, unit="it", dynamic_ncols=True, mininterval=1.0)
    stopping, out_of_time = step >= cfg.steps, False
    with StopRequest() as stop:
        while not stopping:
            if cfg.lr_decay:  # a function of the step alone, so a resumed run follows the same schedule
                scale = lr_scale(cfg, step)
                set_lr(opt_g, cfg.lr_g * scale)
                set_lr(opt_d, cfg.lr_d * scale)
            for _ in range(cfg.d_steps):
                real = images[sampler.next()].to(device, non_blocking=True)
                d_loss, real_logits, fake_logits = d_update(G_step, D_step, opt_d, real, noise(), ones, zeros,
                                                            speed.autocast)
            for _ in range(cfg.g_steps):
                g_loss = g_update(G_step, D_step, opt_g, noise(), ones, speed.autocast)
            if ema:
                ema.update(step)
            sums += torch.stack([d_loss, g_loss, real_logits.sigmoid().mean(), fake_logits.sigmoid().mean()]).detach()
            count += 1
            step += 1
            pbar.update(1)

            out_of_time = cfg.minutes > 0 and time.perf_counter() - start >= 60 * cfg.minutes
            finished = step == cfg.steps or out_of_time
            stopping = finished or stop.signal is not None
            save_now = step % cfg.checkpoint_every == 0 or stopping
            eval_now = judge is not None and (step % cfg.eval_every == 0 or finished)
            if step % cfg.log_every == 0 or save_now or eval_now:
                means = (sums / count).tolist()  # the only host sync
                sums.zero_()
                d_won_steps = d_won_steps + count if means[0] < D_WINS_LOSS else 0
                count = 0
                row = dict(zip(CSV_COLUMNS, [step, time.perf_counter() - start, *means]))
                pbar.set_postfix(D=f"{means[0]:.3f}", G=f"{means[1]:.3f}", Dx=f"{means[2]:.2f}", DGz=f"{means[3]:.2f}")
                problem = None
                if not all(math.isfinite(m) for m in means):
                    problem = f"a loss became NaN or inf by step {step}"
                elif d_won_steps >= cfg.collapse_steps:
                    problem = (f"the discriminator has won outright (D loss < {D_WINS_LOSS}) for {d_won_steps} "
                               f"steps, so the generator learns nothing")
                if problem:
                    pbar.close()
                    last = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was saved"
                    raise TrainingStopped(f"{problem}; {last}. Try a lower --lr-d, another --seed, or resume "
                                          f"from it with different settings")
                if eval_now:
                    t = time.perf_counter()
                    G_show.eval()
                    scores = judge.score(generate(G_show, cfg, cfg.eval_num, seed=0))
                    G_show.train(G_show is G)
                    row.update({k: scores[k] for k in KEYS})
                    pbar.write(f"step {step}: FID {scores['fid']:.2f} (real data: {judge.reference['fid']:.2f}), "
                               f"precision {scores['precision']:.3f}, recall {scores['recall']:.3f}, "
                               f"{scores['classes_covered']} classes")
                    start += time.perf_counter() - t
                rows.append(row)
                with open(csv_path, "a") as f:
                    f.write(_line(row) + "\n")
            if step % cfg.sample_every == 0 or stopping:
                G_show.eval()
                with torch.no_grad():
                    save_grid(G_show(fixed_z), sample_dir / f"step_{step:07d}.png", nrow=8)
                G_show.train(G_show is G)
            if save_now:
                last_ckpt = checkpoints.save(run_dir, dict(
                    step=step, config=dataclasses.asdict(cfg), generator=G.state_dict(),
                    **({"generator_ema": ema.model.state_dict()} if ema else {}),
                    discriminator=D.state_dict(), opt_g=opt_g.state_dict(), opt_d=opt_d.state_dict(),
                    fixed_noise=fixed_z.cpu(), elapsed=time.perf_counter() - start,
                    health={"d_won_steps": d_won_steps},
                    rng={**checkpoints.capture_rng(), "noise": noise_gen.get_state(), "sampler": sampler.state_dict()},
                ), cfg.keep)
                plot_curves(rows, run_dir / "losses.png", LOSS_PANELS)
                if judge is not None:
                    plot_curves(rows, run_dir / "metrics.png", METRIC_PANELS)
    pbar.close()
    rate = (step - start_step) / max(time.perf_counter() - start - elapsed, 1e-9)
    if out_of_time:
        print(f"time limit: stopped after {cfg.minutes} minutes of training at step {step}, saved {last_ckpt}",
              file=sys.stderr)
    elif stop.signal is not None:
        name = signal.Signals(stop.signal).name
        print(f"{name}: stopped at step {step} of {cfg.steps}, saved {last_ckpt}. "
              f"Run the same command again to resume.", file=sys.stderr)
    else:
        print(f"done: step {step} ({rate:.1f} it/s this session); checkpoint {last_ckpt}, grids in {sample_dir}/",
              file=sys.stderr)
    return Path(last_ckpt) if last_ckpt else run_dir
