"""One downstream benchmark from a pretraining checkpoint, in one command.

The logic of ``tools/benchmarks/downstream.py`` (and of its shell wrappers
``dist_downstream.sh`` / ``slurm_downstream.sh``)::

    python tools/benchmarks/downstream.py TASK PRETRAIN
        [--launcher ...] [--gpus N] [--partition P] [--work-dir DIR]
        [--dry-run] [-- train.py args ...]

1. converts ``PRETRAIN`` (a Hybrid Distill checkpoint: ``backbone.*`` +
   ``neck.*``) with the task's converter, checking the keys strictly against
   the task config's backbone and resizing the position embedding to its input
   size (``WORK_DIR/pretrain_<library>.pth``);
2. trains the task config with ``model.backbone.init_cfg.checkpoint`` set to
   the converted file: ``tools/train.py`` (``--launcher none``),
   ``tools/dist_train.sh`` (``pytorch``: one node, ``--gpus`` processes;
   NNODES, NODE_RANK, MASTER_ADDR, PORT as for torchrun) or
   ``tools/slurm_train.sh`` (``slurm``: ``--gpus`` tasks on ``--partition``;
   GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS as there). The evaluation at the end
   of training (top-1, mIoU, COCO box/mask AP) is the benchmark's number; it is
   in ``WORK_DIR/<timestamp>/``.
"""
import argparse
import os
import os.path as osp
import shlex
import subprocess
import sys
from typing import List, Optional, Tuple


def _tree_root() -> str:
    """The folder holding ``configs/`` and ``tools/``: the checkout this
    package sits in, or the package's ``.mim`` folder in a wheel install."""
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    checkout = osp.dirname(package)
    if osp.isdir(osp.join(checkout, 'configs')) and \
            osp.isdir(osp.join(checkout, 'tools')):
        return checkout
    return osp.join(package, '.mim')


ROOT = _tree_root()
BENCH = 'configs/benchmarks'

#: task -> (config relative to the repository root, converter target)
TASKS = {
    'in1k-ft': (
        'mmpretrain/vit-base-p16_hybrid-distill-300e-pre_8xb128-coslr-100e_in1k.py',  # noqa: E501
        'mmpretrain'),
    'in1k-ft-l': (
        'mmpretrain/vit-large-p16_hybrid-distill-300e-pre_8xb128-coslr-50e_in1k.py',  # noqa: E501
        'mmpretrain'),
    'in1k-linear': (
        'mmpretrain/vit-base-p16_hybrid-distill-300e-pre_8xb2048-linear-coslr-90e_in1k.py',  # noqa: E501
        'mmpretrain'),
    'ade20k': (
        'mmseg/upernet_vit-base-p16_hybrid-distill-300e-pre_8xb2-160k_ade20k-512x512.py',  # noqa: E501
        'mmseg'),
    'coco': (
        'mmdet/mask-rcnn_vit-base-p16_hybrid-distill-300e-pre_sfp_8xb8-lsj-100e_coco.py',  # noqa: E501
        'mmdet'),
    'coco-25e': (
        'mmdet/mask-rcnn_vit-base-p16_hybrid-distill-300e-pre_sfp_8xb8-lsj-25e_coco.py',  # noqa: E501
        'mmdet'),
    'coco-vitdet': (
        'mmdet/mask-rcnn_vitdet-base-p16_hybrid-distill-300e-pre_sfp_8xb8-lsj-100e_coco.py',  # noqa: E501
        'mmdet'),
    'cifar100': (
        'mmpretrain/vit-base-p16_hybrid-distill-300e-pre_8xb96-coslr-1000e_cifar100.py',  # noqa: E501
        'mmpretrain'),
    'cars': (
        'mmpretrain/vit-base-p16_hybrid-distill-300e-pre_8xb96-coslr-1000e_stanfordcars.py',  # noqa: E501
        'mmpretrain'),
    'inat19': (
        'mmpretrain/vit-base-p16_hybrid-distill-300e-pre_8xb96-coslr-360e_inat2019.py',  # noqa: E501
        'mmpretrain'),
    # CPU miniatures on the generated shapes data (used by the tests)
    'demo-ft': ('demo/vit-tiny-p8_hybrid-distill-300i-pre_1xb8-4i_shapes.py',
                'mmpretrain'),
    'demo-linear':
    ('demo/vit-tiny-p8_hybrid-distill-300i-pre_1xb16-linear-4i_shapes.py',
     'mmpretrain'),
    'demo-ade20k': (
        'demo/upernet_vit-tiny-p8_hybrid-distill-300i-pre_1xb4-4i_shapes-64x64.py',  # noqa: E501
        'mmseg'),
    'demo-coco': (
        'demo/mask-rcnn_vit-tiny-p8_hybrid-distill-300i-pre_sfp_1xb2-4i_shapes.py',  # noqa: E501
        'mmdet'),
    'demo-coco-vitdet': (
        'demo/mask-rcnn_vitdet-tiny-p8_hybrid-distill-300i-pre_sfp_1xb2-4i_shapes.py',  # noqa: E501
        'mmdet'),
    'demo-cifar100':
    ('demo/vit-tiny-p8_hybrid-distill-300i-pre_1xb8-4i_cifar100.py',
     'mmpretrain'),
    'demo-cars':
    ('demo/vit-tiny-p8_hybrid-distill-300i-pre_1xb8-4i_stanfordcars.py',
     'mmpretrain'),
    'demo-inat19':
    ('demo/vit-tiny-p8_hybrid-distill-300i-pre_1xb8-4i_inat2019.py',
     'mmpretrain'),
}
TASKS = {k: (f'{BENCH}/{cfg}', target) for k, (cfg, target) in TASKS.items()}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description='Convert a pretraining checkpoint and run one downstream '
        'benchmark with it.',
        epilog='Tasks: ' + ', '.join(TASKS) + '. Arguments after "--" go to '
        'tools/train.py (e.g. --cfg-options train_dataloader.batch_size=64).')
    p.add_argument(
        'task', help='a task name, or a config path (then give '
        '--target)')
    p.add_argument('pretrain', help='pretraining checkpoint (student)')
    p.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm'], default='pytorch')
    p.add_argument(
        '--gpus',
        type=int,
        default=8,
        help='processes (pytorch: on this node; slurm: in total)')
    p.add_argument('--partition', help='Slurm partition (--launcher slurm)')
    p.add_argument('--job-name', default=None, help='Slurm job name')
    p.add_argument(
        '--target',
        choices=['mmpretrain', 'mmseg', 'mmdet'],
        help='converter for a config path (task names know theirs)')
    p.add_argument(
        '--work-dir',
        default=None,
        help='default: work_dirs/benchmarks/<task>/<pretrain name>')
    p.add_argument(
        '--dry-run',
        action='store_true',
        help='print the commands, run nothing')
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if '--' in argv:  # everything after the first "--" goes to tools/train.py
        cut = argv.index('--')
        argv, extra = argv[:cut], argv[cut + 1:]
    args = p.parse_args(argv)
    args.train_args = extra
    return args


