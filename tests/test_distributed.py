"""Training on several processes with torchrun (gloo on the CPU): the same math as one process with the same global
batch, rank 0 alone writing, checkpoints that resume on any number of processes, and clean stops and failures.

Every run here is a real torchrun of dcgan.py. The learning rate is 1e-5: at the default 4e-3 any change in the
order of a sum, even channels_last on or off in one process, makes two runs drift apart by 6e-2 within 10 steps
(Adam turns gradients that are zero up to rounding into full-sized steps of either sign), so no two ways of
computing the same batch can be compared there; at 1e-5 such runs stay within 1e-6 over 50 steps
(bench/distributed.py --exactness).
"""
import csv
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digitgan.training.distributed import World, join
from digitgan.errors import UsageError
from digitgan.training.lock import RunLock
from digitgan.training.start import claim_run
from runs import cli_flags, once, same_state, training_state, wait_for

DCGAN = str(Path(__file__).resolve().parent.parent / "dcgan.py")
pytestmark = pytest.mark.heavy(2)  # torchrun: three processes a run
LOSSES = ("d_loss", "g_loss", "d_real", "d_fake")


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Every process here on one thread, as torchrun starts each rank: on two threads beside the other test
    worker, a plain process's threads wait on each other at every operator (its 30 steps took 73 s, on one
    thread 6 s), and on a machine's many cores it would split the batch its own way."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def flags(run_dir, cache_dir, **extra):
    # A constant rate (a run stopped by a smaller --steps then continued must equal a straight one), and R1 at
    # every step and strong enough for D's gradient norm to show a wrong share of it: its double backward runs
    # through the global batch norm's all-reduces.
    base = dict(steps=30, batch_size=32, width=8, lr_d=1e-5, lr_g=1e-5, lr_decay=0.0, r1=10.0, r1_every=1,
                log_every=1, sample_every=1000,
                checkpoint_every=1000, eval_every=0, tensorboard="off", device="cpu", cache_dir=cache_dir,
                checkpoint_dir=str(run_dir / "ck"), sample_dir=str(run_dir / "samples"))
    return cli_flags({**base, **extra})


