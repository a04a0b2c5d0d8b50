"""mmengine's ``Runner`` with mmhybrid's checkpoint I/O and CPU fixes, by
overriding its own methods (no process-wide patch)."""
import os.path as osp
from typing import Callable, Dict, Optional, Union

import torch
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model
from mmpretrain.registry import RUNNERS

from ...utils.checkpoint import check_finite_weights
from .. import safe_io
from .helpers import no_cuda_set_device, resolve_scoped_collate

_MMENGINE_DDP = ('MMDistributedDataParallel',
                 'mmengine.MMDistributedDataParallel')


@RUNNERS.register_module()
class HybridRunner(Runner):
    """mmengine's ``Runner`` with mmhybrid's checkpoint and CPU rules.

    Same arguments and config keys as ``Runner``; on top, it

    * reads checkpoints (``load_from``, ``resume``, ``--resume``) only with
      :func:`mmhybrid.utils.checkpoint.load_checkpoint_file` (weights-only with
      mmhybrid's allow-list; a file that would run code is refused);
    * saves local checkpoints atomically (temporary file, fsync, rename:
      :class:`~mmhybrid.engine.safe_io.AtomicLocalBackend`) and refuses to save
      non-finite weights;
    * resumes ``--resume`` without a path from the newest *readable*
      checkpoint (:func:`~mmhybrid.engine.safe_io.find_latest_checkpoint`);
    * builds collate functions a config scoped with ``_scope_`` (configs whose
      ``_base_`` comes from another package);
    * starts a distributed run on a machine without CUDA (gloo): mmengine's
      launchers call ``torch.cuda.set_device`` and wrap the model with
      ``device_ids``, both of which fail there.

    Use it with ``runner_type='mmpretrain.HybridRunner'`` (mmhybrid's
    ``tools/train.py`` and ``tools/test.py`` build it for configs without a
    ``runner_type``). Two fixes need a process-wide patch and come only from
    :func:`mmhybrid.enable_stack_fixes` (:attr:`PROCESS_FIXES`: the entry
    points apply them): safe ``CheckpointLoader`` schemes for mmengine's free
    functions (``init_cfg=dict(type='Pretrained')``) and an atomic
    ``last_checkpoint`` pointer (without it a damaged pointer is still skipped
    by the resume rule above).
    """

    #: the stack fixes a HybridRunner run still needs from the entry point
    PROCESS_FIXES = ('safe_checkpoint_loaders', 'atomic_last_checkpoint')

    # ------------------------------------------------------------ data
    @staticmethod
    def build_dataloader(dataloader,
                         seed: Optional[int] = None,
                         diff_rank_seed: bool = False):
        """``Runner.build_dataloader`` with a ``_scope_``-d ``collate_fn``
        looked up in its scope (mmengine would pass ``_scope_`` on to it)."""
        return Runner.build_dataloader(
            resolve_scoped_collate(dataloader),
            seed=seed,
            diff_rank_seed=diff_rank_seed)

    # ----------------------------------------------------- distributed
    def setup_env(self, env_cfg: Dict) -> None:
        """``Runner.setup_env``; without CUDA, mmengine's launchers skip
        ``torch.cuda.set_device`` (for the duration of this call only)."""
        if self.distributed and not torch.cuda.is_available():
            with no_cuda_set_device():
                return super().setup_env(env_cfg)
        return super().setup_env(env_cfg)

    def wrap_model(self, model_wrapper_cfg: Optional[Dict],
                   model: torch.nn.Module):
        """``Runner.wrap_model``; without CUDA, mmengine's default DDP wrapper
        becomes :class:`~mmhybrid.engine.CPUDistributedDataParallel`."""
        if (self.distributed and not torch.cuda.is_available()
                and not is_model_wrapper(model)):
            if model_wrapper_cfg is None:
                # mmengine's defaults for its own wrapper
                model_wrapper_cfg = dict(
                    broadcast_buffers=False,
                    find_unused_parameters=self.cfg.get(
                        'find_unused_parameters', False))
            model_wrapper_cfg = dict(model_wrapper_cfg)
            if model_wrapper_cfg.get(
                    'type', 'MMDistributedDataParallel') in _MMENGINE_DDP:
                model_wrapper_cfg['type'] = \
                    'mmpretrain.CPUDistributedDataParallel'
        return super().wrap_model(model_wrapper_cfg, model)

    # ----------------------------------------------------- checkpoints
    def load_checkpoint(self,
                        filename: str,
                        map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]):
        """``Runner.load_checkpoint`` reading through the safe loader (the
        rest, hooks included, as mmengine does it)."""
        checkpoint = safe_io.load_any(filename, map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(
            self.model) else self.model
        checkpoint = _load_checkpoint_to_model(
            model, checkpoint, strict, revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    def load_or_resume(self) -> None:
        """``--resume`` without a path: the newest readable checkpoint."""
        if not self._has_loaded and self._resume and self._load_from is None:
            resume_from = safe_io.find_latest_checkpoint(self.work_dir)
            self.logger.info(
                f'Auto resumed from the latest checkpoint {resume_from}.')
            if resume_from is not None:
                self.resume(resume_from)
                self._has_loaded = True
            return
        super().load_or_resume()

    def save_checkpoint(self,
                        out_dir: str,
                        filename: str,
                        file_client_args: Optional[dict] = None,
                        save_optimizer: bool = True,
                        save_param_scheduler: bool = True,
                        meta: Optional[dict] = None,
                        by_epoch: bool = True,
                        backend_args: Optional[dict] = None):
        """``Runner.save_checkpoint``: refuses non-finite weights (on every
        rank: under DDP they are the same, so all ranks stop together); a
        local file is written atomically."""
        model = self.model.module if is_model_wrapper(
            self.model) else self.model
        check_finite_weights(model.state_dict(), osp.join(out_dir, filename))
        if (file_client_args is None and backend_args is None
                and safe_io._is_local(out_dir, None, None)):
            backend_args = dict(backend=safe_io.ATOMIC_BACKEND)
        return super().save_checkpoint(out_dir, filename, file_client_args,
                                       save_optimizer, save_param_scheduler,
                                       meta, by_epoch, backend_args)
