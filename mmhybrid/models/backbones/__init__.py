from .hybrid_vit import DistillOutput, HybridViT
from .register_vit import RegisterViT
from .strict_pretrained_vit import StrictPretrainedViT
from .windowed_attention import WindowedAttention
from .windowed_vit import WindowedViT

__all__ = [
    'HybridViT', 'DistillOutput', 'StrictPretrainedViT', 'WindowedAttention',
    'WindowedViT', 'RegisterViT'
]
