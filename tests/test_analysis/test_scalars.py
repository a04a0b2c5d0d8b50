"""mmhybrid.utils.scalars: the one reader of mmengine's vis_data/scalars.json
(newest run or all of a resumed run, a line torn by a kill skipped)."""
import json
import os

import pytest

from mmhybrid.utils.scalars import last_scalar, read_scalars, scalars_by_iter


def _write_run(work_dir, stamp, records, torn=False):
    folder = work_dir / stamp / 'vis_data'
    os.makedirs(folder)
    with open(folder / 'scalars.json', 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in records)
        if torn:
            f.write('{"iter": 9, "lo')


def test_newest_run_by_default_every_run_on_request(tmp_path):
    _write_run(tmp_path, '20260101_000000',
               [dict(iter=1, loss=3.0),
                dict(iter=2, loss=2.0)])
    _write_run(
        tmp_path,
        '20260102_000000',
        [dict(iter=2, loss=1.5),
         dict(iter=3, loss=1.0, lr=0.1)],
        torn=True)
    assert [r['iter'] for r in read_scalars(tmp_path)] == [2, 3]
    assert [r['iter']
            for r in read_scalars(tmp_path, all_runs=True)] == [1, 2, 2, 3]
    # the resumed run's record of iteration 2 replaces the killed run's
    by_iter = scalars_by_iter(tmp_path)
    assert sorted(by_iter) == [1, 2, 3] and by_iter[2]['loss'] == 1.5
    assert last_scalar(tmp_path, 'loss') == 1.0
    assert last_scalar(tmp_path, 'accuracy/top1') is None


def test_a_run_without_scalars(tmp_path):
    assert read_scalars(tmp_path) == [] and last_scalar(tmp_path, 'x') is None
    with pytest.raises(FileNotFoundError, match='scalars.json'):
        read_scalars(tmp_path, required=True)
