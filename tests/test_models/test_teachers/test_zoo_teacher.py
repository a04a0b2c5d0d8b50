"""``ZooTeacher``: any mmpretrain ViT family as a teacher, read from the
family's own forward.

Every family is built by mmpretrain itself with small dimensions and random
weights. What the teacher returns is compared with what the family's own
forward computes, captured from that forward: the attention probabilities by
recording every attention softmax of a real forward (the fused attention of
``MultiheadAttention`` is swapped for its math form, which records them; the
forward's output is checked unchanged by the swap), the feature target against
the backbone's own ``out_indices`` output.
"""
import contextlib
import copy
import pickle
from functools import partial

import pytest
import torch
from mmengine.registry import DefaultScope
from mmpretrain.models.utils.attention import MultiheadAttention
from mmpretrain.registry import MODELS

from mmhybrid.models.backbones import RegisterViT
from mmhybrid.models.losses.relation_functional import relation_logits
from mmhybrid.models.teachers import FrozenTeacher, ZooTeacher
from mmhybrid.utils.checkpoint import CheckpointError

TOL = 1e-5
EMBED = 48
HEADS = 3
ARCH = dict(
    embed_dims=EMBED,
    num_layers=3,
    num_heads=HEADS,
    feedforward_channels=2 * EMBED)
REGISTERS = 2

# as each family's mmpretrain config builds it, at small dimensions
FAMILIES = {
    'vit':
    dict(
        type='mmpretrain.VisionTransformer',
        arch=ARCH,
        img_size=32,
        patch_size=8),
    'mae':
    dict(
        type='mmpretrain.MAEViT',
        arch=ARCH,
        img_size=32,
        patch_size=8,
        mask_ratio=0.75),
    'dinov2':
    dict(
        type='mmpretrain.VisionTransformer',
        arch=ARCH,
        img_size=56,
        patch_size=14,
        layer_scale_init_value=1e-5),
    'dinov2_reg':
    dict(
        type='RegisterViT',
        arch=ARCH,
        img_size=56,
        patch_size=14,
        layer_scale_init_value=1e-5,
        num_register_tokens=REGISTERS),
    'eva02':
    dict(
        type='mmpretrain.ViTEVA02',
        arch=ARCH,
        img_size=56,
        patch_size=14,
        sub_ln=True,
        final_norm=False,
        out_type='avg_featmap'),
    'beitv2':
    dict(
        type='mmpretrain.BEiTViT',
        arch=ARCH,
        img_size=32,
        patch_size=8,
        out_type='avg_featmap',
        use_abs_pos_emb=False,
        use_rel_pos_bias=True,
        use_shared_rel_pos_bias=False),
    # BEiT v2's pre-training backbone, with the shared relative position bias
    'beitv2_pretrain':
    dict(
        type='mmpretrain.BEiTPretrainViT',
        arch=ARCH,
        img_size=32,
        patch_size=8,
        out_indices=[0, -1],
        final_norm=False,
        out_type='raw',
        use_abs_pos_emb=True,
        use_rel_pos_bias=False,
        use_shared_rel_pos_bias=True),
    'clip':
    dict(
        type='mmpretrain.VisionTransformer',
        arch=ARCH,
        img_size=32,
        patch_size=8,
        pre_norm=True,
        layer_cfgs=dict(act_cfg=dict(type='QuickGELU'))),
    'deit3':
    dict(type='mmpretrain.DeiT3', arch=ARCH, img_size=32, patch_size=8),
}

# a qk scale other than head_dims ** -0.5 (folded into q by the teacher)
FAMILIES.update(
    eva02_qk_scale=dict(FAMILIES['eva02'], layer_cfgs=dict(qk_scale=0.3)),
    beitv2_qk_scale=dict(
        FAMILIES['beitv2'], layer_cfgs=dict(attn_cfg=dict(qk_scale=0.3))))


