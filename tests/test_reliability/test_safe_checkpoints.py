"""Checkpoints cannot run code when loaded.

Crafted checkpoints whose unpickling would run code (create a marker file) are
given to every entry point that reads a checkpoint. Each must refuse the file
with an error naming it, and the payload must never run (checked after every
test by the ``_payload_never_ran`` fixture of conftest.py).

Adding an entry point (a converter or analysis tool written later): append a
``Tool(...)`` to ``TOOLS`` below with the argv that makes it read the crafted
file (``{ckpt}``, ``{data}``, ``{out}``, ``{config}`` are filled in). The
static
test ``test_no_raw_unpickling_outside_the_loader`` fails if any file under
``tools/`` or ``mmhybrid/`` reads a checkpoint without
:func:`mmhybrid.utils.checkpoint.load_checkpoint_file`.
"""
import contextlib
import functools
import http.server
import io
import os
import os.path as osp
import re
import runpy
import subprocess
import sys
import threading
from typing import NamedTuple, Tuple

import pytest
import torch

from mmhybrid.testing import DEMO_ARCH
from mmhybrid.utils.checkpoint import CheckpointError, load_checkpoint_file

REFUSED = re.compile(r'refused to load|outside the safe allow-list|'
                     r'not a readable checkpoint')


def _assert_refused(text, path):
    assert path in text, f'the error does not name {path}: {text[-1500:]}'
    assert REFUSED.search(text), text[-1500:]


# ----------------------------------------------------------- the one loader
@pytest.mark.parametrize('unpickler', ['torch', 'restricted'])
@pytest.mark.parametrize('kind', ['zip', 'legacy', 'pickle', 'getattr'])
def test_loader_refuses_code(tmp_path, rel, kind, unpickler, monkeypatch):
    """``restricted``: the unpickler of torch 2.1-2.5, forced here."""
    if unpickler == 'restricted':
        from mmhybrid.utils import allow_list
        monkeypatch.setattr(allow_list, 'torch_has_safe_globals',
                            lambda: False)
    marker = tmp_path / 'PAYLOAD_RAN'
    path = rel.write_malicious(tmp_path / f'{kind}.pth', marker, kind)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint_file(path)
    _assert_refused(str(info.value), path)
    assert not marker.exists()


def test_env_cannot_turn_safe_loading_off(tmp_path, rel, monkeypatch,
                                          stack_fixes):
    """torch's escape hatch only sets the *default*; the loader is explicit."""
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    marker = tmp_path / 'PAYLOAD_RAN'
    path = rel.write_malicious(tmp_path / 'e.pth', marker)
    with pytest.raises(CheckpointError):
        load_checkpoint_file(path)
    from mmengine.runner.checkpoint import CheckpointLoader
    with pytest.raises(CheckpointError):
        CheckpointLoader.load_checkpoint(path)
    assert not marker.exists()


# ------------------------------------------------------ mmengine's readers
def _tiny_vit(**kw):
    from mmpretrain.models import VisionTransformer
    return VisionTransformer(
        arch=dict(DEMO_ARCH), img_size=64, patch_size=8, **kw)


def _mmengine_readers():
    from mmengine.model.weight_init import PretrainedInit
    from mmengine.runner import load_checkpoint
    from mmengine.runner.checkpoint import (CheckpointLoader, _load_checkpoint,
                                            _load_checkpoint_with_prefix)
    return {
        'CheckpointLoader':
        lambda p: CheckpointLoader.load_checkpoint(p),
        '_load_checkpoint':
        lambda p: _load_checkpoint(p),
        'load_checkpoint':
        lambda p: load_checkpoint(_tiny_vit(), p),
        'with_prefix':
        lambda p: _load_checkpoint_with_prefix('backbone.', p),
        'PretrainedInit':
        lambda p: PretrainedInit(checkpoint=p, prefix='backbone.')
        (_tiny_vit()),
        'init_cfg=Pretrained':
        lambda p: _tiny_vit(
            init_cfg=dict(type='Pretrained', checkpoint=p, prefix='backbone.')
        ).init_weights(),
    }


@pytest.mark.parametrize('reader', list(_mmengine_readers()))
def test_mmengine_readers_go_through_the_loader(evil_ckpt, reader,
                                                stack_fixes):
    """With the stack fixes (what the entry points enable): mmengine's free
    readers, whatever the runner."""
    path, _ = evil_ckpt
    with pytest.raises(CheckpointError) as info:
        _mmengine_readers()[reader](path)
    _assert_refused(str(info.value), path)


def test_mmengine_reads_good_checkpoints(tmp_path, stack_fixes):
    """The override keeps mmengine's reading working (with the allow-list)."""
    from mmengine.runner import load_checkpoint
    vit = _tiny_vit()
    path = str(tmp_path / 'good.pth')
    torch.save(dict(state_dict=vit.state_dict(), meta=dict(iter=3)), path)
    ckpt = load_checkpoint(_tiny_vit(), path)
    assert ckpt['meta']['iter'] == 3


