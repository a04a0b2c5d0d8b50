"""Teacher files given by URL: one download per node.

A local HTTP server on 127.0.0.1 serves a tiny teacher checkpoint and counts
the GET requests it answers; nothing else is contacted.
"""
import collections
import contextlib
import functools
import http.server
import os
import os.path as osp
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
from mmpretrain.registry import MODELS

from mmhybrid.testing import tiny_vit_cfg
from mmhybrid.utils.checkpoint import CheckpointError
from mmhybrid.utils.teacher_files import cached_file, fetch_teacher_file

WORKER = osp.join(osp.dirname(__file__), 'dist_teacher_worker.py')


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder and counts the GET requests per path; each answer takes
    ``delay`` seconds, so that downloads by several ranks would overlap (a rank
    that started late would otherwise find the file cached)."""

    def __init__(self, *args, counts, delay, **kwargs):
        self.counts = counts
        self.delay = delay
        super().__init__(*args, **kwargs)

    def do_GET(self):
        self.counts[self.path] += 1
        time.sleep(self.delay)
        super().do_GET()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _serve(folder, delay=0.0):
    """``(base URL, GET counts by path)`` of a server on 127.0.0.1."""
    counts = collections.Counter()
    handler = functools.partial(
        _CountingHandler, counts=counts, delay=delay, directory=str(folder))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}', counts
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def _hub_dir(path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(path))
    try:
        yield
    finally:
        torch.hub.set_dir(old)


def _served_teacher(folder):
    """An mmpretrain-layout teacher file; returns its backbone tensors."""
    torch.manual_seed(5)
    vit = MODELS.build(tiny_vit_cfg())
    with torch.no_grad():
        for p in vit.parameters():
            p.normal_()
    sd = vit.state_dict()
    torch.save(
        {
            'state_dict': {
                f'backbone.{k}': v
                for k, v in sd.items()
            },
            'meta': {}
        }, folder / 'tiny_teacher.pth')
    return sd


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_download_once_and_share_the_file(tmp_path):
    """torchrun, 2 gloo ranks on one node: one GET, identical weights on both
    ranks; a 404 is the same clear error on both ranks, not a hang.

    Each download takes 5 s and the job's process group times out after 2 s (as
    NCCL's watchdog would against a 1 GB teacher): the rank that waits does so
    in a group with the download timeout, not the job's.
    """
    served = tmp_path / 'served'
    served.mkdir()
    want = _served_teacher(served)
    out = tmp_path / 'out'
    out.mkdir()
    env = dict(
        os.environ,
        OMP_NUM_THREADS='1',
        no_proxy='127.0.0.1',
        NO_PROXY='127.0.0.1',
        PYTHONPATH=os.pathsep.join([
            osp.dirname(
                osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))),
            os.environ.get('PYTHONPATH', '')
        ]))
    with _serve(served, delay=5.0) as (base, counts):
        url = f'{base}/tiny_teacher.pth'
        bad_url = f'{base}/no_such_teacher.pth'
        proc = subprocess.run([
            sys.executable, '-m', 'torch.distributed.run', '--nnodes', '1',
            '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
            '--master_port',
            str(_free_port()), WORKER, url, bad_url,
            str(tmp_path / 'hub'),
            str(out), '2'
        ],
                              capture_output=True,
                              text=True,
                              timeout=300,
                              env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert counts['/tiny_teacher.pth'] == 1
    assert counts['/no_such_teacher.pth'] == 1
    ranks = [
        torch.load(out / f'rank{r}.pth', weights_only=True) for r in (0, 1)
    ]
    for got in ranks:
        assert set(got) == set(want)
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    for r in (0, 1):
        msg = (out / f'rank{r}_404.txt').read_text()
        assert msg.startswith('CheckpointError: could not download the '
                              f'teacher file {bad_url} on rank 0')
        assert '404' in msg and '\n' not in msg


def test_404_is_a_clear_error_naming_the_url(tmp_path):
    served = tmp_path / 'served'
    served.mkdir()
    with _serve(served) as (base, counts), _hub_dir(tmp_path / 'hub'):
        url = f'{base}/clip_vit_base_16.pth.tar'
        teacher = MODELS.build(
            dict(
                type='FrozenTeacher', backbone=tiny_vit_cfg(), checkpoint=url))
        with pytest.raises(CheckpointError) as e:
            teacher.init_weights()
        assert not osp.exists(cached_file(url))
    msg = str(e.value)
    assert msg.startswith(f'could not download the teacher file {url}: ')
    assert '404' in msg and '\n' not in msg
    assert counts['/clip_vit_base_16.pth.tar'] == 1


def test_cached_file_is_not_downloaded_again(tmp_path):
    served = tmp_path / 'served'
    served.mkdir()
    want = _served_teacher(served)
    with _serve(served) as (base, counts), _hub_dir(tmp_path / 'hub'):
        url = f'{base}/tiny_teacher.pth'
        for _ in range(2):
            teacher = MODELS.build(
                dict(
                    type='FrozenTeacher',
                    backbone=tiny_vit_cfg(),
                    checkpoint=url))
            teacher.init_weights()
        path = fetch_teacher_file(url)
    assert counts['/tiny_teacher.pth'] == 1
    assert path == str(tmp_path / 'hub' / 'checkpoints' / 'tiny_teacher.pth')
    for k, v in teacher.backbone.state_dict().items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=0)


def test_local_path_is_returned_as_it_is(tmp_path):
    path = str(tmp_path / 'teacher.pth')
    assert fetch_teacher_file(path) == path


@pytest.mark.parametrize('raw,want', [(None, 3 * 3600.0), ('', 3 * 3600.0),
                                      ('90', 90.0), ('0.5', 0.5)])
def test_download_timeout_from_the_environment(monkeypatch, raw, want):
    from mmhybrid.utils.teacher_files import (DOWNLOAD_TIMEOUT_ENV,
                                              download_timeout)
    if raw is None:
        monkeypatch.delenv(DOWNLOAD_TIMEOUT_ENV, raising=False)
    else:
        monkeypatch.setenv(DOWNLOAD_TIMEOUT_ENV, raw)
    assert download_timeout() == want


@pytest.mark.parametrize('raw', ['0', '-5', 'soon', 'inf', 'nan'])
def test_a_bad_download_timeout_is_one_line_naming_it(monkeypatch, raw):
    from mmhybrid.utils.teacher_files import download_timeout
    monkeypatch.setenv('MMHYBRID_DOWNLOAD_TIMEOUT', raw)
    with pytest.raises(ValueError) as err:
        download_timeout()
    assert str(err.value) == (
        f'MMHYBRID_DOWNLOAD_TIMEOUT={raw!r}: expected a positive number of '
        'seconds to wait for teacher downloads')