def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere (zero-initialised biases and tables too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


def _teacher(family: str, seed: int = 0, **kw) -> ZooTeacher:
    torch.manual_seed(seed)
    t = ZooTeacher(copy.deepcopy(FAMILIES[family]), checkpoint=False, **kw)
    _perturb(t.backbone, seed + 1)
    return t


def _images(t: ZooTeacher, seed: int = 2, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *t.img_size, generator=g)


def _recording_sdpa(store,
                    query,
                    key,
                    value,
                    attn_mask=None,
                    dropout_p=0.,
                    scale=None,
                    **kw):
    """``F.scaled_dot_product_attention``'s math form, recording the
    probabilities."""
    scale = query.shape[-1]**-0.5 if scale is None else scale
    probs = torch.softmax(query @ key.transpose(-2, -1) * scale, -1)
    store.append(probs)
    return probs @ value


@contextlib.contextmanager
def record_attention(backbone):
    """The attention probabilities of every block, in the order the family's
    real forward computes them."""
    store = []
    saved = {}
    for m in backbone.modules():
        if isinstance(m, MultiheadAttention):
            saved[m] = m.scaled_dot_product_attention
            sdpa = m.scaled_dot_product_attention
            scale = sdpa.keywords.get('scale') if isinstance(sdpa,
                                                             partial) else None
            m.scaled_dot_product_attention = partial(
                _recording_sdpa, store, scale=scale)
    plain_softmax = torch.Tensor.softmax

    def softmax(self, *args, **kwargs):
        out = plain_softmax(self, *args, **kwargs)
        if self.dim() == 4:  # (B, H, L, L) attention (BEiT, EVA-02)
            store.append(out)
        return out

    torch.Tensor.softmax = softmax
    try:
        yield store
    finally:
        torch.Tensor.softmax = plain_softmax
        for m, sdpa in saved.items():
            m.scaled_dot_product_attention = sdpa


def _own_forward(t: ZooTeacher, x: torch.Tensor):
    kwargs = t.family.forward_kwargs
    with torch.no_grad():
        return t.backbone(x, **kwargs)


def _relation_maps(out, heads):
    maps = {}
    for i, rel in out.relations.items():
        logits = relation_logits(rel['q'], rel['k'], heads)
        if 'bias' in rel:
            logits = logits + rel['bias']
        maps[i] = logits.softmax(-1)
    return maps


ALL = list(FAMILIES)


@pytest.mark.parametrize('family', ALL)
def test_relations_equal_the_familys_own_attention(family):
    t = _teacher(family, registers=True)
    x = _images(t)
    plain = _own_forward(t, x)[0]
    with record_attention(t.backbone) as store:
        recorded_out = _own_forward(t, x)[0]
    # the recording attention is the same computation as the family's own
    torch.testing.assert_close(recorded_out, plain, atol=TOL, rtol=0)
    assert len(store) == t.num_layers
    out = t(x, out_layers=range(t.num_layers), cls_attn=True)
    maps = _relation_maps(out, t.num_heads)
    worst = 0.
    for i in range(t.num_layers):
        assert maps[i].shape == store[i].shape
        worst = max(worst, (maps[i] - store[i]).abs().max().item())
    assert worst <= TOL, f'{family}: relation maps differ by {worst}'
    # [CLS] -> patch attention of the last block, averaged over heads
    first = 1 + t.num_register_tokens
    want = store[-1][:, :, 0, first:].mean(1)
    torch.testing.assert_close(out.cls_attn, want, atol=TOL, rtol=0)


@pytest.mark.parametrize('family', ALL)
def test_feature_target_is_the_familys_block_output(family):
    t = _teacher(family)
    x = _images(t)
    # the family built to return its raw tokens at blocks 0 and -1
    cfg = dict(FAMILIES[family], out_type='raw', out_indices=[0, -1])
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        own = MODELS.build(copy.deepcopy(cfg))
    result = own.load_state_dict(t.backbone.state_dict(), strict=False)
    # only the pooled output's norm ('avg_featmap') is left over
    assert not result.missing_keys
    assert all(k.startswith('ln2.') for k in result.unexpected_keys)
    own.eval()
    with torch.no_grad():
        mid, last = own(x, **t.family.forward_kwargs)
    first = ZooTeacher(
        copy.deepcopy(FAMILIES[family]), checkpoint=False, feature_layer=0)
    first.backbone.load_state_dict(t.backbone.state_dict())
    worst = 0.
    for teacher, want in ((t, last), (first, mid)):
        got = teacher(x).tokens
        if t.num_register_tokens:  # left out by default
            R = t.num_register_tokens
            want = torch.cat((want[:, :1], want[:, 1 + R:]), 1)
        assert got.shape == (x.shape[0], 1 + t.grid[0] * t.grid[1],
                             t.embed_dims)
        worst = max(worst, (got - want).abs().max().item())
    assert worst <= TOL, f'{family}: features differ by {worst}'


def test_feature_layer_argument_reads_that_block_before_any_norm():
    t = _teacher('vit', feature_layer=1)
    x = _images(t)
    block_out = {}
    t.backbone.layers[1].register_forward_hook(
        lambda m, a, o: block_out.setdefault('x',
                                             o.detach().clone()),
        prepend=True)  # before the teacher's hook, which stops the forward
    got = t(x).tokens
    torch.testing.assert_close(got, block_out['x'], atol=0, rtol=0)
    with pytest.raises(
            ValueError, match=r'feature_layer=3: expected an int '
            r'in \[-3, 2\]'):
        _teacher('vit', feature_layer=3)


def test_runs_only_the_blocks_it_needs():
    t = _teacher('vit')
    ran = []
    for i, layer in enumerate(t.backbone.layers):
        layer.register_forward_pre_hook(lambda m, a, i=i: ran.append(i))
    x = _images(t)
    out = t(x, out_layers=(0, ), final_tokens=False)
    assert ran == [0] and out.tokens is None and list(out.relations) == [0]
    ran.clear()
    full = t(x, out_layers=(0, ), final_tokens=True)
    assert ran == [0, 1, 2]
    torch.testing.assert_close(out.relations[0]['q'], full.relations[0]['q'])
    ran.clear()
    t(x, out_layers=(), cls_attn=True, final_tokens=False)
    assert ran == [0, 1, 2]
    # state left clean: a later call is not affected by an earlier one
    assert t._state['qkvb'] == {} and t._state['stop'] is None


@pytest.mark.parametrize('family', ['vit', 'eva02'])
def test_qkv_projection_is_read_not_computed_again(family):
    t = _teacher(family)
    calls = []
    for layer in t.backbone.layers:
        layer.attn.qkv.register_forward_pre_hook(lambda m, a: calls.append(1))
    t(_images(t), out_layers=range(t.num_layers), cls_attn=True)
    assert len(calls) == t.num_layers


def test_a_family_without_cls_gives_patches_and_refuses_cls_attention():
    cfg = dict(FAMILIES['vit'], with_cls_token=False, out_type='featmap')
    torch.manual_seed(0)
    t = ZooTeacher(cfg, checkpoint=False)
    _perturb(t.backbone, 1)
    assert not t.has_cls
    x = _images(t)
    with record_attention(t.backbone) as store:
        _own_forward(t, x)
    out = t(x, out_layers=(2, ))
    assert out.tokens.shape == (2, 16, EMBED)
    got = _relation_maps(out, HEADS)[2]
    torch.testing.assert_close(got, store[2], atol=TOL, rtol=0)
    with pytest.raises(
            ValueError,
            match=r'ZooTeacher\(mmpretrain.Vision'
            r'Transformer\): cls_attn asked, but .* has no \[CLS\]'):
        t(x, cls_attn=True)


def test_registers_left_out_of_relations_and_tokens_by_default():
    kept = _teacher('dinov2_reg', registers=True)
    dropped = _teacher('dinov2_reg')
    x = _images(dropped)
    N = dropped.grid[0] * dropped.grid[1]
    R = REGISTERS
    a = kept(x, out_layers=(1, ), cls_attn=True)
    b = dropped(x, out_layers=(1, ), cls_attn=True)
    assert a.tokens.shape[1] == 1 + R + N and b.tokens.shape[1] == 1 + N
    assert b.relations[1]['q'].shape[1] == 1 + N
    torch.testing.assert_close(
        b.tokens, torch.cat((a.tokens[:, :1], a.tokens[:, 1 + R:]), 1))
    # relations among [CLS] and patches: the family's logits without the
    # register rows and columns
    full = relation_logits(a.relations[1]['q'], a.relations[1]['k'], HEADS)
    idx = torch.tensor([0] + list(range(1 + R, 1 + R + N)))
    want = full[:, :, idx][:, :, :, idx].softmax(-1)
    got = relation_logits(b.relations[1]['q'], b.relations[1]['k'],
                          HEADS).softmax(-1)
    torch.testing.assert_close(got, want, atol=TOL, rtol=0)
    # [CLS] attention ranks the patches only, in both
    assert b.cls_attn.shape == (2, N)
    torch.testing.assert_close(a.cls_attn, b.cls_attn)
    assert dropped.num_register_tokens == R


def test_set_img_size_changes_the_grid():
    t = _teacher('dinov2')
    assert t.patch_size == 14 and t.grid == (4, 4)
    t.set_img_size(196)
    assert t.img_size == (196, 196) and t.grid == (14, 14)
    t.set_img_size((42, 28))
    x = torch.randn(1, 3, 50, 50)
    out = t(x, out_layers=(0, ))
    assert out.tokens.shape == (1, 1 + 3 * 2, EMBED)
    with pytest.raises(
            ValueError,
            match=r'img_size=\(200, 200\): expected a '
            'positive multiple of the patch size'):
        t.set_img_size(200)
    beit = _teacher('beitv2')
    with pytest.raises(
            ValueError, match='relative position bias .* sized for '
            '4x4'):
        beit.set_img_size(64)
    t = _teacher('vit', img_size=48)
    assert t.grid == (6, 6)


@pytest.mark.parametrize('family', ALL)
def test_published_layout_loads_tensor_for_tensor(family, tmp_path):
    src = _teacher(family, seed=5)
    sd = {f'backbone.{k}': v for k, v in src.backbone.state_dict().items()}
    sd['head.layers.head.weight'] = torch.randn(10, EMBED)
    path = tmp_path / f'{family}.pth'
    torch.save({'state_dict': sd, 'meta': dict(epoch=1)}, path)
    t = ZooTeacher(copy.deepcopy(FAMILIES[family]), checkpoint=str(path))
    t.init_weights()
    got = t.backbone.state_dict()
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(got[k], v), k
    assert all(not p.requires_grad for p in t.parameters())
    # bare backbone keys load too
    bare = tmp_path / 'bare.pth'
    torch.save(src.backbone.state_dict(), bare)
    t2 = ZooTeacher(copy.deepcopy(FAMILIES[family]), checkpoint=str(bare))
    t2.init_weights()
    x = _images(t2)
    torch.testing.assert_close(t2(x).tokens, src(x).tokens, atol=0, rtol=0)


class _capture:
    """The messages ``logger`` logs inside the block."""

    def __init__(self, logger):
        self.logger, self.lines = logger, []

    def __enter__(self):
        import logging

        class _H(logging.Handler):

            def emit(h, record):
                self.lines.append(record.getMessage())

        self.handler = _H()
        self.logger.addHandler(self.handler)
        return self.lines

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)


