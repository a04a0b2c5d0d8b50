"""One rank of ``test_teacher_files``: run by torchrun (gloo, CPU).

Builds two FrozenTeachers whose checkpoints are URLs, the first served, the
second a 404, and writes what it got into ``OUT_DIR``: ``rank{r}.pth`` (the
first teacher's weights) and ``rank{r}_404.txt`` (the second one's error).

The default process group is made with a timeout of ``PG_TIMEOUT`` seconds,
shorter than a download, as NCCL's watchdog would be against a large teacher
file: the ranks that wait must not depend on it.

Usage: ``torchrun --nproc_per_node 2 dist_teacher_worker.py URL BAD_URL HUB_DIR
OUT_DIR PG_TIMEOUT``
"""
import os.path as osp
import sys
from datetime import timedelta

import torch
import torch.distributed as dist


def main(url: str, bad_url: str, hub_dir: str, out_dir: str,
         pg_timeout: str) -> None:
    dist.init_process_group(
        'gloo', timeout=timedelta(seconds=float(pg_timeout)))
    rank = dist.get_rank()
    torch.hub.set_dir(hub_dir)
    from mmpretrain.registry import MODELS

    import mmhybrid  # noqa: F401  (registers FrozenTeacher)
    from mmhybrid.testing import tiny_vit_cfg

    def teacher(checkpoint):
        return MODELS.build(
            dict(
                type='FrozenTeacher',
                backbone=tiny_vit_cfg(),
                checkpoint=checkpoint))

    good = teacher(url)
    good.init_weights()
    torch.save(good.backbone.state_dict(), osp.join(out_dir,
                                                    f'rank{rank}.pth'))
    try:
        teacher(bad_url).init_weights()
        msg = 'no error'
    except Exception as e:  # the test checks the type and the text
        msg = f'{type(e).__name__}: {e}'
    with open(osp.join(out_dir, f'rank{rank}_404.txt'), 'w') as f:
        f.write(msg)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == '__main__':
    main(*sys.argv[1:6])
