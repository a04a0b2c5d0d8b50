"""k-NN top-1 of the student's frozen features during training."""
import copy
import logging
import time
from numbers import Integral, Real
from typing import Any, List, Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmpretrain.registry import HOOKS

from ...utils.problems import Problem, choice_problems, raise_problems
from ..knn import FEATURES, extract_features, pool_features, subset_indices
from .monitor_inputs import (eval_mode, input_norm, module_device, normalize,
                             rgb_images, unwrap_model)

DATA_BATCH = Optional[dict]


def _is_int(v: Any) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _size_problems(key: str, size: Any, allow_none: bool) -> List[Problem]:
    if size is None and allow_none:
        return []
    if _is_int(size) and size >= 1:
        return []
    if _is_real(size) and not _is_int(size) and 0.0 < size <= 1.0:
        return []
    return [
        Problem(
            key, size, 'expected a fraction in (0, 1] or a count >= 1' +
            (' (None: all)' if allow_none else ''))
    ]


def knn_monitor_problems(interval: Any,
                         k: Any,
                         temperature: Any,
                         bank_size: Any,
                         val_size: Any = None,
                         feature: Any = 'cls',
                         batch_size: Any = 64,
                         prefix: str = '') -> List[Problem]:
    """The one check of :class:`KNNMonitorHook`'s options: its constructor
    raises on it, the preflight reports it with config keys.

    Args:
        interval, k, temperature, bank_size, val_size, feature, batch_size:
            As the hook takes them.
        prefix (str): Put before each key (``'custom_hooks[2].'``).
    """
    problems = []
    for key, v in (('interval', interval), ('k', k), ('batch_size',
                                                      batch_size)):
        if not (_is_int(v) and v >= 1):
            problems.append(
                Problem(f'{prefix}{key}', v, 'expected an integer >= 1'))
    if not (_is_real(temperature) and temperature > 0):
        problems.append(
            Problem(f'{prefix}temperature', temperature,
                    'expected a number > 0'))
    problems += _size_problems(f'{prefix}bank_size', bank_size, False)
    problems += _size_problems(f'{prefix}val_size', val_size, True)
    problems += choice_problems(f'{prefix}feature', feature, FEATURES)
    return problems