def test_a_mask_token_in_the_file_is_ignored_and_reported(tmp_path):
    """DINOv2's and BEiT's pre-training files may hold the token of masked
    patches, which mmpretrain's VisionTransformer has no parameter for and a
    teacher never uses."""
    from mmengine.logging import MMLogger
    src = _teacher('dinov2', seed=5)
    sd = {f'backbone.{k}': v for k, v in src.backbone.state_dict().items()}
    sd['backbone.mask_token'] = torch.zeros(1, EMBED)
    path = tmp_path / 'dinov2_mask_token.pth'
    torch.save({'state_dict': sd}, path)
    t = ZooTeacher(copy.deepcopy(FAMILIES['dinov2']), checkpoint=str(path))
    logger = MMLogger.get_instance('test_mask_token', log_level='INFO')
    with _capture(logger) as lines:
        t.load_weights(str(path), logger)
    assert any('ignored 1 tensors that are not the backbone: '
               'backbone.mask_token' in ln for ln in lines), lines
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(t.backbone.state_dict()[k], v), k


def test_missing_and_unexpected_keys_are_one_line_naming_them(tmp_path):
    src = _teacher('vit')
    sd = {f'backbone.{k}': v for k, v in src.backbone.state_dict().items()}
    del sd['backbone.layers.1.attn.qkv.weight']
    sd['backbone.layers.7.attn.qkv.weight'] = torch.zeros(1)
    path = tmp_path / 'broken.pth'
    torch.save({'state_dict': sd}, path)
    t = ZooTeacher(copy.deepcopy(FAMILIES['vit']), checkpoint=str(path))
    with pytest.raises(CheckpointError) as err:
        t.init_weights()
    msg = str(err.value)
    assert '\n' not in msg and str(path) in msg
    assert 'missing keys layers.1.attn.qkv.weight' in msg
    assert 'unexpected keys layers.7.attn.qkv.weight' in msg
    assert 'ZooTeacher(mmpretrain.VisionTransformer)' in msg
    # the final norm is used: a file without it does not load
    sd = {f'backbone.{k}': v for k, v in src.backbone.state_dict().items()}
    del sd['backbone.ln1.weight']
    torch.save({'state_dict': sd}, path)
    with pytest.raises(CheckpointError, match='missing keys ln1.weight$'):
        t.init_weights()


