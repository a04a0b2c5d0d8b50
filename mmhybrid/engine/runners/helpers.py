"""Runner helpers for what mmengine gets wrong on this stack.

:class:`~mmhybrid.engine.HybridRunner` and
:class:`~mmhybrid.engine.CPUDistributedDataParallel` call them from their own
methods; the process-wide stack fixes of :mod:`mmhybrid.engine.stack_fixes`
wrap mmengine's functions with the same helpers.
"""
import contextlib
import copy

import torch


@contextlib.contextmanager
def no_cuda_set_device():
    """``torch.cuda.set_device`` does nothing inside this block.

    mmengine's ``pytorch``/``slurm`` launchers call it unconditionally, which
    fails on a machine without CUDA (a gloo run on CPUs). Used only there, for
    the duration of mmengine's ``init_dist``.
    """
    original = torch.cuda.set_device
    torch.cuda.set_device = lambda device: None
    try:
        yield
    finally:
        torch.cuda.set_device = original


def resolve_scoped_collate(loader_cfg):
    """``loader_cfg`` with a scoped ``collate_fn`` dict resolved.

    A config whose ``_base_`` comes from another package (``mmpretrain::_base_/
    datasets/imagenet_bs512_mae.py``, as the flagship's does) gets ``_scope_``
    written into every dict with a ``type``, ``collate_fn`` included;
    mmengine's ``build_dataloader`` pops ``type`` but passes ``_scope_`` on to
    the collate function (``default_collate() got an unexpected keyword
    argument '_scope_'``). The function is looked up in the scope it names
    instead.
    """
    collate = loader_cfg.get('collate_fn') if hasattr(loader_cfg,
                                                      'get') else None
    if not isinstance(collate, dict) or '_scope_' not in collate:
        return loader_cfg
    from mmengine.registry import FUNCTIONS
    collate = dict(collate)
    scope = collate.pop('_scope_')
    fn = collate.get('type')
    if isinstance(fn, str):
        with FUNCTIONS.switch_scope_and_registry(scope) as registry:
            found = registry.get(fn)
        if found is None:
            raise KeyError(
                f'collate_fn type {fn!r} is not registered in scope '
                f'{scope!r} (or its parents) of the FUNCTIONS registry')
        collate['type'] = found
    loader_cfg = copy.copy(loader_cfg)
    loader_cfg['collate_fn'] = collate
    return loader_cfg


def drop_cpu_device_ids(module: torch.nn.Module, kwargs: dict) -> dict:
    """DDP keyword arguments without ``device_ids``/``output_device`` when the
    module lives on the CPU (DDP refuses device ids for CPU modules; mmengine
    passes ``[LOCAL_RANK]`` unconditionally)."""
    params = list(module.parameters())
    if params and params[0].device.type == 'cpu':
        kwargs = dict(kwargs)
        kwargs.pop('device_ids', None)
        kwargs.pop('output_device', None)
    return kwargs