@HOOKS.register_module()
class KNNMonitorHook(Hook):
    """DINO's k-NN top-1 of the student's frozen features, every N epochs.

    Each evaluation encodes a train-feature bank (an evenly spaced subset of
    ``train_dataset``) and the queries (``val_dataset``) with the student
    backbone in eval mode, takes the [CLS] token (or the mean patch token) of
    its last layer, and classifies each query by the temperature-weighted
    votes of its ``k`` most cosine-similar bank features
    (:mod:`mmhybrid.engine.knn`, the implementation ``tools/analysis/
    knn_eval.py`` runs too). Distributed: each rank encodes its shard of both
    sets and the features are gathered, so every rank computes the top-1 of
    the whole sets, the number one process would give.

    Logged as ``knn/top1`` (percent) at the evaluation's iteration: in the
    message hub (other hooks, the checkpoint's message hub) and through the
    visualizer, so every backend (``scalars.json``, TensorBoard, W&B) shows it;
    plus one INFO line.

    Why a hook and not an evaluator metric: a metric only sees the outputs of
    the val loop's batches, while k-NN needs a second pass over a train bank
    with the same frozen model; the self-supervised configs (the flagship
    included) have no val loop at all, and a hook adds the evaluation without
    giving them one (``val_cfg``/``val_evaluator``) or changing what
    ``runner.val()`` means.

    Args:
        train_dataset (dict, optional): The bank's dataset config (labels
            needed), with a deterministic pipeline. Default: the run's
            ``train_dataloader.dataset`` with ``pipeline`` (or the pipeline
            of ``val_dataset`` or of the ``val_dataloader``) instead of its
            own, so the bank follows the run's data (``--cfg-options
            train_dataloader.dataset.data_root=...``).
        val_dataset (dict, optional): The queries' dataset config. Default:
            the bank's dataset config updated with ``val_overrides`` when
            given (ImageNet: ``dict(split='val')``), else the run's
            ``val_dataloader.dataset``.
        interval (int): Evaluate every ``interval`` epochs (``by_epoch``) or
            iterations, and at the end of training. Defaults to 10.
        by_epoch (bool): Count ``interval`` in epochs. With an
            iteration-based loop (one "epoch") that means at the end only.
            Defaults to True.
        bank_size (int | float): Bank images: a fraction of
            ``train_dataset`` or a count. Defaults to 0.1.
        val_size (int | float, optional): Query images likewise; None: all.
        k (int): Neighbours. Defaults to 20.
        temperature (float): Vote temperature. Defaults to 0.07.
        feature (str): ``'cls'`` or ``'mean'`` (patch tokens). Defaults to
            ``'cls'``.
        pipeline (list[dict], optional): Pipeline for the default bank.
        val_overrides (dict, optional): What makes the queries' dataset of
            the bank's (see ``val_dataset``).
        batch_size (int): Images per forward pass per rank. Defaults to 64.
        num_workers (int): Dataloader workers. Defaults to 4.
    """
    priority = 'LOW'

    def __init__(self,
                 train_dataset: Optional[dict] = None,
                 val_dataset: Optional[dict] = None,
                 interval: int = 10,
                 by_epoch: bool = True,
                 bank_size=0.1,
                 val_size=None,
                 k: int = 20,
                 temperature: float = 0.07,
                 feature: str = 'cls',
                 pipeline: Optional[list] = None,
                 val_overrides: Optional[dict] = None,
                 batch_size: int = 64,
                 num_workers: int = 4) -> None:
        raise_problems(
            'KNNMonitorHook',
            knn_monitor_problems(interval, k, temperature, bank_size, val_size,
                                 feature, batch_size))
        self.train_dataset_cfg = train_dataset
        self.val_dataset_cfg = val_dataset
        self.interval = interval
        self.by_epoch = by_epoch
        self.bank_size = bank_size
        self.val_size = val_size
        self.k = k
        self.temperature = temperature
        self.feature = feature
        self.pipeline = pipeline
        self.val_overrides = val_overrides
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._sets = None
        self._disabled = False
        self._last_step = None
        self.history: List[tuple] = []  # (step, top1)

    # ----------------------------------------------------------------- data
    def _dataset_cfgs(self, runner):
        cfg = runner.cfg

        def loader_dataset(name):
            loader = cfg.get(name) if hasattr(cfg, 'get') else None
            return copy.deepcopy(loader.get('dataset')) if loader else None

        val_loader = loader_dataset('val_dataloader')
        train = copy.deepcopy(self.train_dataset_cfg)
        if train is None:
            train = loader_dataset('train_dataloader')
            pipeline = (
                self.pipeline or (self.val_dataset_cfg or {}).get('pipeline')
                or (val_loader or {}).get('pipeline'))
            if train is None or pipeline is None:
                raise ValueError(
                    'no train_dataset, and no train_dataloader.dataset and '
                    'pipeline (or val_dataset / val_dataloader pipeline) to '
                    'make it of')
            train['pipeline'] = copy.deepcopy(pipeline)
        val = copy.deepcopy(self.val_dataset_cfg)
        if val is None and self.val_overrides:
            val = copy.deepcopy(train)
            val.update(copy.deepcopy(self.val_overrides))
        val = val or val_loader
        if val is None:
            raise ValueError('no val_dataset, val_overrides or '
                             'val_dataloader')
        return train, val

    def _build_sets(self, runner):
        from mmpretrain.registry import DATASETS
        train_cfg, val_cfg = self._dataset_cfgs(runner)
        sets, self._full_sizes = [], []
        for cfg, size in ((train_cfg, self.bank_size), (val_cfg,
                                                        self.val_size)):
            dataset = DATASETS.build(cfg)
            self._full_sizes.append(len(dataset))
            indices = list(subset_indices(len(dataset), size))
            if len(indices) < len(dataset) and hasattr(dataset, 'get_subset_'):
                # keep only the subset's annotations (ImageNet's 1.28 M train
                # entries on every rank otherwise)
                dataset.get_subset_(indices)
                indices = list(range(len(dataset)))
            sets += [dataset, indices]
        return tuple(sets)

    # ----------------------------------------------------------------- hooks
    def before_train(self, runner) -> None:
        try:
            self._sets = self._build_sets(runner)
        except (AssertionError, KeyError, OSError, ValueError) as e:
            # a monitor must not end a run: say why, once, and stand aside
            self._disabled = True
            print_log(
                f'KNNMonitorHook: no k-NN evaluation in this run: the bank '
                f'or query dataset cannot be built ({type(e).__name__}: '
                f'{e})',
                logger='current',
                level=logging.WARNING)
            return
        _, bank_idx, _, val_idx = self._sets
        num_train, num_val = self._full_sizes
        print_log(
            f'KNNMonitorHook: k-NN (k={self.k}, T={self.temperature}, '
            f'{self.feature} feature) every {self.interval} '
            f"{'epochs' if self.by_epoch else 'iterations'}: bank "
            f'{len(bank_idx)} of {num_train} train images, {len(val_idx)} '
            f'of {num_val} val images',
            logger='current')

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: DATA_BATCH = None,
                         outputs=None) -> None:
        if not self.by_epoch and self.every_n_train_iters(
                runner, self.interval):
            self.evaluate(runner, runner.iter + 1)

    def after_train_epoch(self, runner) -> None:
        last = runner.iter >= runner.max_iters or (runner.epoch + 1
                                                   >= runner.max_epochs)
        if last or (self.by_epoch
                    and self.every_n_epochs(runner, self.interval)):
            self.evaluate(runner, runner.iter)

    # -------------------------------------------------------------- evaluate
    def evaluate(self, runner, step: int) -> Optional[float]:
        """k-NN top-1 (%) of the current student, logged at ``step`` (None when
        the hook is disabled)."""
        if self._disabled:
            return None
        if step == self._last_step:
            return self.history[-1][1]
        if self._sets is None:
            self._sets = self._build_sets(runner)
        t0 = time.time()
        model = unwrap_model(runner.model)
        backbone = model.backbone
        mean, std, to_rgb = input_norm(model.data_preprocessor)
        device = module_device(backbone)

        def encode(batch):
            x = normalize(
                rgb_images(batch['inputs'], to_rgb), mean, std, device)
            return pool_features(backbone(x), self.feature)

        train, bank_idx, val, val_idx = self._sets
        from ..knn import knn_top1
        with eval_mode(backbone):
            bank, bank_labels = extract_features(encode, train,
                                                 self.batch_size,
                                                 self.num_workers, bank_idx)
            query, query_labels = extract_features(encode, val,
                                                   self.batch_size,
                                                   self.num_workers, val_idx)
        top1 = knn_top1(bank, bank_labels, query, query_labels, self.k,
                        self.temperature)
        self._last_step = step
        self.history.append((step, top1))
        runner.message_hub.update_scalar('knn/top1', top1)
        runner.visualizer.add_scalars({'knn/top1': top1}, step=step)
        print_log(
            f'k-NN top-1 {top1:.2f}% at iter {step} ({len(query_labels)} '
            f'val images, bank of {len(bank_labels)}, '
            f'{time.time() - t0:.1f}s)',
            logger='current')
        return top1