def test_unused_pooling_norm_and_computed_buffers_may_be_absent(tmp_path):
    """EVA-02's pre-training file has no ``ln2`` (the pooled output's norm of
    ``out_type='avg_featmap'``, which a teacher does not use) and no RoPE
    frequencies (computed at build)."""
    src = _teacher('eva02', seed=4)
    sd = {
        f'backbone.{k}': v
        for k, v in src.backbone.state_dict().items()
        if not k.startswith('ln2.') and 'freqs_' not in k
    }
    assert len(sd) < len(src.backbone.state_dict())
    path = tmp_path / 'eva02_pre.pth'
    torch.save({'state_dict': sd}, path)
    t = ZooTeacher(copy.deepcopy(FAMILIES['eva02']), checkpoint=str(path))
    t.init_weights()
    x = _images(t)
    torch.testing.assert_close(t(x).tokens, src(x).tokens, atol=0, rtol=0)


def test_unknown_model_name_and_unsupported_backbone_are_one_line():
    with pytest.raises(ValueError) as err:
        ZooTeacher('vit-base-p14_no-such-model', checkpoint=False)
    msg = str(err.value)
    assert '\n' not in msg
    assert 'ZooTeacher(vit-base-p14_no-such-model): model=' in msg
    assert 'mmpretrain knows no model of that name' in msg
    with pytest.raises(TypeError) as err:
        ZooTeacher(
            dict(
                type='mmpretrain.ViTSAM',
                arch=dict(
                    embed_dims=48,
                    num_layers=1,
                    num_heads=3,
                    feedforward_channels=96,
                    global_attn_indexes=[0]),
                img_size=32,
                patch_size=8,
                out_channels=0),
            checkpoint=False)
    msg = str(err.value)
    assert '\n' not in msg
    assert 'backbone class ViTSAM is not supported' in msg
    assert 'VisionTransformer' in msg and 'ViTEVA02' in msg
    with pytest.raises(CheckpointError, match='teacher checkpoint unusable'):
        ZooTeacher(FAMILIES['vit'], checkpoint='/no/such/teacher.pth')


