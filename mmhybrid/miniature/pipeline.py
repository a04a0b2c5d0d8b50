"""The miniature's staged pipeline, which ``make demo`` and ``make study`` both
configure.

Stages, each with its inputs and outputs (checkpoints in work folders):

1. data: the built-in generated objects or a user's ImageNet-style folder
   (:func:`~mmhybrid.miniature.data.resolve_data`);
2. teachers: a supervised ViT (feature teacher Tc) and an MAE (relation teacher
   Tm), side by side -> their last checkpoints;
3. distill: hybrid-distilled students (Tc + Tm in) -> student checkpoints;
4. evaluate: a linear probe and, optionally, a short fine-tune of every model
   (training stages) -> top-1 in their logs;
5. measure, in this process: k-NN on frozen [CLS] features, attention
   statistics per layer and head, optionally the distances to the teachers.

Every training stage is one ``tools/train.py`` run of a ``configs/demo/``
config, read from the packaged copy (:data:`~mmhybrid.miniature.configs.ROOT`;
by default :func:`mmhybrid.apis.train.main`, what that tool runs, called in a
forked child of this process, which has imported the stack once), printed and
kept in ``WORK_DIR/logs/<stage>.log.cmd`` so it can be rerun alone; ``resume``
keeps the stages an earlier run finished with the same command
(:class:`~mmhybrid.miniature.stages.Stages`).
"""
import os.path as osp
import sys
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from .configs import (CONFIGS, ROOT, check_configs, model_options,
                      schedule_options)
from .data import DataSpec, data_options
from .measures import attention_stats_of, distill_distances, knn_eval
from .stages import Stage, Stages, check_train_tool, in_child, save_random_init

#: Rough cost of a stage per iteration of its config (teacher iteration = 1),
#: for the ETA; ``measure`` is per model, per student iteration.
COSTS = dict(teacher=1.0, student=2.0, probe=0.5, finetune=1.0, measure=0.3)
#: k of the k-NN evaluation (cosine, weighted votes).
KNN_K = 20


class Student(NamedTuple):
    """A distillation stage: ``options`` go after the pipeline's own."""
    name: str
    work_dir: str
    seed: int
    options: Sequence[str] = ()
    #: its own iterations (an ablation's longer budget); None: the batch's
    iters: Optional[int] = None


class Model(NamedTuple):
    """A network to evaluate: ``run`` names its evaluation stages;
    ``pretrain_dir`` is the work folder of its pretraining (None: the random
    init)."""
    label: str
    seed: int
    run: str
    checkpoint: str
    pretrain_dir: Optional[str] = None


def add_pipeline_args(parser, work_dir: str) -> None:
    """The options the demo and the study share: work folder, data, sizes and
    how the stages run."""
    parser.add_argument('--work-dir', default=work_dir)
    parser.add_argument(
        '--data-root',
        default=None,
        help='your own ImageNet-style folder (train/ and val/ '
        'with class folders, or meta/train.txt + '
        'meta/val.txt). Default: the built-in generated '
        'objects')
    parser.add_argument(
        '--num-classes',
        type=int,
        default=None,
        help='default: inferred from the data')
    parser.add_argument('--img-size', type=int, default=64)
    parser.add_argument('--patch-size', type=int, default=8)
    parser.add_argument(
        '--jobs',
        type=int,
        default=2,
        help='independent stages at once, each with max(1, cores // '
        'stages running) threads (a lone stage gets every core). Default: 2')
    parser.add_argument(
        '--subprocess',
        action='store_true',
        help='run tools/train.py processes instead of forked '
        'children of this process')
    parser.add_argument(
        '--resume',
        action='store_true',
        help='keep the stages an earlier run in WORK_DIR '
        'finished with the same command')


def train_function():
    """What ``tools/train.py`` runs (:func:`mmhybrid.apis.train.main`), checked
    by :func:`check_train_tool`."""
    from mmhybrid.apis import train
    check_train_tool(train)
    return train.main


def estimate_cost(teacher_iters: int,
                  num_students: int,
                  student_iters: int,
                  num_models: int,
                  probe_iters: int,
                  num_finetunes: int = 0,
                  finetune_iters: int = 0) -> float:
    """The ETA's total: every stage's iterations weighed by :data:`COSTS`."""
    return (2 * COSTS['teacher'] * teacher_iters +
            num_students * COSTS['student'] * student_iters + num_models *
            (COSTS['probe'] * probe_iters + COSTS['measure'] * student_iters) +
            num_finetunes * COSTS['finetune'] * finetune_iters)


