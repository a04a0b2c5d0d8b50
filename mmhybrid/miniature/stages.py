"""The miniature's training stages: each a ``tools/train.py`` run of a
``configs/demo/`` config whose command line is printed, so any stage can be
rerun alone; the runner that runs them a few at a time, and its guard on the
training function."""
import multiprocessing as mp
import os
import os.path as osp
import subprocess
import sys
import time
import traceback
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import torch

from .configs import load_config, quiet_logger


def check_train_tool(train_tool) -> None:
    """Refuse a training module (:mod:`mmhybrid.apis.train`, what
    ``tools/train.py`` runs) whose ``merge_args`` lets a later dataloader
    overwrite ``train_dataloader``.

    mmengine 0.10's ``ConfigDict.update`` merges nested dicts in place; the
    ``merge_args`` copied from mmpretrain once funnelled every dataloader
    through one shared default dict, so val's ``data_prefix``, pipeline and
    sampler were written into train's: every classifier config with a
    ``val_dataloader`` trained on the val split.
    """
    from mmengine.config import Config
    cfg = Config(
        dict(
            train_dataloader=dict(
                dataset=dict(data_prefix='train'),
                sampler=dict(type='InfiniteSampler')),
            val_dataloader=dict(
                dataset=dict(data_prefix='val'),
                sampler=dict(type='DefaultSampler'))))
    cfg = train_tool.merge_args(cfg, train_tool.parse_args(['probe.py']))
    if (cfg.train_dataloader.dataset.data_prefix != 'train'
            or cfg.train_dataloader.sampler.type != 'InfiniteSampler'):
        raise RuntimeError(
            'tools/train.py lets val_dataloader overwrite train_dataloader '
            '(one shared default dict merged with mmengine\'s recursive '
            'ConfigDict.update): classifiers would train on the val split. '
            'Give each dataloader its own copy of the defaults.')


# ------------------------------------------------------------------ stages
class Stage(NamedTuple):
    """One ``tools/train.py`` run: ``cost`` weighs it for the ETA (iterations
    times a rough per-iteration cost)."""
    name: str
    config: str
    work_dir: str
    options: List[str]
    cost: float = 1.0