def test_frozen_and_interchangeable_with_frozen_teacher():
    t = _teacher('dinov2', mean=[1., 2., 3.], std=[50., 60., 70.])
    t.train()
    assert not t.training and not t.backbone.training
    assert all(not p.requires_grad for p in t.parameters())
    x = _images(t)
    out = t(x, out_layers=(1, ), parts=('q', 'k', 'v'))
    assert out.tokens.is_inference()
    assert set(out.relations[1]) == {'q', 'k', 'v'}
    # input re-normalisation as FrozenTeacher's
    t.set_input_norm(torch.tensor([0., 0., 0.]), torch.tensor([1., 1., 1.]))
    assert torch.allclose(t.in_scale.flatten(),
                          1 / torch.tensor([50., 60., 70.]))
    for name in ('embed_dims', 'num_heads', 'num_layers', 'set_input_norm',
                 'init_weights'):
        assert hasattr(FrozenTeacher, name) and hasattr(t, name)
    assert (t.embed_dims, t.num_heads, t.num_layers) == (EMBED, HEADS, 3)
    assert t.has_cls
    # pickled (a spawned worker) and deep-copied (EMA, say), it keeps working
    # on its own weights
    p = pickle.loads(pickle.dumps(t))
    for layers in ((0, ), (1, )):
        a, b = p(x, out_layers=layers), t(x, out_layers=layers)
        torch.testing.assert_close(a.tokens, b.tokens, atol=0, rtol=0)
        for i, rel in b.relations.items():
            torch.testing.assert_close(
                a.relations[i]['q'], rel['q'], atol=0, rtol=0)
    c = copy.deepcopy(t)
    _perturb(c.backbone, 9)
    assert not torch.equal(c(x).tokens, t(x).tokens)
    torch.testing.assert_close(c(x).tokens, c(x).tokens)