@contextlib.contextmanager
def _http_server(folder):
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()


def test_url_teacher_weights_refused(tmp_path, rel, stack_fixes):
    """Teacher weights "from the internet": downloaded, then refused."""
    marker = tmp_path / 'PAYLOAD_RAN'
    served = tmp_path / 'served'
    served.mkdir()
    rel.write_malicious(served / 'clip_b16.pth', marker)
    hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'hub'))
    try:
        with _http_server(served) as base:
            url = f'{base}/clip_b16.pth'
            from mmengine.runner.checkpoint import CheckpointLoader
            with pytest.raises(CheckpointError) as info:
                CheckpointLoader.load_checkpoint(url)
            _assert_refused(str(info.value), url)
            from mmhybrid.models.backbones.hybrid_vit import HybridViT
            from mmhybrid.vit_checkpoints import load_vit_weights
            vit = HybridViT(
                arch=dict(DEMO_ARCH),
                img_size=64,
                patch_size=8,
                out_type='raw')
            with pytest.raises(CheckpointError) as info:
                load_vit_weights(vit, url)
            _assert_refused(str(info.value), url)
    finally:
        torch.hub.set_dir(hub)
    assert not marker.exists()


@pytest.mark.parametrize('how', ['load_checkpoint', 'resume'])
def test_hybrid_runner_reads_through_the_loader(evil_ckpt, tmp_path, how,
                                                no_stack_fixes):
    """HybridRunner alone, no process-wide patch: ``load_from`` and ``--resume
    PATH`` refuse the file."""
    from mmhybrid.engine import HybridRunner
    from mmhybrid.testing.toy_runner import ToyModel

    path, _ = evil_ckpt
    runner = HybridRunner(
        model=ToyModel(), work_dir=str(tmp_path), default_scope='mmengine')
    with pytest.raises(CheckpointError) as info:
        getattr(runner, how)(path)
    _assert_refused(str(info.value), path)


# --------------------------------------------------------- tools/train.py
def test_train_resume_refuses(run_train_inprocess, tiny, tmp_path, evil_ckpt):
    path, _ = evil_ckpt
    with pytest.raises(CheckpointError) as info:
        run_train_inprocess(
            tiny.argv(tmp_path / 'w', 2, args=['--resume', path], workers=0))
    _assert_refused(str(info.value), path)


def test_train_load_from_refuses(run_train_inprocess, tiny, tmp_path,
                                 evil_ckpt):
    path, _ = evil_ckpt
    with pytest.raises(CheckpointError) as info:
        run_train_inprocess(
            tiny.argv(
                tmp_path / 'w', 2, workers=0, extra=[f'load_from={path}']))
    _assert_refused(str(info.value), path)
    assert not (tmp_path / 'w' / 'iter_1.pth').exists()


def test_train_teacher_refuses_inprocess(run_train_inprocess, tiny, tmp_path,
                                         evil_ckpt):
    path, _ = evil_ckpt
    with pytest.raises(CheckpointError) as info:
        run_train_inprocess(
            tiny.argv(
                tmp_path / 'w',
                2,
                workers=0,
                extra=[f'model.teacher_feat.checkpoint={path}']))
    _assert_refused(str(info.value), path)


def test_pretrained_init_config_refuses(run_train_inprocess, tiny, tmp_path,
                                        evil_ckpt, repo_root):
    """The linear-probe config's backbone init_cfg (type='Pretrained')."""
    path, _ = evil_ckpt
    argv = [
        'configs/demo/linear-probe_vit-tiny-p8_1xb64-200i_shapes.py',
        '--work-dir',
        str(tmp_path / 'w'), '--cfg-options',
        f'model.backbone.init_cfg.checkpoint={path}',
        f'train_dataloader.dataset.data_root={tiny.data}',
        'train_dataloader.num_workers=0', 'train_cfg.max_iters=2',
        'val_dataloader.dataset.data_root=' + tiny.data,
        'test_dataloader.dataset.data_root=' + tiny.data,
        'val_dataloader.num_workers=0'
    ]
    with pytest.raises(CheckpointError) as info:
        run_train_inprocess(argv)
    _assert_refused(str(info.value), path)


@pytest.mark.slow
def test_train_cli_teacher_refuses(repo_root, tiny, tmp_path, evil_ckpt, rel):
    """The real command line: exit 1, one ERROR line naming the file."""
    path, _ = evil_ckpt
    cmd = tiny.cmd(
        tmp_path / 'w',
        2,
        workers=0,
        extra=[f'model.teacher_rel.checkpoint={path}'])
    proc = subprocess.run(
        cmd,
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
        env=rel.env())
    assert proc.returncode == 1, proc.stderr[-3000:]
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith('ERROR:')]
    assert len(err) == 1, proc.stderr[-3000:]
    _assert_refused(err[0], path)
    assert 'Traceback' not in proc.stderr