def _child(train_main: Callable, argv: List[str], log: str, threads: int):
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        torch.set_num_threads(threads)
        train_main(argv)
        code = 0
    except SystemExit as e:
        code = 0 if e.code is None else (
            e.code if isinstance(e.code, int) else 1)
    except BaseException:  # noqa: B902  (reported in the stage's log)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class Stages:
    """Runs training stages ``jobs`` at a time, times them and prints progress.

    Each stage is a ``tools/train.py`` process by default; with ``train_main``
    (a training function taking that tool's ``argv``) it runs in a forked
    child of this process instead, which has imported the stack once. A batch
    of ``n`` stages runs ``min(jobs, n)`` at a time with ``max(1, cpus //
    that)`` threads each, so a lone stage gets every core.

    Args:
        work_dir (str): Logs go to ``work_dir/logs/<stage>.log``.
        root (str): The folder holding ``configs/`` and ``tools/`` (the
            packaged copy, :data:`~mmhybrid.miniature.configs.ROOT`), for
            ``tools/train.py`` and for printing commands relative to it.
        train_main (Callable, optional): Run stages as forked calls of this.
            Defaults to None (``tools/train.py`` processes).
        jobs (int): Stages at once. Defaults to 1.
        resume (bool): Keep stages an earlier run finished with the same
            command. Defaults to False.
        total_cost (float): Sum of the costs of every stage to come, for the
            ETA. Defaults to 0 (no ETA).
        tag (str): Prefix of the progress lines. Defaults to ``'[demo]'``.
        cpus (int): Threads shared by the stages running at once. Defaults
            to 2 (the CPU the miniature is sized for).
    """

    DONE = '.stage_done'

    def __init__(self,
                 work_dir: str,
                 root: str,
                 train_main: Optional[Callable] = None,
                 jobs: int = 1,
                 resume: bool = False,
                 total_cost: float = 0.0,
                 tag: str = '[demo]',
                 cpus: int = 2):
        self.work_dir, self.root = work_dir, root
        self.train_main = train_main
        self.jobs, self.cpus = max(1, jobs), cpus
        self.threads = max(1, cpus // self.jobs)
        self.resume = resume
        self.total_cost, self.done_cost = total_cost, 0.0
        self.tag = tag
        self.t0 = time.time()
        self.times: Dict[str, float] = {}
        self.failed: List[str] = []
        self.skipped: List[str] = []
        os.makedirs(osp.join(work_dir, 'logs'), exist_ok=True)

    def command(self, stage: Stage) -> str:
        """The shell command that reruns ``stage`` alone."""
        argv = [
            stage.config, '--work-dir', stage.work_dir, '--cfg-options',
            *stage.options
        ]
        return 'python tools/train.py ' + ' '.join(
            osp.relpath(a, self.root
                        ) if osp.isabs(a) and a.startswith(self.root) else a
            for a in argv)

    def rel(self, path: str) -> str:
        """``path`` relative to the working directory when inside it."""
        rel = osp.relpath(path)
        return path if rel.startswith('..') else rel

    def log(self, msg: str) -> None:
        print(f'{self.tag} {msg}', flush=True)

    def add_done(self, cost: float) -> None:
        """Count work done outside the training stages (for the ETA)."""
        self.done_cost += cost

    def progress(self) -> str:
        elapsed = time.time() - self.t0
        text = f'elapsed {elapsed / 60:.1f} min'
        if self.total_cost and self.done_cost:
            left = elapsed * (self.total_cost -
                              self.done_cost) / self.done_cost
            text += f', ETA {max(left, 0) / 60:.1f} min'
        return text

    def _start(self, stage: Stage):
        argv = [
            stage.config, '--work-dir', stage.work_dir, '--cfg-options',
            *stage.options
        ]
        log = osp.join(self.work_dir, 'logs', f'{stage.name}.log')
        with open(log + '.cmd', 'w') as f:
            f.write(self.command(stage) + '\n')
        if self.train_main is None:
            env = dict(os.environ, OMP_NUM_THREADS=str(self.threads))
            f = open(log, 'w')
            # the link's target in an editable install: the checkout's
            # tools/train.py, which runs that checkout's mmhybrid
            proc = subprocess.Popen([
                sys.executable,
                osp.realpath(osp.join(self.root, 'tools', 'train.py')), *argv
            ],
                                    stdout=f,
                                    stderr=subprocess.STDOUT,
                                    env=env)
            proc._log_file = f
            return proc, log
        sys.stdout.flush()
        sys.stderr.flush()
        proc = mp.get_context('fork').Process(
            target=_child, args=(self.train_main, argv, log, self.threads))
        proc.start()
        return proc, log

    def run(self, batch: Sequence[Stage]) -> None:
        """Run every stage of ``batch``; return when all have ended."""
        pending = list(batch)
        jobs = max(1, min(self.jobs, len(pending)))
        self.threads = max(1, self.cpus // jobs)
        running = {}
        while pending or running:
            while pending and len(running) < jobs:
                stage = pending.pop(0)
                cmd = self.command(stage)
                done_file = osp.join(stage.work_dir, self.DONE)
                if self.resume and osp.isfile(done_file) and open(
                        done_file).read() == cmd + '\n':
                    self.log(f'{stage.name}: kept from an earlier run with '
                             'the same command')
                    self.skipped.append(stage.name)
                    self.total_cost -= stage.cost  # no time spent on it
                    continue
                if osp.isfile(done_file):
                    os.remove(done_file)
                proc, log = self._start(stage)
                cfg = osp.relpath(stage.config, self.root)
                self.log(f'{stage.name}: started, {cfg} (to rerun it alone: '
                         f'{self.rel(log)}.cmd)')
                running[stage.name] = (stage, proc, log, time.time())
            time.sleep(0.2)
            for name in list(running):
                stage, proc, log, t0 = running[name]
                if self.train_main is None:
                    code = proc.poll()
                else:
                    code = None if proc.is_alive() else proc.exitcode
                if code is None:
                    continue
                if self.train_main is None:
                    proc._log_file.close()
                del running[name]
                self.times[name] = time.time() - t0
                self.done_cost += stage.cost
                if code != 0:
                    self.failed.append(name)
                    with open(log) as f:
                        tail = f.read()[-2500:]
                    self.log(f'{name} FAILED (exit {code}); log {log}\n{tail}')
                    continue
                with open(osp.join(stage.work_dir, self.DONE), 'w') as f:
                    f.write(self.command(stage) + '\n')
                self.log(f'{name}: done in {self.times[name]:.0f}s '
                         f'({self.progress()})')


# -------------------------------------------------- in a forked child
def in_child(fn: Callable, *args) -> None:
    """Run ``fn(*args)`` in a forked child and wait for it.

    Torch work in the stage runner's own process would start its OpenMP thread
    pool, and a child forked after that hangs in its first parallel region
    (seen: the demo's distillation stage, two threads, idle for minutes). So
    the runner stays free of torch compute until its stages are done.
    """

    def target():
        fn(*args)

    proc = mp.get_context('fork').Process(target=target)
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f'{getattr(fn, "__name__", fn)} failed in a child '
                           f'process (exit {proc.exitcode})')


def save_random_init(config: str, options: Sequence[str], seed: int,
                     path: str) -> str:
    """Write the seeded random initialisation of a demo classifier config's
    backbone as a checkpoint (``backbone.*`` keys).

    The "random init" reference is then one concrete network per seed, read by
    the probe, the fine-tune, k-NN and the attention statistics alike, and
    initialised as the students are (the demo configs' Xavier-uniform linear
    layers).
    """
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    cfg = load_config(config, options)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmpretrain'), quiet_logger():
        model = MODELS.build(cfg.model)
        model.init_weights()
    state = {
        k: v
        for k, v in model.state_dict().items() if k.startswith('backbone.')
    }
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    torch.save(dict(state_dict=state), path)
    return path