def test_register_vit_inserts_registers_after_cls_after_pos_embed():
    vit = RegisterViT(
        arch=ARCH,
        img_size=28,
        patch_size=14,
        num_register_tokens=3,
        out_type='raw')
    vit.init_weights()
    _perturb(vit, 3)
    vit.eval()
    seen = {}
    vit.layers[0].register_forward_pre_hook(
        lambda m, a: seen.setdefault('x', a[0]))
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        vit(x)
    tokens, _ = vit.patch_embed(x)
    want = torch.cat((vit.cls_token + vit.pos_embed[:, :1],
                      vit.register_tokens, tokens + vit.pos_embed[:, 1:]), 1)
    torch.testing.assert_close(seen['x'], want)
    assert vit.register_tokens.shape == (1, 3, EMBED)


def test_zoo_name_builds_its_own_config_without_download():
    """DINOv2-B/14 from its model-zoo name: built, not run (a ViT-B)."""
    t = ZooTeacher('vit-base-p14_dinov2-pre_3rdparty', checkpoint=False)
    assert type(t.backbone).__name__ == 'VisionTransformer'
    assert t.patch_size == 14 and t.img_size == (518, 518)
    assert t.grid == (37, 37)
    assert (t.embed_dims, t.num_heads, t.num_layers) == (768, 12, 12)
    # its own input normalisation, from its config
    assert t.mean == [123.675, 116.28, 103.53]
    assert t.checkpoint is None
    # without checkpoint=False: the metafile's weights, read in init_weights
    t = ZooTeacher('vit-base-p14_dinov2-pre_3rdparty')
    assert t.checkpoint.startswith('https://download.openmmlab.com/')
    t.set_img_size(224)
    assert t.grid == (16, 16)


def test_config_file_names_the_backbone():
    t = ZooTeacher(
        'mmpretrain::dinov2/vit-small-p14_dinov2-pre_headless.py',
        checkpoint=False,
        img_size=224)
    assert t.grid == (16, 16) and t.checkpoint is None
    with pytest.raises(
            FileNotFoundError, match='cannot read this mmpretrain '
            'config'):
        ZooTeacher('mmpretrain::dinov2/no-such.py', checkpoint=False)


def test_weights_cast_for_autocast_keep_the_added_parameters_fp32():
    t = _teacher('beitv2_pretrain')
    t._cast_weights(torch.bfloat16)
    fp32 = {
        n
        for n, p in t.backbone.named_parameters() if p.dtype == torch.float32
    }
    assert fp32 == {
        'cls_token', 'pos_embed', 'rel_pos_bias.relative_position_bias_table'
    }
    t = _teacher('dinov2_reg')
    t._cast_weights(torch.float16)
    assert {
        n
        for n, p in t.backbone.named_parameters() if p.dtype == torch.float32
    } == {'cls_token', 'pos_embed', 'register_tokens'}


def test_cuda_free_autocast_flag_is_inert_on_cpu():
    t = _teacher('eva02', autocast_dtype='float16')
    x = _images(t)
    assert t(x).tokens.dtype == torch.float32
