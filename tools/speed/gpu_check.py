"""The prepared GPU check: what CPU CI cannot run, in one offline script.

Everything runs through the user's own entry points (``torchrun`` +
``tools/train.py`` with the shipped configs) on synthetic 224-px images
(``tools/data/make_shapes.py``) and random-weight teachers, on one GPU, in
about 8 minutes on an H100. Sections, most valuable first (each is reported,
a failing one does not stop the next; one that would overrun ``--budget`` is
skipped and says so):

a. ``configs/hybrid_vitb.py`` on NCCL, 2 epochs of 12 iterations (the last
   batch of each epoch short): once uninterrupted (ms/iter, images/s, peak
   memory), once stopped by SIGTERM at iteration 10 (exit status 75, the
   checkpoint, the stop time ``PreemptionHook`` logs), then ``--resume`` to
   the end (losses against the uninterrupted run);
b. the fp16 ViT-B config (V100/T4) for 12 iterations at batch 256 and 64:
   loss scale, skipped steps, peak memory against 16 and 32 GB;
c. (a) with mmengine's ``compile=True`` and both teachers compiled:
   recompiles, graph breaks (``TORCH_LOGS``), ms/iter, losses against (a);
d. ``configs/hybrid_vitl.py`` for 4 iterations: peak memory, ms/iter;
e. bf16/fp16 teachers against fp32 (``tools/speed/teacher_precision.py``);
f. two ranks on the one GPU over gloo, SIGTERM to one rank: both exit 75
   with one checkpoint.

``--dry-run`` (on any machine): prints every command, makes a small data
set, checks each training command as ``tools/train.py`` would (its arguments,
the config with the overrides, the preflight) without training, and runs
(e) on the CPU. ``--smoke`` runs (a) and (f) for real on the CPU with the
epoch-based demo config (tiny ViTs, 64 px, batch 4) in place of the flagship:
the same commands, signals and figures, so the check's own logic is tested
where no GPU is. CI runs both.

Output (at most 8 files, for the device tool): ``summary.md``,
``results.json`` and one log per section in ``--out``; work dirs go to
``--work`` (not returned).

Usage::

    python tools/speed/gpu_check.py [--out DIR] [--work DIR] [--budget 540]
        [--only a,c] [--dry-run]
"""
import argparse
import json
import math
import os
import os.path as osp
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if sys.path[:1] != [ROOT]:
    sys.path.insert(0, ROOT)

VITB = 'configs/hybrid_vitb.py'
VITB_FP16 = ('configs/hybrid-distill_vit-base-p16_clip-b16-mae-b16_8xb256-'
             'fp16-coslr-300e_in1k.py')
VITL = 'configs/hybrid_vitl.py'
#: what --smoke trains in place of the flagship: epoch-based like it
SMOKE_CONFIG = 'configs/demo/hybrid-distill_vit-tiny-p8_1xb32-4e_shapes.py'
SMOKE_SECTIONS = ('a', 'e', 'f')
SECTIONS = ('a', 'b', 'c', 'd', 'e', 'f')
#: seconds each section needs on an H100 (start-up included), for --budget
ESTIMATES = dict(a=150, b=70, c=150, d=50, e=30, f=60)
ITERS_PER_EPOCH = 12
STOP_AT = 10
GiB = 1024**3


def ranks_of(proc: subprocess.Popen) -> List[int]:
    """The worker processes torchrun started."""
    out = subprocess.run(['pgrep', '-P', str(proc.pid)],
                         capture_output=True,
                         text=True).stdout
    return [int(pid) for pid in out.split()]


def exit_75_ranks(output: str) -> int:
    """How many ranks torchrun's failure summary lists with status 75."""
    return len(set(re.findall(r'exitcode\s*:\s*75 \(pid: (\d+)\)', output)))


#: largest relative loss difference a resumed GPU run may show against the
#: uninterrupted one (cuDNN/SDPA kernels are not bit-deterministic; on the CPU
#: it is 0)
RESUME_RTOL = 1e-3


