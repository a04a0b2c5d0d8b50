"""Run one downstream benchmark from a pretraining checkpoint, in one command.

    python tools/benchmarks/downstream.py TASK PRETRAIN
        [--launcher ...] [--gpus N] [--partition P] [--work-dir DIR]
        [--dry-run] [-- train.py args ...]

What it does: :mod:`mmhybrid.downstream.launcher`.

The shell wrappers ``dist_downstream.sh`` and ``slurm_downstream.sh`` call
this script.
"""
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if osp.isdir(osp.join(ROOT, 'mmhybrid')) and sys.path[:1] != [ROOT]:
    sys.path.insert(0, ROOT)  # this checkout's mmhybrid, not another one's

if __name__ == '__main__':
    from mmhybrid.downstream.launcher import main
    sys.exit(main())