class MiniaturePipeline:
    """The stages of the miniature on one dataset and model size.

    Args:
        work_dir (str): Every stage's work folder and the logs go below it.
        data (DataSpec): The dataset (:func:`resolve_data`).
        img_size (int): Image side in pixels.
        patch_size (int): Patch side in pixels.
        eval_dir (str, optional): Where the probe and fine-tune stages write.
            Defaults to ``work_dir``.
        log_interval (int): The trainer's logging interval (the scalars the
            report reads). Defaults to 50.
        jobs (int): Training stages at once. Defaults to 2.
        resume (bool): Keep stages finished earlier with the same command.
            Defaults to False.
        keep_going (bool): After a failed student or evaluation stage, go on
            with the others (teachers always stop the run). Defaults to False.
        total_cost (float): For the ETA (:func:`estimate_cost`). Defaults to 0.
        tag (str): Prefix of the progress lines. Defaults to ``'[demo]'``.
        subprocess (bool): Run ``tools/train.py`` processes instead of forked
            calls of :func:`mmhybrid.apis.train.main`. Defaults to False.
    """

    def __init__(self,
                 work_dir: str,
                 data: DataSpec,
                 img_size: int,
                 patch_size: int,
                 eval_dir: Optional[str] = None,
                 log_interval: int = 50,
                 jobs: int = 2,
                 resume: bool = False,
                 keep_going: bool = False,
                 total_cost: float = 0.0,
                 tag: str = '[demo]',
                 subprocess: bool = False):
        self.work_dir, self.data = work_dir, data
        self.img_size, self.patch_size = img_size, patch_size
        self.size = (img_size, patch_size, data.num_classes)
        self.eval_dir = eval_dir or work_dir
        self.log_interval = log_interval
        self.keep_going = keep_going
        self.tag = tag
        check_configs(tag)
        self.stages = Stages(
            work_dir,
            ROOT,
            None if subprocess else train_function(),
            jobs=jobs,
            resume=resume,
            total_cost=total_cost,
            tag=tag)
        #: seconds per step of the pipeline (teachers, distill, ...)
        self.times: Dict[str, float] = {}
        #: val-time options of the probe config (k-NN, attention, random init)
        self.eval_options = (
            data_options(data, 0,
                         ('val', )) + model_options('probe', *self.size))

    # ----------------------------------------------------------- options
    def options(self,
                kind: str,
                iters: int,
                seed: int,
                loaders: Sequence[str] = ('train', ),
                warmup: bool = True,
                batch: Optional[int] = None) -> List[str]:
        """``--cfg-options`` of a training stage of ``kind``'s config: seed,
        logging, iterations, data, model size and schedule."""
        opts = [
            f'randomness.seed={seed}',
            f'default_hooks.logger.interval={self.log_interval}'
        ]
        if batch:
            opts.append(f'train_dataloader.batch_size={batch}')
        opts += [
            f'train_cfg.max_iters={iters}',
            f'default_hooks.checkpoint.interval={iters}'
        ]
        opts += data_options(self.data, 0, loaders)
        opts += model_options(kind, *self.size)
        opts += schedule_options(iters, warmup)
        if 'val' in loaders:
            opts.append(f'train_cfg.val_interval={iters}')
        return opts

    # ------------------------------------------------------------ stages
    def _run(self, step: str, batch: Sequence[Stage], fatal: bool) -> None:
        t0 = time.time()
        self.stages.run(batch)
        self.times[step] = self.times.get(step, 0.0) + time.time() - t0
        if self.stages.failed and (fatal or not self.keep_going):
            sys.exit(f'{self.tag} {step} failed: {self.stages.failed}')

    def teachers(self,
                 iters: int,
                 seed: int = 0,
                 batch: Optional[int] = None,
                 feature: str = 'sup',
                 rel_iters: Optional[int] = None) -> Tuple[str, str]:
        """Train Tc (``iters`` iterations) and Tm side by side.

        Tc is the supervised ViT classifier (``feature='sup'``, validated) or
        mmpretrain's MoCoV3 with a tiny ViT (``feature='moco'``). The MAE runs
        ``rel_iters`` iterations, by default twice ``iters``: its attention
        grows more diverse with training (per-head spread of attention
        distance 0.47 / 0.96 / 1.10 px after 300 / 600 / 900 iterations) and
        an iteration costs about half of the supervised Tc's (it encodes a
        quarter of the tokens), so both end together.

        Returns:
            tuple: Tc's and Tm's last checkpoints.
        """
        rel_iters = rel_iters or 2 * iters
        sup_dir = osp.join(self.work_dir, f'teacher_{feature}')
        mae_dir = osp.join(self.work_dir, 'teacher_mae')
        loaders = ('train', 'val', 'test') if feature == 'sup' else ('train', )
        self._run(
            'teachers', [
                Stage(
                    f'teacher_{feature}', CONFIGS[feature], sup_dir,
                    self.options(
                        feature,
                        iters,
                        seed,
                        loaders,
                        batch=batch if feature == 'sup' else None),
                    COSTS['teacher'] * iters *
                    (3 if feature == 'moco' else 1)),
                Stage('teacher_mae', CONFIGS['mae'], mae_dir,
                      self.options('mae', rel_iters, seed, batch=batch),
                      COSTS['teacher'] * rel_iters / 2),
            ],
            fatal=True)
        return (osp.join(sup_dir, f'iter_{iters}.pth'),
                osp.join(mae_dir, f'iter_{rel_iters}.pth'))

    def distill(self,
                students: Sequence[Student],
                iters: int,
                teachers: Tuple[str, str],
                options: Sequence[str] = (),
                batch: Optional[int] = None) -> Dict[str, str]:
        """Distil every student from ``teachers`` (Tc, Tm); ``options`` go to
        every student before its own.

        Returns:
            dict: Each student's last checkpoint, by stage name (failed ones
            left out).
        """
        self._run(
            'distill', [
                Stage(
                    st.name, CONFIGS['hybrid'], st.work_dir,
                    self.options(
                        'hybrid', st.iters or iters, st.seed, batch=batch) + [
                            f'model.teacher_feat.checkpoint={teachers[0]}',
                            f'model.teacher_rel.checkpoint={teachers[1]}'
                        ] + list(options) + list(st.options),
                    COSTS['student'] * (st.iters or iters)) for st in students
            ],
            fatal=False)
        return {
            st.name: osp.join(st.work_dir, f'iter_{st.iters or iters}.pth')
            for st in students if st.name not in self.stages.failed
        }

    def random_init(self, seed: int, path: str) -> str:
        """Save the seeded random initialisation of the probe config's backbone
        (initialised as the students are) as a checkpoint, in a forked child
        (:func:`in_child`)."""
        in_child(save_random_init, CONFIGS['probe'], self.eval_options, seed,
                 path)
        return path

    def eval_work_dir(self, kind: str, model: Model) -> str:
        """The work folder of ``model``'s probe or fine-tune stage."""
        return osp.join(self.eval_dir, f'{kind}_{model.run}')

    def _eval_stage(self, kind: str, model: Model, iters: int,
                    batch: Optional[int], warmup: bool) -> Stage:
        """``model``'s probe or fine-tune stage (``kind``), from its
        checkpoint."""
        return Stage(
            f'{kind}_{model.run}', CONFIGS[kind],
            self.eval_work_dir(kind, model),
            self.options(
                kind,
                iters,
                model.seed, ('train', 'val', 'test'),
                warmup=warmup,
                batch=batch) +
            [f'model.backbone.init_cfg.checkpoint={model.checkpoint}'],
            COSTS[kind] * iters)

    def evaluate(self,
                 models: Sequence[Model],
                 probe_iters: int,
                 finetune_iters: int = 0,
                 probe_batch: Optional[int] = None,
                 batch: Optional[int] = None) -> List[Model]:
        """A linear probe of every model and, with ``finetune_iters``, a short
        fine-tune of every model but the teachers (Tc's own training is its
        supervised score).

        Returns:
            list: The models whose probe ran.
        """
        runs = []
        for m in models:
            runs.append(
                self._eval_stage('probe', m, probe_iters, probe_batch, False))
            if finetune_iters and not m.run.startswith('teacher'):
                runs.append(
                    self._eval_stage('finetune', m, finetune_iters, batch,
                                     True))
        self._run('evaluate', runs, fatal=False)
        return [
            m for m in models if f'probe_{m.run}' not in self.stages.failed
        ]

    # ------------------------------------------------------ measurements
    def measure(self,
                model: Model,
                attn_images: int,
                teachers: Optional[Tuple[str, str]] = None,
                student_iters: int = 0) -> dict:
        """k-NN top-1 and attention statistics of ``model``, in this process
        (after the training stages: see :func:`in_child`); with ``teachers``
        also its feature distance to Tc and relation KL to Tm.

        Returns:
            dict: ``knn`` (%), ``stats`` (per layer and head arrays) and, with
            ``teachers``, ``feat_dist`` and ``rel_kl``.
        """
        t0 = time.time()
        cfg = CONFIGS['probe']
        out = dict(
            knn=knn_eval(cfg, self.eval_options, model.checkpoint, self.data,
                         KNN_K, model.seed),
            stats=attention_stats_of(cfg, self.eval_options, model.checkpoint,
                                     osp.join(self.data.root, 'val'),
                                     attn_images))
        if teachers:
            out['feat_dist'], out['rel_kl'] = distill_distances(
                CONFIGS['hybrid'], model_options('hybrid', *self.size),
                model.checkpoint, teachers, self.data, attn_images)
        self.times['measure'] = self.times.get('measure', 0.0) + \
            time.time() - t0
        self.stages.add_done(COSTS['measure'] * student_iters)
        self.stages.log(f'measured {model.run} ({self.stages.progress()})')
        return out
