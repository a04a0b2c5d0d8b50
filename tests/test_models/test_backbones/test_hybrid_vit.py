import pytest
import torch
from mmpretrain.models import VisionTransformer
from mmpretrain.registry import MODELS

from mmhybrid.models.losses import relation_logits
from mmhybrid.models.utils import gather_tokens, with_cls_index
from mmhybrid.testing import TINY_ARCH, tiny_vit_cfg


def _build(**kw):
    torch.manual_seed(0)
    model = MODELS.build(tiny_vit_cfg(**kw))
    model.init_weights()
    model.eval()  # mmpretrain's BaseBackbone.train() returns None
    return model


def test_key_layout_is_mmpretrain():
    model = _build()
    ref = VisionTransformer(
        arch=TINY_ARCH, img_size=32, patch_size=8, out_type='raw')
    assert set(model.state_dict()) == set(ref.state_dict())
    missing, unexpected = ref.load_state_dict(model.state_dict(), strict=True)
    assert not missing and not unexpected
    x = torch.randn(2, 3, 32, 32)
    ref.eval()
    torch.testing.assert_close(model(x)[0], ref(x)[0])


@pytest.mark.parametrize('pre_norm', [False, True])
def test_forward_distill_matches_forward(pre_norm):
    model = _build(pre_norm=pre_norm)
    x = torch.randn(2, 3, 32, 32)
    out = model.forward_distill(x)
    torch.testing.assert_close(out.tokens, model(x)[0], rtol=1e-5, atol=1e-5)
    assert out.relations == {} and out.cls_attn is None


@pytest.mark.parametrize('size,norm', [((32, 32), False), ((32, 48), True),
                                       ((30, 37), False)])
def test_patch_matmul_equals_patch_conv(size, norm):
    """The matmul patch embedding gives the conv's tokens and gradients; a size
    the patches do not tile (30x37) goes through the module (adaptive
    padding)."""
    from mmcv.cnn.bricks.transformer import PatchEmbed

    from mmhybrid.models.backbones.hybrid_vit import embed_patches
    torch.manual_seed(0)
    pe = PatchEmbed(
        in_channels=3,
        embed_dims=16,
        kernel_size=8,
        stride=8,
        norm_cfg=dict(type='LN') if norm else None).double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)  # summation order aside
    ref, ref_size = pe(x)
    ref.square().sum().backward()
    ref_grads = [p.grad.clone() for p in pe.parameters()]
    pe.zero_grad()
    if size[0] % 8 == 0 and size[1] % 8 == 0:
        # the matmul must be what runs here, not the module compared with
        # itself
        pe.forward = None
    out, out_size = embed_patches(pe, x)
    out.square().sum().backward()
    assert out_size == ref_size
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for g, r in zip([p.grad for p in pe.parameters()], ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


def _naive_kept_forward(model, x, keep_idx):
    """Plain reference: mmpretrain's blocks on explicitly gathered tokens."""
    tokens, _ = model.patch_embed(x)
    B = x.shape[0]
    tokens = torch.cat([model.cls_token.expand(B, -1, -1), tokens], 1)
    tokens = tokens + model.pos_embed
    tokens = gather_tokens(tokens, with_cls_index(keep_idx))
    tokens = model.pre_norm(tokens)
    inputs = []
    for layer in model.layers:
        inputs.append(tokens)
        tokens = layer(tokens)
    return model.ln1(tokens), inputs


def test_kept_tokens_equal_plain_blocks():
    model = _build()
    x = torch.randn(2, 3, 32, 32)
    keep = torch.tensor([[0, 3, 5, 9, 15], [1, 2, 7, 8, 14]])
    out = model.forward_distill(
        x, keep, out_layers=[0, 2], parts=('q', 'k', 'v'))
    ref, block_inputs = _naive_kept_forward(model, x, keep)
    assert out.tokens.shape == (2, 6, TINY_ARCH['embed_dims'])
    torch.testing.assert_close(out.tokens, ref, rtol=1e-5, atol=1e-5)
    # q/k/v are the attention's own projections of the normed block input
    for i in (0, 2):
        layer = model.layers[i]
        qkv = layer.attn.qkv(layer.ln1(block_inputs[i]))
        C = TINY_ARCH['embed_dims']
        torch.testing.assert_close(out.relations[i]['q'], qkv[..., :C])
        torch.testing.assert_close(out.relations[i]['k'], qkv[..., C:2 * C])
        torch.testing.assert_close(out.relations[i]['v'], qkv[..., 2 * C:])
    assert set(out.relations) == {0, 2}


def test_attention_maps_and_cls_importance():
    model = _build()
    x = torch.randn(2, 3, 32, 32)
    maps = model.attention_maps(x)
    assert set(maps) == {0, 1, 2}
    last = maps[2]
    assert last.shape == (2, 3, 17, 17)
    torch.testing.assert_close(last.sum(-1), torch.ones(2, 3, 17))
    # explicit reference for the last block's map
    _, block_inputs = _naive_kept_forward(model, x,
                                          torch.arange(16).expand(2, 16))
    layer = model.layers[2]
    qkv = layer.attn.qkv(layer.ln1(block_inputs[2]))
    C = TINY_ARCH['embed_dims']
    ref = relation_logits(qkv[..., :C], qkv[..., C:2 * C], 3).softmax(-1)
    torch.testing.assert_close(last, ref, rtol=1e-5, atol=1e-6)
    cls_attn = model.forward_distill(x, cls_attn=True).cls_attn
    torch.testing.assert_close(
        cls_attn, last[:, :, 0, 1:].mean(1), rtol=1e-5, atol=1e-6)


def test_bad_arguments():
    model = _build()
    with pytest.raises(IndexError, match=r'block\(s\) \[3\]'):
        model.forward_distill(torch.randn(1, 3, 32, 32), out_layers=[3])
    with pytest.raises(
            ValueError, match='img_size=36: not divisible by patch_size=8'):
        MODELS.build(tiny_vit_cfg(img_size=36))


def test_activation_checkpointing_same_values_and_grads():
    plain = _build()
    cp = _build(with_cp=True)
    cp.load_state_dict(plain.state_dict())
    plain.train()
    cp.train()
    x = torch.randn(2, 3, 32, 32)
    keep = torch.tensor([[0, 3, 5, 9], [1, 2, 7, 8]])
    outs = []
    for model in (plain, cp):
        out = model.forward_distill(x, keep, out_layers=[1])
        loss = out.tokens.square().mean() + out.relations[1]['q'].mean()
        loss.backward()
        outs.append((out.tokens.detach(), {
            k: p.grad.clone()
            for k, p in model.named_parameters()
        }))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    for k in outs[0][1]:
        torch.testing.assert_close(
            outs[0][1][k], outs[1][1][k], rtol=1e-5, atol=1e-7)
