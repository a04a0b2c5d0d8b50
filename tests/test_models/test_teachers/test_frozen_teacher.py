"""``FrozenTeacher``: built from config, loaded from its own file, frozen."""
import copy
import pickle

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from timm.models.vision_transformer import VisionTransformer as TimmViT

from mmhybrid.models.backbones.hybrid_vit import HybridViT
from mmhybrid.models.teachers import FrozenTeacher
from mmhybrid.testing import (CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD,
                              tiny_hybrid_cfg, tiny_vit_cfg)
from mmhybrid.utils.checkpoint import CheckpointError

EMBED = 48
ARCH = dict(
    embed_dims=EMBED,
    num_layers=2,
    num_heads=3,
    feedforward_channels=2 * EMBED)
ATOL = 1e-5


def _perturb(module: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    module.eval()  # mmpretrain backbones' train() returns None
    return module


@pytest.fixture(scope='module')
def timm_model():
    torch.manual_seed(0)
    model = TimmViT(
        img_size=32,
        patch_size=8,
        embed_dim=EMBED,
        depth=2,
        num_heads=3,
        mlp_ratio=2,
        class_token=True,
        global_pool='token',
        num_classes=0)
    return _perturb(model, 1)


@pytest.fixture(scope='module')
def timm_ckpt(tmp_path_factory, timm_model):
    path = tmp_path_factory.mktemp('frozen') / 'mae_like_teacher.pth'
    torch.save({'model': timm_model.state_dict()}, path)
    return str(path)


def _teacher_cfg(checkpoint=None, img_size=32, **kw):
    return dict(
        type='FrozenTeacher',
        backbone=tiny_vit_cfg(
            ARCH,
            img_size=img_size,
            patch_size=8,
            norm_cfg=dict(type='LN', eps=1e-6)),
        checkpoint=checkpoint,
        **kw)


def _build(checkpoint=None, **kw):
    torch.manual_seed(99)
    teacher = MODELS.build(_teacher_cfg(checkpoint, **kw))
    assert isinstance(teacher, FrozenTeacher)
    assert isinstance(teacher.backbone, HybridViT)
    teacher.init_weights()
    return teacher


def _images(n=2, size=32, seed=3):
    return torch.randn(
        n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_loads_checkpoint_and_freezes(timm_ckpt, timm_model):
    teacher = _build(timm_ckpt)
    params = list(teacher.parameters())
    assert params and all(not p.requires_grad for p in params)
    x = _images()
    with torch.no_grad():
        ref = timm_model.forward_features(x)
    torch.testing.assert_close(teacher(x).tokens, ref, rtol=0, atol=ATOL)


def test_build_does_not_read_the_file(tmp_path):
    """The file is read in init_weights(): a corrupt one only fails there."""
    path = tmp_path / 'corrupt.pth'
    path.write_bytes(b'not a checkpoint at all')
    teacher = MODELS.build(_teacher_cfg(str(path)))
    with pytest.raises(CheckpointError, match='corrupt.pth'):
        teacher.init_weights()


def test_train_keeps_eval_mode(timm_ckpt):
    teacher = _build(timm_ckpt)
    for mode in (True, False, True):
        ret = teacher.train(mode)
        assert ret is teacher
        assert not teacher.training
        assert all(not m.training for m in teacher.modules())
    # wrapped in a parent that is put in training mode
    parent = nn.Sequential(teacher, nn.Linear(2, 2))
    parent.train()
    assert parent.training and parent[1].training
    assert all(not m.training for m in teacher.modules())


def test_outputs_are_inference_tensors(timm_ckpt):
    teacher = _build(timm_ckpt)
    x = _images().requires_grad_(True)
    out = teacher(x, out_layers=(0, 1), parts=('q', 'k', 'v'), cls_attn=True)
    tensors = [out.tokens, out.cls_attn] + [
        t for proj in out.relations.values() for t in proj.values()
    ]
    assert len(tensors) == 2 + 6
    for t in tensors:
        assert t.is_inference()
        assert not t.requires_grad and t.grad_fn is None
        assert t.dtype == torch.float32  # no autocast on CPU


def test_teacher_input_normalisation():
    """CLIP's own mean/std with ImageNet-normalised inputs: the teacher maps
    the input back to what CLIP expects."""
    teacher = _build(mean=CLIP_MEAN, std=CLIP_STD)
    _perturb(teacher.backbone, 5)
    teacher.set_input_norm(
        torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
        torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
    raw = torch.rand(
        2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 255
    im_mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    im_std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    clip_mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    clip_std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    x_in = (raw - im_mean) / im_std
    x_clip = (raw - clip_mean) / clip_std

    got = teacher(x_in).tokens
    with torch.no_grad():
        want = teacher.backbone.forward_distill(x_clip).tokens
        as_given = teacher.backbone.forward_distill(x_in).tokens
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    # and the normalisation matters at this scale of difference
    assert (as_given - want).abs().max() > 1e-2

    # raw 0-255 input (no normalisation in the preprocessor)
    teacher.set_input_norm(None, None)
    torch.testing.assert_close(teacher(raw).tokens, want, rtol=0, atol=ATOL)


def test_no_teacher_norm_passes_input_through():
    teacher = _build()
    _perturb(teacher.backbone, 6)
    teacher.set_input_norm(
        torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD))
    x = _images()
    with torch.no_grad():
        want = teacher.backbone.forward_distill(x).tokens
    torch.testing.assert_close(teacher(x).tokens, want, rtol=0, atol=0)


def test_missing_local_checkpoint_fails_at_build(tmp_path):
    path = str(tmp_path / 'missing' / 'clip_vit_base_16.pth')
    with pytest.raises(CheckpointError) as e:
        MODELS.build(_teacher_cfg(path))
    assert path in str(e.value) and 'not found' in str(e.value)


def test_unknown_format_fails_at_build(timm_ckpt):
    with pytest.raises(ValueError, match='checkpoint_format'):
        MODELS.build(_teacher_cfg(timm_ckpt, checkpoint_format='jax'))


def test_mean_without_std_fails_at_build():
    with pytest.raises(ValueError, match='mean and std'):
        MODELS.build(_teacher_cfg(mean=CLIP_MEAN))


def test_input_resized_to_teacher_size():
    teacher = _build(img_size=48)
    _perturb(teacher.backbone, 7)
    x = _images(size=32)
    got = teacher(x).tokens
    assert got.shape == (2, 1 + 36, EMBED)
    big = F.interpolate(x, size=(48, 48), mode='bicubic', align_corners=False)
    with torch.no_grad():
        want = teacher.backbone.forward_distill(big).tokens
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)


def test_downsizing_to_the_teacher_is_antialiased():
    """A CLIP ViT-L/14 teacher at 196 px under a 224 px student: the teacher
    sees antialiased bicubic downsizing (like CLIP's PIL preprocessing), not
    plain bicubic, which aliases fine detail."""
    teacher = _build(img_size=32)
    _perturb(teacher.backbone, 8)
    x = _images(size=48)
    x[..., ::2, :] += 2.0  # stripes at the input's Nyquist rate
    got = teacher(x).tokens
    aa = F.interpolate(
        x, size=(32, 32), mode='bicubic', align_corners=False, antialias=True)
    plain = F.interpolate(
        x, size=(32, 32), mode='bicubic', align_corners=False)
    with torch.no_grad():
        want = teacher.backbone.forward_distill(aa).tokens
        aliased = teacher.backbone.forward_distill(plain).tokens
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    assert (got - aliased).abs().max() > 1e-2


def test_shipped_clip_teacher_config_loads_openai_clip(tmp_path):
    """The feature teacher exactly as ``tiny_hybrid_cfg`` (and the shipped CLIP
    config) declares it, loading an OpenAI CLIP file made by mmpretrain's CLIP
    port, reproduces that tower's tokens after ``ln_post``."""
    from mmpretrain.models.utils.clip_generator_helper import \
        VisionTransformer as ClipVisionTransformer
    arch = dict(ARCH, feedforward_channels=4 * EMBED)
    torch.manual_seed(12)
    tower = _perturb(
        ClipVisionTransformer(
            input_resolution=32,
            patch_size=8,
            width=EMBED,
            layers=2,
            heads=3,
            output_dim=24), 13)
    path = str(tmp_path / 'clip.pth')
    sd = {f'visual.{k}': v for k, v in tower.state_dict().items()}
    sd['text_projection'] = torch.randn(32, 24)
    sd['logit_scale'] = torch.tensor(4.6)
    torch.save(sd, path)

    cfg = tiny_hybrid_cfg(teacher_feat_ckpt=path, feat_arch=arch)
    teacher_cfg = cfg['teacher_feat']
    teacher_cfg['checkpoint_format'] = 'openai_clip'
    teacher = MODELS.build(teacher_cfg)
    teacher.init_weights()
    teacher.set_input_norm(None, None)  # feed raw 0-255 pixels

    raw = torch.rand(
        2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 255
    x_clip = (raw - torch.tensor(CLIP_MEAN).view(
        1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    seen = []
    hook = tower.ln_post.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        tower(x_clip)
    hook.remove()
    torch.testing.assert_close(teacher(raw).tokens, seen[0], rtol=0, atol=ATOL)


def test_compiled_teacher_equals_eager(timm_ckpt):
    """``compile=True`` runs the real inductor (C++ on CPU): same tokens, q/k/v
    and [CLS] attention as the eager teacher, CLIP-style normalisation
    included, no autograd history, and one graph for repeated steps of one
    shape."""
    import torch._dynamo as dynamo
    eager = _build(timm_ckpt, mean=CLIP_MEAN, std=CLIP_STD)
    compiled = _build(timm_ckpt, mean=CLIP_MEAN, std=CLIP_STD, compile=True)
    for t in (eager, compiled):
        t.set_input_norm(
            torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD))
    dynamo.reset()
    dynamo.utils.counters.clear()
    for seed in (3, 4, 5):
        x = _images(seed=seed)
        want = eager(x, out_layers=(0, 1), parts=('q', 'k'), cls_attn=True)
        got = compiled(x, out_layers=(0, 1), parts=('q', 'k'), cls_attn=True)
        torch.testing.assert_close(
            got.tokens, want.tokens, rtol=1e-5, atol=ATOL)
        torch.testing.assert_close(
            got.cls_attn, want.cls_attn, rtol=1e-5, atol=ATOL)
        assert set(got.relations) == {0, 1}
        for i in (0, 1):
            for p in ('q', 'k'):
                torch.testing.assert_close(
                    got.relations[i][p],
                    want.relations[i][p],
                    rtol=1e-5,
                    atol=ATOL)
        assert not got.tokens.requires_grad and got.tokens.grad_fn is None
    assert compiled._compiled is not None
    assert dynamo.utils.counters['stats']['unique_graphs'] == 1

    # a deep copy (an EMA model, say) runs its own weights, not the original's
    twin = _perturb(copy.deepcopy(compiled).backbone, 11)
    twin_teacher = copy.deepcopy(compiled)
    twin_teacher.backbone = twin
    eager_twin = copy.deepcopy(twin_teacher)
    eager_twin.compile_cfg, eager_twin._compiled = False, None
    x = _images(seed=6)
    got = twin_teacher(x, cls_attn=True).tokens
    torch.testing.assert_close(
        got, eager_twin(x, cls_attn=True).tokens, rtol=1e-5, atol=ATOL)
    assert (got - compiled(x, cls_attn=True).tokens).abs().max() > 1e-2

    # a compiled function does not pickle: dropped, rebuilt on the next call
    again = pickle.loads(pickle.dumps(compiled))
    assert again._compiled is None
    torch.testing.assert_close(
        again(x, cls_attn=True).tokens,
        compiled(x, cls_attn=True).tokens)


def test_compile_argument_checked():
    with pytest.raises(TypeError, match='compile must be a bool or a dict'):
        MODELS.build(_teacher_cfg(compile='yes'))