def resolve(task: str, target: Optional[str] = None) -> Tuple[str, str, str]:
    """``(config path, converter target, short name)`` of a task or config."""
    if task in TASKS:
        config, tgt = TASKS[task]
        return osp.join(ROOT, config), tgt, task
    if task.endswith('.py') and osp.isfile(task):
        if target is None:
            raise SystemExit(f'{task}: give --target mmpretrain|mmseg|mmdet')
        return osp.abspath(task), target, osp.splitext(osp.basename(task))[0]
    raise SystemExit(f'unknown task {task!r}; choose one of {list(TASKS)} or '
                     'pass a config path')


def backbone_allow(config: str) -> Optional[str]:
    """The config's ``model.backbone.init_cfg.allow`` (keys the backbone's
    strict load leaves to their init), None if it has none or cannot be read
    (the conversion then reports the config)."""
    from mmengine.config import Config
    try:
        init_cfg = Config.fromfile(config).model.backbone.get('init_cfg')
    except Exception:  # noqa: BLE001  (the converter names the problem)
        return None
    return init_cfg.get('allow') if hasattr(init_cfg, 'get') else None


def build_commands(args: argparse.Namespace) -> Tuple[dict, List[str]]:
    """The conversion arguments and the training command (a list)."""
    config, target, name = resolve(args.task, args.target)
    stem = osp.splitext(osp.basename(args.pretrain))[0]
    work_dir = args.work_dir or osp.join('work_dirs', 'benchmarks', name, stem)
    converted = osp.join(work_dir, f'pretrain_{target}.pth')
    python = os.environ.get('PYTHON', sys.executable)
    train_args = [
        '--work-dir', work_dir, '--cfg-options',
        f'model.backbone.init_cfg.checkpoint={converted}', *args.train_args
    ]
    if args.launcher == 'none':
        cmd = [
            python,
            osp.join(ROOT, 'tools', 'train.py'), config, *train_args
        ]
    elif args.launcher == 'pytorch':
        cmd = [
            'bash',
            osp.join(ROOT, 'tools', 'dist_train.sh'), config,
            str(args.gpus), *train_args
        ]
    else:
        if not args.partition:
            raise SystemExit('--launcher slurm needs --partition')
        cmd = [
            'bash',
            osp.join(ROOT, 'tools', 'slurm_train.sh'), args.partition,
            args.job_name or f'hybrid-{name}', config, *train_args
        ]
    conversion = dict(
        src=args.pretrain,
        dst=converted,
        config=config,
        target=target,
        allow=backbone_allow(config))
    return conversion, cmd


def main(argv: Optional[List[str]] = None) -> int:
    """Convert, then train; ``0`` on success, the training's status else."""
    args = parse_args(argv)
    conversion, cmd = build_commands(args)
    env = dict(os.environ)
    env.setdefault('PYTHON', sys.executable)
    if args.launcher == 'slurm':
        env['GPUS'] = str(args.gpus)
    convert_args = [
        conversion['src'], conversion['dst'], '--config', conversion['config']
    ]
    if conversion['allow']:
        convert_args += ['--allow', conversion['allow']]
    print(f"convert: hybrid2{conversion['target']}.py " +
          ' '.join(shlex.quote(a) for a in convert_args))
    print('train:   ' + ' '.join(shlex.quote(c) for c in cmd))
    if args.dry_run:
        return 0
    # the converter's own command line: its report and one-line errors
    from mmhybrid.converters import cli
    status = cli.main(conversion['target'], convert_args)
    if status:
        return status
    return subprocess.call(cmd, env=env, cwd=os.getcwd())
