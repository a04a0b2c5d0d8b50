"""mmengine's own ``compile=True`` (it compiles the model's ``train_step``)
trains a HybridDistill config: the teachers (inference mode) and the
optimizer update (backward, step, the non-finite guard) stay outside the
compiled graph, the student and the losses inside it."""
import json
import glob
import os.path as osp
import subprocess
import sys

import pytest

CONFIG = 'configs/demo/hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py'


def _train(repo_root, work_dir, data, teachers, iters, extra=()):
    tc, tm = teachers
    cmd = [
        sys.executable, 'tools/train.py', CONFIG, '--work-dir', str(work_dir),
        '--cfg-options', f'train_dataloader.dataset.data_root={data}',
        f'model.teacher_feat.checkpoint={tc}',
        f'model.teacher_rel.checkpoint={tm}', f'train_cfg.max_iters={iters}',
        'param_scheduler.0.end=1', 'param_scheduler.1.begin=1',
        f'param_scheduler.1.end={iters}', 'train_dataloader.batch_size=8',
        'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'default_hooks.logger.interval=1',
        f'default_hooks.checkpoint.interval={iters}', *extra
    ]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    recs = {}
    for f in glob.glob(osp.join(str(work_dir), '*', 'vis_data',
                                'scalars.json')):
        for line in open(f):
            r = json.loads(line)
            if 'loss' in r:
                recs[r['iter']] = r
    return recs, proc.stdout + proc.stderr


@pytest.mark.slow
def test_mmengine_compile_trains_hybrid_distill(repo_root, tmp_path,
                                                 shapes_imagenet,
                                                 demo_teachers):
    iters = 2
    eager, _ = _train(repo_root, tmp_path / 'eager', shapes_imagenet,
                      demo_teachers, iters)
    compiled, log = _train(repo_root, tmp_path / 'compiled', shapes_imagenet,
                           demo_teachers, iters, extra=['compile=True'])
    assert 'Model has been "compiled"' in log
    assert sorted(compiled) == sorted(eager) == list(range(1, iters + 1))
    # iteration 1 keeps every token (mask ratio 0): no sampling, so the
    # compiled step must give the eager losses
    for k in ('loss_feat', 'loss_rel'):
        assert compiled[1][k] == pytest.approx(eager[1][k], rel=1e-4), k
    # later iterations sample kept tokens (the compiled graph draws its own
    # random numbers): masked and finite
    for it in range(2, iters + 1):
        assert compiled[it]['mask_ratio'] == eager[it]['mask_ratio'] > 0
        for k in ('loss_feat', 'loss_rel'):
            assert 0 < compiled[it][k] < 10, (it, k, compiled[it][k])