def torchrun(n, *args, extra=()):
    """The torchrun command line for n processes on this machine (a free port of its own)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), *extra,
            DCGAN, "train", *args]


def run(cmd, timeout=180):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stderr


def rows(run_dir):
    with open(run_dir / "ck" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def differences(a, b, keys):
    """The relative differences between the CSV figures of run a and of run b (which logged every step), at every
    step a logged."""
    by_step = {r["step"]: r for r in b}
    assert len(a) >= 10 and all(r["step"] in by_step for r in a)
    return [abs(float(r[k]) - float(by_step[r["step"]][k])) / abs(float(r[k])) for r in a for k in keys]


def worst(a, b, keys=LOSSES):
    return max(differences(a, b, keys))


def rank_tracebacks(err):
    return [line for line in err.splitlines() if line.startswith("[rank")]


@pytest.fixture(scope="session")
def two(tmp_path_factory, cache_dir):
    """A 2-process run of 30 steps (made once, whichever worker asks first): the reference the tests below compare
    with, and its stderr."""
    def make(d):
        code, err = run(torchrun(2, *flags(d, cache_dir)))
        assert code == 0, err
        (d / "stderr.txt").write_text(err)
    d = once(tmp_path_factory, "two", make)
    return d, (d / "stderr.txt").read_text()


def test_two_processes_train_like_one_with_the_same_global_batch(two, tmp_path, cache_dir):
    d2, err = two
    code, _ = run([sys.executable, DCGAN, "train", *flags(tmp_path, cache_dir)])
    assert code == 0
    one, both = rows(tmp_path), rows(d2)
    assert len(both) == 30
    assert worst(one, both) <= 1e-5  # losses and D's outputs at every one of the 30 steps
    # Gradient norms are taken after the processes' mean: they show a sum where a mean belongs, or R1's gradient
    # without the other process's share through batch norm (5e-3 off), where Adam's steps at lr 1e-5 would hide it.
    # Their median, per network: at some steps a norm is up to 7e-4 off between one process on one thread and two
    # processes, and 1e-4 between one process on two threads and two (the batch computed in other blocks; over 50
    # steps the medians are 2e-6 and 4e-7: bench/distributed.py --exactness), while a wrong share is off at every step.
    medians = {k: statistics.median(differences(one, both, (k,))) for k in ("grad_norm_d", "grad_norm_g")}
    assert max(medians.values()) <= 1e-4, medians
    # Rank 0 alone writes: one set of files, one closing line
    assert sorted(p.name for p in (d2 / "ck").iterdir()) == ["ckpt_0000030.pt", "config.json", "losses.png",
                                                           "metrics.csv", "train.lock"]
    assert err.count("done: step 30") == 1 and not rank_tracebacks(err)


def test_sigterm_stops_every_rank_at_one_step_and_resumes_on_2_and_1_processes(two, tmp_path, cache_dir):
    d2, _ = two
    stopped = tmp_path / "stopped"
    cmd = torchrun(2, *flags(stopped, cache_dir, steps=100_000, checkpoint_every=100_000, log_every=4))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(rows_if_any(stopped)) >= 3)
    proc.send_signal(signal.SIGTERM)  # to torchrun, which passes it on to every rank
    _, err = proc.communicate(timeout=120)
    saved = sorted((stopped / "ck").glob("ckpt_*.pt"))
    assert len(saved) == 1
    step = int(saved[0].stem.split("_")[1])
    assert 12 <= step < 30 and step % 4 == 0  # the ranks agree at a --log-every step
    assert err.count(f"SIGTERM: stopped at step {step} of 100000") == 1 and not rank_tracebacks(err)

    resumed = {}
    for n in (2, 1):
        d = tmp_path / f"on{n}"
        shutil.copytree(stopped, d)
        end = 30 if n == 2 else step + 10  # (fewer steps where only the CSV is compared)
        args = flags(d, cache_dir, steps=end)
        code, err = run(torchrun(n, *args) if n > 1 else [sys.executable, DCGAN, "train", *args])
        assert code == 0, err
        assert err.count(f"resuming from {d / 'ck' / saved[0].name} (step {step} of {end})") == 1
        resumed[n] = d
    # The same number of processes: bit for bit what the uninterrupted run holds
    assert same_state(training_state(resumed[2] / "ck" / "ckpt_0000030.pt"),
                      training_state(d2 / "ck" / "ckpt_0000030.pt"))
    # Another number of processes: the same math, summed in another order
    assert worst([r for r in rows(resumed[1]) if int(r["step"]) > step], rows(d2)) <= 1e-5


TEARDOWN = """
import glob, os, torch
from digitgan.training.distributed import join, synced
world = join("gloo", 60, "cpu")
model = synced(torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3)))
model(torch.ones(4, 3)).sum().backward()
del model
world.finish()
world.close()
# one write of one line: the two ranks share the pipe, and print's separate writes of text and newline interleave
os.write(2, f"rank {world.rank}: {len(glob.glob('/proc/self/task/*'))} threads\\n".encode())
"""


def test_closing_the_group_stops_its_threads_before_the_interpreter_exits(tmp_path):
    """A group left alive (something holding it past destroy_process_group) keeps gloo's threads running into
    the interpreter's exit, where now and then they abort a rank that has finished its run."""
    script = tmp_path / "teardown.py"
    script.write_text(TEARDOWN)
    env = {**os.environ, "PYTHONPATH": str(Path(DCGAN).parent)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert sorted(line for line in done.stderr.splitlines() if line.startswith("rank ")) == \
        ["rank 0: 1 threads", "rank 1: 1 threads"]


def rows_if_any(run_dir):
    return rows(run_dir) if (run_dir / "ck" / "metrics.csv").exists() else []


def test_ctrl_c_to_the_process_group_stops_cleanly(tmp_path, cache_dir):
    # A terminal's Ctrl-C reaches torchrun and every rank at once, and torchrun passes it on again
    cmd = torchrun(2, *flags(tmp_path, cache_dir, steps=100_000, log_every=4))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for(lambda: len(rows_if_any(tmp_path)) >= 2)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    saved = sorted((tmp_path / "ck").glob("ckpt_*.pt"))
    assert len(saved) == 1 and err.count("SIGINT: stopped at step") == 1 and not rank_tracebacks(err)


SURVIVOR = """
import os, signal, sys
from digitgan.training.loop import StopRequest
try:
    with StopRequest(escalate=False):  # as under torchrun
        raise RuntimeError("Connection closed by peer")  # a collective failed: another rank died
except RuntimeError:
    os.kill(os.getpid(), signal.SIGTERM)  # torchrun ends the others, while this one is on its way out
    print("training stopped: another process of this run failed", file=sys.stderr)
    sys.exit(1)
"""


def test_a_survivor_of_a_lost_rank_lives_through_torchruns_sigterm_to_print_its_line(tmp_path):
    script = tmp_path / "survivor.py"
    script.write_text(SURVIVOR)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(DCGAN).parent)})
    assert done.returncode == 1 and done.stderr.startswith("training stopped: "), (done.returncode, done.stderr)


def _start_and_wait_for_checkpoint(tmp_path, cache_dir, extra_flags=(), torchrun_flags=()):
    cmd = torchrun(2, *flags(tmp_path, cache_dir, steps=100_000, checkpoint_every=10), *extra_flags,
                   extra=torchrun_flags)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: list((tmp_path / "ck").glob("ckpt_*.pt")))
    ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(ranks) == 2
    return proc, sorted(map(int, ranks))