# -------------------------------------------------- other tools (pluggable)
class Tool(NamedTuple):
    script: str  # relative to the repository root
    # filled in: {ckpt} the crafted file, {data} an image folder, {data_root}
    # the ImageNet-style root, {out} an empty folder, {config} the demo config
    argv: Tuple[str, ...]


CONFIG = 'configs/demo/hybrid-distill_vit-tiny-p8_1xb32-300i_shapes.py'
TOOLS = [
    Tool('tools/test.py', ('configs/demo/vit-tiny-p8_sup_1xb32-300i_shapes.py',
                           '{ckpt}', '--work-dir', '{out}', '--cfg-options',
                           'test_dataloader.dataset.data_root={data_root}',
                           'test_dataloader.num_workers=0')),
    Tool('tools/model_converters/hybrid2mmpretrain.py',
         ('{ckpt}', '{out}/o.pth')),
    Tool('tools/model_converters/hybrid2mmseg.py', ('{ckpt}', '{out}/o.pth')),
    Tool('tools/model_converters/hybrid2mmdet.py', ('{ckpt}', '{out}/o.pth')),
    Tool('tools/model_converters/hybrid2timm.py',
         ('{ckpt}', '{out}/o.safetensors')),
    Tool('tools/analysis/attention_stats.py',
         ('{ckpt}', '--data', '{data}', '--out', '{out}')),
    Tool('tools/analysis/visualize_masking.py',
         ('{ckpt}', '--data', '{data}', '--out', '{out}/m.png')),
]


def _run_tool_inprocess(repo_root, script, argv, monkeypatch, capsys):
    """``python script argv`` in this process; returns all text it produced
    (output, exit message, exception)."""
    monkeypatch.chdir(repo_root)
    monkeypatch.setattr(sys, 'argv', [script] + list(argv))
    monkeypatch.syspath_prepend(osp.dirname(osp.join(repo_root, script)))
    text = ''
    try:
        runpy.run_path(osp.join(repo_root, script), run_name='__main__')
    except SystemExit as e:
        text += f'\nSystemExit: {e.code}'
        assert e.code not in (0, None), 'the tool accepted the file'
    except Exception as e:  # noqa: BLE001
        text += f'\n{type(e).__name__}: {e}'
    else:
        pytest.fail(f'{script} accepted a checkpoint that runs code')
    out = capsys.readouterr()
    return out.out + out.err + text


@pytest.mark.parametrize('tool', TOOLS, ids=[t.script for t in TOOLS])
def test_tool_refuses(tool, repo_root, tiny, tmp_path, evil_ckpt, monkeypatch,
                      capsys, no_stack_fixes):
    """Each tool as a fresh process would start it: no stack fix enabled
    beforehand (the tool enables what it needs; taken back afterwards)."""
    # a renamed or removed tool must fail here, not drop out of the check
    assert osp.isfile(osp.join(repo_root, tool.script)), tool.script
    path, _ = evil_ckpt
    out = tmp_path / 'out'
    out.mkdir()
    fill = dict(
        ckpt=path,
        data=osp.join(tiny.data, 'val'),
        out=str(out),
        config=CONFIG,
        data_root=tiny.data)
    argv = [a.format(**fill) for a in tool.argv]
    text = _run_tool_inprocess(repo_root, tool.script, argv, monkeypatch,
                               capsys)
    _assert_refused(text, path)


# --------------------------------------------------------------- static scan
UNSAFE = re.compile(
    r'\btorch\.load\s*\(|\btorch\.jit\.load\s*\(|\bpickle\.loads?\s*\(|'
    r'\bUnpickler\s*\(|\bdill\b|\bjoblib\.load|\bcloudpickle\b|'
    r'allow_pickle\s*=\s*True|weights_only\s*=\s*False|'
    r'\bload_state_dict_from_url\s*\(|\bload_url\s*\(|\bload_file\s*\(|'
    r'\bsafe_open\s*\(')
# the one loader and the restricted unpickler it uses on torch < 2.6
ALLOWED = {'mmhybrid/utils/checkpoint.py', 'mmhybrid/utils/safe_unpickler.py'}


def test_no_raw_unpickling_outside_the_loader(repo_root):
    offenders = []
    for top in ('mmhybrid', 'tools'):
        for root, _, files in os.walk(osp.join(repo_root, top)):
            for f in files:
                if not f.endswith('.py'):
                    continue
                full = osp.join(root, f)
                rel_path = osp.relpath(full, repo_root)
                if rel_path in ALLOWED:
                    continue
                for i, line in enumerate(io.open(full, encoding='utf-8'), 1):
                    code = line.split('#', 1)[0]
                    quoted = code.lstrip().startswith(('"', "'"))
                    if UNSAFE.search(code) and not quoted:
                        offenders.append(f'{rel_path}:{i}: {line.strip()}')
    assert not offenders, (
        'read checkpoints only with mmhybrid.utils.checkpoint.'
        'load_checkpoint_file:\n' + '\n'.join(offenders))
