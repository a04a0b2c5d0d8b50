"""Reading the per-iteration records mmengine's visualizer writes to
``WORK_DIR/<timestamp>/vis_data/scalars.json`` (one JSON object a line)."""
import glob
import json
import os.path as osp
from typing import Dict, List, Optional


def scalars_files(work_dir: str) -> List[str]:
    """Every ``scalars.json`` of a run, oldest first (a resumed run writes a
    new timestamped folder)."""
    return sorted(
        glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'scalars.json')))


def read_scalars(work_dir: str,
                 all_runs: bool = False,
                 required: bool = False) -> List[dict]:
    """The records of a run's newest ``scalars.json`` (of all of them, oldest
    first, with ``all_runs``).

    A line cut short by a killed process is skipped.

    Args:
        work_dir (str): The run's work directory.
        all_runs (bool): Read every timestamped folder, not just the newest.
            Defaults to False.
        required (bool): Raise FileNotFoundError when there is none (else
            return ``[]``). Defaults to False.

    Returns:
        list[dict]: The records in file order.
    """
    files = scalars_files(work_dir)
    if not files and required:
        raise FileNotFoundError(f'{work_dir}: no */vis_data/scalars.json')
    records = []
    for path in files if all_runs else files[-1:]:
        with open(path) as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
    return records


def scalars_by_iter(work_dir: str,
                    key: str = 'loss',
                    all_runs: bool = True) -> Dict[int, dict]:
    """Training records that log ``key``, by iteration; with ``all_runs`` a
    resumed run's later record of an iteration replaces the earlier one."""
    return {r['iter']: r for r in read_scalars(work_dir, all_runs) if key in r}


def last_scalar(work_dir: str, key: str) -> Optional[float]:
    """The last logged value of ``key`` in the newest ``scalars.json`` (None if
    never logged)."""
    value = None
    for rec in read_scalars(work_dir):
        if key in rec:
            value = rec[key]
    return value