def verdict(name: str, r: dict) -> List[str]:
    """What failed in a section's result (empty: it passed)."""
    if 'error' in r:
        return [r['error']]
    if 'skipped' in r or not r or set(r) == {'seconds'}:
        return []
    problems = []

    def need(cond, what):
        if not cond:
            problems.append(what)

    if name == 'a':
        need(r['reference']['rc'] == 0, 'uninterrupted run failed')
        need(r['stop']['exit_75'], 'the stopped rank did not exit 75')
        need(r['stop']['checkpoint'], 'no checkpoint at the stop')
        need(r['resume']['rc'] == 0 and r['resume']['resumed'],
             'the resumed run failed or did not restore its RNG states')
        diff = r['resume']['max_rel_loss_diff']
        need(diff is not None and diff <= RESUME_RTOL,
             f'resumed losses differ by {diff} (> {RESUME_RTOL})')
    elif name == 'b':
        need(
            all(v['rc'] == 0 for v in r.values() if isinstance(v, dict)),
            'an fp16 run failed')
    elif name == 'c':
        need(r['rc'] == 0, 'the compiled run failed')
        need(not r['recompile_limit_hit'], 'dynamo hit its recompile limit')
    elif name == 'd':
        need(r['rc'] == 0, 'the ViT-L run failed')
    elif name == 'e':
        need(
            all(m['finite'] for m in r['results'].values()),
            'a low-precision teacher gave non-finite targets')
    elif name == 'f':
        need(
            r['signalled_one_rank'] and r['both_exit_75'] and r['checkpoint'],
            'the two-rank gloo stop did not end '
            'with both ranks at 75 and a checkpoint')
    return problems


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Check:
    """The sections, their commands and their figures."""

    def __init__(self,
                 out: str,
                 work: str,
                 dry_run: bool,
                 budget: float,
                 smoke: bool = False):
        self.out, self.work, self.dry, self.smoke = out, work, dry_run, smoke
        # the flagship's per-GPU batch and loader, or the CPU smoke run's
        self.vitb = SMOKE_CONFIG if smoke else VITB
        self.batch = 4 if smoke else 256
        self.workers = 0 if smoke else 8
        self.deadline = time.monotonic() + budget
        self.results: Dict[str, dict] = {}
        self.data = osp.join(work, 'data', 'imagenet')
        os.makedirs(out, exist_ok=True)
        os.makedirs(work, exist_ok=True)

    # ------------------------------------------------------------- commands
    def train_cmd(self,
                  config: str,
                  work_dir: str,
                  opts: List[str],
                  nproc: int = 1,
                  args: List[str] = ()) -> List[str]:
        """``torchrun ...

        tools/train.py CONFIG`` as dist_train.sh runs it, with random-weight
        teachers on the synthetic data.
        """
        return [
            sys.executable, '-m', 'torch.distributed.run', '--nnodes', '1',
            '--nproc_per_node',
            str(nproc), '--master_addr', '127.0.0.1', '--master_port',
            str(free_port()), 'tools/train.py', config, '--launcher',
            'pytorch', '--work-dir', work_dir, *args, '--cfg-options',
            f'train_dataloader.dataset.data_root={self.data}',
            'model.teacher_feat.checkpoint=None',
            'model.teacher_rel.checkpoint=None',
            'default_hooks.logger.interval=1', 'randomness.seed=0', *opts
        ]

    def loader(self,
               batch: Optional[int] = None,
               workers: Optional[int] = None) -> List[str]:
        """The ``train_dataloader`` overrides of a run."""
        workers = self.workers if workers is None else workers
        opts = [
            f'train_dataloader.batch_size={batch or self.batch}',
            f'train_dataloader.num_workers={workers}'
        ]
        if workers == 0:
            opts.append('train_dataloader.persistent_workers=False')
        return opts

    def check_train_cmd(self, cmd: List[str]) -> str:
        """What ``tools/train.py`` would do before training: parse, merge,
        preflight (raises on any problem)."""
        from mmengine.config import Config

        from mmhybrid.apis.train import merge_args, parse_args
        from mmhybrid.engine.preflight import check_train_config
        argv = cmd[cmd.index('tools/train.py') + 1:]
        args = parse_args(argv)
        cfg = merge_args(Config.fromfile(osp.join(ROOT, args.config)), args)
        check_train_config(cfg)
        return (f'ok: {args.config}, batch '
                f'{cfg.train_dataloader.batch_size}, '
                f'{len(cfg.custom_hooks)} hooks')

    # --------------------------------------------------------------- running
    def run(self,
            cmd: List[str],
            log: str,
            env: Optional[dict] = None,
            timeout: float = 600,
            on_line: Optional[Callable] = None,
            cpu_runnable: bool = False) -> dict:
        """Run ``cmd`` (own process group), append its output to ``log``;
        ``on_line(line, proc)`` sees each line. A dry run only prints (and
        checks) the command, unless it is ``cpu_runnable``.

        Returns rc, output, seconds.
        """
        with open(osp.join(self.out, log), 'a') as f:
            f.write(f'\n$ {shlex.join(cmd)}\n')
        if self.dry and not cpu_runnable:
            print(f'[dry-run] {shlex.join(cmd)}')
            if 'tools/train.py' in cmd:
                print(f'  {self.check_train_cmd(cmd)}')
            return dict(rc=None, output='', seconds=0.0)
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env=dict(os.environ, **(env or {})))
        lines = []
        try:
            for line in proc.stdout:
                lines.append(line)
                if on_line is not None:
                    on_line(line, proc)
                if time.monotonic() - start > timeout:
                    os.killpg(proc.pid, signal.SIGKILL)
                    lines.append(f'[gpu_check] killed after {timeout} s\n')
                    break
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        output = ''.join(lines)
        with open(osp.join(self.out, log), 'a') as f:
            f.write(output)
        return dict(
            rc=proc.returncode,
            output=output,
            seconds=time.monotonic() - start)

    # ---------------------------------------------------------------- figures
    @staticmethod
    def scalars(work_dir: str) -> Dict[int, dict]:
        from mmhybrid.utils.scalars import scalars_by_iter
        return scalars_by_iter(work_dir)

    @staticmethod
    def step_figures(records: Dict[int, dict], batch: int) -> dict:
        """ms/iter and images/s (median, first 3 iterations left out), peak
        memory (mmengine logs max_memory_allocated in MB)."""
        its = sorted(records)
        times = [records[i]['time'] for i in its[3:] if 'time' in records[i]]
        mem = [records[i]['memory'] for i in its if 'memory' in records[i]]
        ms = 1000 * statistics.median(times) if times else None
        return dict(
            iterations=len(its),
            ms_per_iter=ms,
            images_per_s=batch * 1000 / ms if ms else None,
            peak_gib=max(mem) / 1024 if mem else None)

    @staticmethod
    def loss_diff(a: Dict[int, dict], b: Dict[int, dict]) -> Optional[float]:
        """Largest relative difference of the loss over common iterations."""
        common = sorted(set(a) & set(b))
        if not common:
            return None
        return max(
            abs(a[i]['loss'] - b[i]['loss']) / max(abs(a[i]['loss']), 1e-12)
            for i in common)

    # --------------------------------------------------------------- sections
    def section_env(self) -> None:
        if self.dry:
            print('[dry-run] nvidia-smi; torch/mmengine/mmpretrain versions')
            return
        try:
            smi = subprocess.run([
                'nvidia-smi', '--query-gpu=name,memory.total,driver_version',
                '--format=csv,noheader'
            ],
                                 capture_output=True,
                                 text=True).stdout.strip()
        except FileNotFoundError:
            smi = 'no nvidia-smi (CPU)'
        import mmengine
        import mmpretrain
        import torch
        self.results['env'] = dict(
            gpu=smi,
            torch=torch.__version__,
            cuda=torch.version.cuda,
            mmengine=mmengine.__version__,
            mmpretrain=mmpretrain.__version__)

    def section_data(self) -> None:
        # 11.5 batches: 12 iterations per epoch, the last one short
        num = self.batch * (2 * ITERS_PER_EPOCH - 1) // 2
        if self.dry:
            num = 16
        if not osp.isdir(self.data):
            cmd = [
                sys.executable, 'tools/data/make_shapes.py',
                osp.dirname(self.data), '--formats', 'imagenet', '--size',
                '64' if self.smoke else '224', '--num-train',
                str(num), '--num-val', '0'
            ]
            print(f'[data] {shlex.join(cmd)}')
            subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)

    def section_a(self) -> dict:
        log = 'a_resume.log'
        opts = ['train_cfg.max_epochs=2', *self.loader()]
        ref_dir = osp.join(self.work, 'a_ref')
        ref = self.run(self.train_cmd(self.vitb, ref_dir, opts), log)
        stop_dir = osp.join(self.work, 'a_stop')
        sent = {}

        def stop_at(line, proc):
            if not sent and re.search(
                    rf'Epoch\(train\)\s*\[1\]\[\s*{STOP_AT}/', line):
                # to every rank, as Slurm signals every process of a step
                sent['ranks'] = ranks_of(proc)
                for pid in sent['ranks']:
                    os.kill(pid, signal.SIGTERM)

        stop = self.run(
            self.train_cmd(self.vitb, stop_dir, opts), log, on_line=stop_at)
        resume = self.run(
            self.train_cmd(self.vitb, stop_dir, opts, args=['--resume']), log)
        if self.dry:
            return {}
        ref_s, stop_s = self.scalars(ref_dir), self.scalars(stop_dir)
        took = re.search(r'the stop took ([0-9.]+) s', stop['output'])
        stopped = re.search(r'stopped after iteration (\d+)', stop['output'])
        return dict(
            reference=dict(
                rc=ref['rc'], **self.step_figures(ref_s, self.batch)),
            stop=dict(
                # torchrun's failure summary names each rank's status
                exit_75=exit_75_ranks(stop['output']) == 1,
                stopped_after=int(stopped.group(1)) if stopped else None,
                checkpoint=bool(stopped) and osp.isfile(
                    osp.join(stop_dir, f'iter_{stopped.group(1)}.pth')),
                stop_seconds=float(took.group(1)) if took else None),
            resume=dict(
                rc=resume['rc'],
                resumed='ExactResumeHook: restored' in resume['output'],
                max_rel_loss_diff=self.loss_diff(ref_s, stop_s),
                iterations=len(stop_s)))

    def section_b(self) -> dict:
        out = {}
        for batch in (256, 64):
            work = osp.join(self.work, f'b_fp16_{batch}')
            run = self.run(
                self.train_cmd(VITB_FP16, work, [
                    'train_cfg.max_epochs=1', *self.loader(batch),
                    f'train_dataloader.dataset.indices={12 * batch}'
                ]), 'b_fp16.log')
            if self.dry:
                continue
            figures = self.step_figures(self.scalars(work), batch)
            scale = None
            ckpt = osp.join(work, 'epoch_1.pth')
            if osp.isfile(ckpt):
                from mmhybrid.utils.checkpoint import load_checkpoint_file
                state = load_checkpoint_file(ckpt)
                scale = state['optimizer'].get('loss_scaler', {}).get('scale')
            out[f'batch_{batch}'] = dict(
                rc=run['rc'],
                loss_scale=scale,
                # dynamic scaling starts at 2**16 and halves per skipped step
                skipped_steps=None
                if scale is None else round(16 - math.log2(scale)),
                fits_16gb=figures['peak_gib'] is not None
                and figures['peak_gib'] < 15.0,
                fits_32gb=figures['peak_gib'] is not None
                and figures['peak_gib'] < 30.0,
                **figures)
        return out

    def section_c(self) -> dict:
        work = osp.join(self.work, 'c_compile')
        run = self.run(
            self.train_cmd(VITB, work, [
                'train_cfg.max_epochs=2', *self.loader(), 'compile=True',
                'model.teacher_feat.compile=True',
                'model.teacher_rel.compile=True'
            ]),
            'c_compile.log',
            env=dict(TORCH_LOGS='recompiles,graph_breaks'),
            timeout=400)
        if self.dry:
            return {}
        got = self.scalars(work)
        ref = self.scalars(osp.join(self.work, 'a_ref'))
        first = {i: got[i] for i in sorted(got)[:3]}
        return dict(
            rc=run['rc'],
            recompiles=len(re.findall(r'Recompiling function', run['output'])),
            graph_breaks=len(re.findall(r'Graph break', run['output'])),
            recompile_limit_hit='recompile_limit' in run['output']
            or 'cache_size_limit' in run['output'],
            first_losses_max_rel_diff=self.loss_diff(ref, first),
            **self.step_figures(got, 256))

    def section_d(self) -> dict:
        work = osp.join(self.work, 'd_vitl')
        run = self.run(
            self.train_cmd(VITL, work, [
                'train_cfg.max_epochs=1', *self.loader(128),
                'train_dataloader.dataset.indices=512'
            ]), 'd_vitl.log')
        if self.dry:
            return {}
        return dict(rc=run['rc'], **self.step_figures(self.scalars(work), 128))

    def section_e(self) -> dict:
        cpu = self.dry or self.smoke
        device, batch = ('cpu', '1') if cpu else ('cuda', '32')
        cmd = [
            sys.executable, 'tools/speed/teacher_precision.py', self.vitb,
            '--batch', batch, '--device', device, '--out',
            osp.join(self.work, 'precision.json')
        ]
        run = self.run(cmd, 'e_precision.log', cpu_runnable=True)
        print(run['output'][-800:])
        if run['rc'] != 0:
            raise RuntimeError(f'teacher_precision.py exited {run["rc"]}')
        with open(osp.join(self.work, 'precision.json')) as f:
            return json.load(f)

    def section_f(self) -> dict:
        work = osp.join(self.work, 'f_gloo')
        sent = {}

        def stop_one_rank(line, proc):
            if not sent and re.search(r'Epoch\(train\)\s*\[1\]\[\s*6/', line):
                ranks = ranks_of(proc)
                if ranks:
                    sent['pid'] = ranks[-1]
                    os.kill(sent['pid'], signal.SIGTERM)

        run = self.run(
            self.train_cmd(
                self.vitb,
                work, [
                    'train_cfg.max_epochs=1', *self.loader(
                        2 if self.smoke else 32, 0 if self.smoke else 4),
                    f'train_dataloader.dataset.indices='
                    f'{48 if self.smoke else 768}',
                    'env_cfg.dist_cfg.backend=gloo'
                ],
                nproc=2),
            'f_gloo.log',
            on_line=stop_one_rank)
        if self.dry:
            return {}
        stopped = re.search(r'stopped after iteration (\d+)', run['output'])
        return dict(
            signalled_one_rank=bool(sent),
            both_exit_75=exit_75_ranks(run['output']) == 2,
            checkpoint=bool(stopped)
            and osp.isfile(osp.join(work, f'iter_{stopped.group(1)}.pth')))

    # ------------------------------------------------------------------ main
    def section(self, name: str) -> None:
        left = self.deadline - time.monotonic()
        if not self.dry and left < ESTIMATES.get(name, 0):
            self.results[name] = dict(
                skipped=f'{left:.0f} s of the budget left, needs about '
                f'{ESTIMATES[name]} s')
            print(f'== {name}: skipped ({self.results[name]["skipped"]})')
            return
        print(f'== {name} ==', flush=True)
        start = time.monotonic()
        try:
            result = getattr(self, f'section_{name}')()
        except Exception as e:  # reported; the next section still runs
            result = dict(error=f'{type(e).__name__}: {e}')
        if result is not None:
            result['seconds'] = round(time.monotonic() - start, 1)
            result['problems'] = verdict(name, result)
            self.results[name] = result
        print(f'   {json.dumps(self.results.get(name), default=str)[:600]}')

    def write(self) -> None:
        with open(osp.join(self.out, 'results.json'), 'w') as f:
            json.dump(self.results, f, indent=1, default=str)
        lines = ['# GPU check', '']
        for name, result in self.results.items():
            lines.append(f'## {name}')
            lines.append('```')
            lines.append(json.dumps(result, indent=1, default=str))
            lines.append('```')
        with open(osp.join(self.out, 'summary.md'), 'w') as f:
            f.write('\n'.join(lines) + '\n')


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        '--out', default=os.environ.get('OUT', 'work_dirs/gpu_check'))
    p.add_argument('--work', default='/tmp/mmhybrid_gpu_check')
    p.add_argument(
        '--budget',
        type=float,
        default=540,
        help='seconds for all sections; one that would overrun is skipped')
    p.add_argument(
        '--only',
        default=','.join(SECTIONS),
        help='comma-separated sections (default: all)')
    p.add_argument('--dry-run', action='store_true')
    p.add_argument(
        '--smoke',
        action='store_true',
        help='run sections a, e and f on the CPU with the tiny epoch-based '
        'demo config')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    only = [s for s in args.only.split(',') if s]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        print(f'ERROR: --only {args.only}: unknown section(s) {bad}; '
              f'expected some of {",".join(SECTIONS)}')
        return 2
    if args.smoke:
        refused = [s for s in only if s not in SMOKE_SECTIONS]
        if refused and args.only != ','.join(SECTIONS):
            print(f'ERROR: --smoke runs sections {",".join(SMOKE_SECTIONS)} '
                  f'only, not {",".join(refused)} (they need CUDA)')
            return 2
        only = [s for s in only if s in SMOKE_SECTIONS]
    elif not args.dry_run:
        import torch
        if not torch.cuda.is_available():
            print('ERROR: no CUDA device; on a machine without one, use '
                  '--dry-run or --smoke')
            return 2
    check = Check(args.out, args.work, args.dry_run, args.budget, args.smoke)
    check.section_env()
    check.section_data()
    for name in only:
        check.section(name)
    check.write()
    failed = [n for n, r in check.results.items() if r.get('problems')]
    print(
        f'[gpu_check] results in {args.out} '
        f'({"failed: " + ",".join(failed) if failed else "no section failed"})'
    )
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
