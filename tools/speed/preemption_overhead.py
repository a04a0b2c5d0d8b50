"""What pre-emption safety costs the CPU training step, measured in one run.

Trains the epoch-based demo config in this process (one-rank gloo group, so
the signal check does its all-reduce) with ``PreemptionHook(interval=N)`` and
prints the time of the per-iteration signal check and of the mid-epoch
checkpoints as ratios to the rest of the step::

    python tools/speed/preemption_overhead.py --interval 5

The demo's random tiny teachers come from
:func:`mmhybrid.testing.save_demo_teacher`: test helpers, which a tool may use
and the library may not (``tests/test_packaging/test_import_layers.py``).
"""
import argparse
import os
import os.path as osp
import sys
import tempfile
import time
from typing import Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if sys.path[:1] != [ROOT]:  # this checkout's mmhybrid, not another install's
    sys.path.insert(0, ROOT)

CONFIG = 'configs/demo/hybrid-distill_vit-tiny-p8_1xb32-4e_shapes.py'


def _timed(obj, name: str, totals: dict) -> None:
    fn = getattr(obj, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - start
            totals[name + '_calls'] = totals.get(name + '_calls', 0) + 1

    setattr(obj, name, wrapper)


def measure_preemption_overhead(repo_root: str,
                                epochs: int = 2,
                                interval: int = 5,
                                batch_size: int = 8,
                                num_images: int = 96,
                                work_dir: Optional[str] = None) -> dict:
    """Train the epoch-based demo config and time the pre-emption hook.

    Args:
        repo_root (str): The repository (for the config).
        epochs (int): Epochs to train. Defaults to 2.
        interval (int): Mid-epoch checkpoint interval (iterations).
            Defaults to 5.
        batch_size (int): Images per step. Defaults to 8.
        num_images (int): Training images generated. Defaults to 96.
        work_dir (str, optional): Where data and checkpoints go. Defaults to
            a temporary folder.

    Returns:
        dict: ``iters``, ``step_s`` (mean step time without the hook's work),
        ``check_s`` (mean signal check per iteration), ``save_s`` (mean
        mid-epoch save), ``saves``, ``interval``, ``check_ratio`` and
        ``save_ratio`` (time spent in checks / saves over the rest of the
        run's steps).
    """
    import torch
    from mmengine.config import Config

    from mmhybrid.datasets import make_imagenet_style
    from mmhybrid.engine import HybridRunner
    from mmhybrid.engine.hooks import PreemptionHook
    from mmhybrid.testing import save_demo_teacher
    work_dir = work_dir or tempfile.mkdtemp(prefix='preemption_overhead_')
    data = make_imagenet_style(
        osp.join(work_dir, 'data'),
        num_train=num_images,
        num_val=5,
        size=64,
        seed=0)
    teachers = [
        save_demo_teacher(osp.join(work_dir, f'teacher{seed}.pth'), seed)
        for seed in (1, 2)
    ]
    cfg = Config.fromfile(osp.join(repo_root, CONFIG))
    cfg.work_dir = osp.join(work_dir, 'work')
    cfg.merge_from_dict({
        'train_dataloader.dataset.data_root': data,
        'model.teacher_feat.checkpoint': teachers[0],
        'model.teacher_rel.checkpoint': teachers[1],
        'train_dataloader.batch_size': batch_size,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_cfg.max_epochs': epochs,
        'param_scheduler.1.end': epochs,
        'default_hooks.logger.interval': 1000,
    })
    cfg.custom_hooks = [
        h for h in cfg.custom_hooks if h['type'] != 'PreemptionHook'
    ] + [
        dict(type='ExactResumeHook'),
        dict(type='PreemptionHook', interval=interval)
    ]
    # one-rank process group: the signal check runs its all-reduce
    os.environ.update(
        RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1')
    if 'MASTER_PORT' not in os.environ:
        import socket
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            os.environ['MASTER_PORT'] = str(s.getsockname()[1])
    cfg.launcher = 'pytorch'
    # HybridRunner: mmengine's Runner asks CUDA for the device of a
    # pytorch-launched rank
    runner = HybridRunner.from_cfg(cfg)
    hook = [h for h in runner.hooks if isinstance(h, PreemptionHook)][0]
    totals = {}
    _timed(hook, '_stop_agreed', totals)
    _timed(hook, '_save', totals)
    _timed(runner.train_loop, 'run_iter', totals)
    runner.train()
    iters = totals['run_iter_calls']
    rest = totals['run_iter'] - totals['_stop_agreed'] - totals.get('_save', 0)
    saves = totals.get('_save_calls', 0)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return dict(
        iters=iters,
        step_s=rest / iters,
        check_s=totals['_stop_agreed'] / iters,
        save_s=totals.get('_save', 0.0) / max(saves, 1),
        saves=saves,
        interval=interval,
        check_ratio=totals['_stop_agreed'] / rest,
        save_ratio=totals.get('_save', 0.0) / rest)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument(
        '--interval',
        type=int,
        default=5,
        help='mid-epoch checkpoint every N iterations')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--num-images', type=int, default=96)
    parser.add_argument(
        '--work-dir',
        default=None,
        help='data and checkpoints (default: a temp folder)')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    r = measure_preemption_overhead(
        ROOT,
        epochs=args.epochs,
        interval=args.interval,
        batch_size=args.batch_size,
        num_images=args.num_images,
        work_dir=args.work_dir)
    print(f'CPU step (tiny demo ViT, batch {args.batch_size}): '
          f"{r['step_s'] * 1e3:.1f} ms over {r['iters']} iterations")
    print(f'signal check (one all-reduce per iteration): '
          f"{r['check_s'] * 1e3:.3f} ms/iteration = {r['check_ratio']:.4f} "
          'x the step')
    print(f"mid-epoch checkpoint every {r['interval']} iterations: "
          f"{r['save_s'] * 1e3:.1f} ms per save ({r['saves']} saves) = "
          f"{r['save_ratio']:.4f} x the step time")
    return r


if __name__ == '__main__':
    main()