def gone(pid):
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped (a read racing the reaping says ESRCH)
        return True


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "frozen"])
def test_a_lost_rank_ends_the_run_instead_of_a_hang_and_a_rerun_resumes(tmp_path, cache_dir, sig):
    # killed: torchrun sees the death and the survivor's next collective fails at once. frozen: nobody notices
    # but the survivor, whose collective gives up after --dist-timeout (torchrun then kills the frozen one).
    proc, (survivor, lost) = _start_and_wait_for_checkpoint(tmp_path, cache_dir, ("--dist-timeout", "4"))
    t = time.time()
    os.kill(lost, sig)
    wait_for(lambda: gone(survivor), timeout=30)
    assert time.time() - t < 4 + 10
    if sig == signal.SIGSTOP:
        os.kill(lost, signal.SIGCONT)  # torchrun's SIGTERM waits in it; else torchrun SIGKILLs it after 30 s
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    line = next((line for line in err.splitlines() if line.startswith("training stopped: ")), err[-3000:])
    assert "another process of this run failed or stopped answering" in line
    assert ("Timed out" in line) == (sig == signal.SIGSTOP)
    if sig == signal.SIGKILL:  # the rerun resumes (the same path after either kind of loss)
        last = max(int(p.stem.split("_")[1]) for p in (tmp_path / "ck").glob("ckpt_*.pt"))
        code, err = run(torchrun(2, *flags(tmp_path, cache_dir, steps=last + 5)))
        assert code == 0 and f"(step {last} of {last + 5})" in err


def test_bad_input_is_one_line_from_rank_0_and_exit_2(two, tmp_path, cache_dir):
    # What rank 0's setup refuses, before it makes any directory (its one line reaches every rank as below)
    with pytest.raises(UsageError) as e:
        claim_run({"batch_size": 33, "checkpoint_dir": str(tmp_path / "ck")}, False, False, World(0, 2), RunLock())
    assert str(e.value) == "--batch-size 33 is the global batch and must divide evenly among the 2 processes; " \
                           "pass a multiple of 2"
    with pytest.raises(UsageError, match="among the 2 processes of --pack 2 pictures each; pass a multiple of 4"):
        claim_run({"batch_size": 34, "pack": 2, "checkpoint_dir": str(tmp_path / "ck")}, False, False, World(0, 2),
              RunLock())
    assert not (tmp_path / "ck").exists()
    with pytest.raises(UsageError) as e:  # refused before any process group is made
        join("nccl", 300.0, "cpu")
    assert str(e.value) == ("--backend nccl needs CUDA GPUs, one per process, and --device is cpu: pass --backend "
                            "gloo (or auto) to train on the CPU")

    # A run directory another trainer holds (this test's process): rank 0's setup refuses it, the group stops with
    # one line, every process exits 2, nothing is touched. (A flag the run cannot change is refused by the same
    # setup: tests/test_training.py has its message.)
    d = tmp_path / "run"
    shutil.copytree(two[0], d)
    before = {p.name: p.stat().st_mtime_ns for p in (d / "ck").iterdir()}
    lock = RunLock()
    lock.acquire(d / "ck")
    code, err = run(torchrun(2, *flags(d, cache_dir, steps=60)))
    lock.release()
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert line.startswith(f"error: {d / 'ck'}/ is being trained by another process; nothing was changed")
    assert "exitcode  : 2" in err
    assert {p.name: p.stat().st_mtime_ns for p in (d / "ck").iterdir()} == before


def test_two_processes_train_on_colour_pictures_at_64_pixels(tmp_path, cache_dir):
    """The data's shape reaches every rank: the emoji at 64x64 RGB, conditional, on two processes."""
    from PIL import Image
    code, err = run(torchrun(2, *flags(tmp_path, cache_dir, dataset="emoji", resolution=64, conditional="on",
                                       steps=4, batch_size=8, width=4, sample_every=4)))
    assert code == 0, err
    assert err.count("done: step 4") == 1 and not rank_tracebacks(err)
    assert Image.open(tmp_path / "samples" / "step_0000004.png").mode == "RGB"


def test_every_stabiliser_and_ada_train_on_two_processes_and_resume(tmp_path, cache_dir):
    """R1 and R2 lazily (every other step) beside the loss, ADA's p kept the same on every rank (its tally summed over them),
    spectral norm, the minibatch std (its groups within each process's share), R3GAN's pairing loss (G's step
    through D on real images too), R2 and PacGAN's packs (whole within each process's share): a 2-process run trains, and resumes on 2 processes bit for bit."""
    options = dict(loss="rpgan", r1=1.0, r2=1.0, r1_every=2, augment="ada", spectral_norm="d", mbstd=2, lr_d=4e-3,
                   lr_g=4e-3, pack=2)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    code, err = run(torchrun(2, *flags(straight, cache_dir, steps=8, checkpoint_every=4, **options)))
    assert code == 0 and not rank_tracebacks(err), err
    shutil.copytree(straight, stopped)  # as if the run had stopped after its checkpoint at step 4
    (stopped / "ck" / "ckpt_0000008.pt").unlink()
    code, err = run(torchrun(2, *flags(stopped, cache_dir, steps=8, checkpoint_every=4, **options)))
    assert code == 0 and "(step 4 of 8)" in err, err
    assert same_state(training_state(straight / "ck" / "ckpt_0000008.pt"),
                      training_state(stopped / "ck" / "ckpt_0000008.pt"))
    assert [float(r["augment_p"]) for r in rows(straight)][-1] > 0  # D was sure of the digits: p rose
