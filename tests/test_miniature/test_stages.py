"""The miniature's stages train on the train split: its configs as
tools/train.py's function merges them, and the guard the pipeline applies
before any stage (both from tests/test_analysis/test_tools.py)."""
import pytest


def test_miniature_classifiers_train_on_the_train_split():
    """The merge_args of tools/train.py (mmhybrid.apis.train) keeps
    train_dataloader on the train split for every classifier config of the
    miniature (mmengine's recursive ConfigDict.update once leaked val's dataset
    into it)."""
    from mmengine.config import Config

    from mmhybrid.apis import train as train_tool
    from mmhybrid.miniature.configs import CONFIGS
    for cfg_path in (CONFIGS['sup'], CONFIGS['probe'], CONFIGS['finetune']):
        args = train_tool.parse_args([
            cfg_path, '--cfg-options', 'train_dataloader.dataset.data_root=/t',
            'val_dataloader.dataset.data_root=/v'
        ])
        cfg = train_tool.merge_args(Config.fromfile(cfg_path), args)
        train, val = cfg.train_dataloader, cfg.val_dataloader
        assert train.dataset.data_prefix == 'train'
        assert train.dataset.data_root == '/t'
        assert train.sampler.type == 'InfiniteSampler'
        assert len(train.dataset.pipeline) == 5  # resize, crop, flip
        assert val.dataset.data_prefix == 'val'
        assert val.dataset.data_root == '/v'
        assert val.sampler.type == 'DefaultSampler'


def test_pipeline_refuses_a_train_tool_that_leaks_val_into_train():
    """The miniature's guard recognises the shared-default-dict merge of old
    and passes today's training function (what the pipeline's stages call)."""
    from types import SimpleNamespace

    from mmengine.config import ConfigDict

    from mmhybrid.apis import train
    from mmhybrid.miniature.pipeline import train_function
    from mmhybrid.miniature.stages import check_train_tool

    def leaky_merge_args(cfg, args):
        default = ConfigDict(pin_memory=True)
        for field in ('train_dataloader', 'val_dataloader'):
            default.update(cfg[field])
            cfg[field].update(default)
        return cfg

    leaky = SimpleNamespace(
        merge_args=leaky_merge_args, parse_args=lambda argv: None)
    with pytest.raises(RuntimeError, match='overwrite train_dataloader'):
        check_train_tool(leaky)
    assert train_function() is train.main  # checked, then returned
