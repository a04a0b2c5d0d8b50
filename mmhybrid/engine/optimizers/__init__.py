from .layer_decay_constructor import (ViTLayerDecayOptimWrapperConstructor,
                                      get_vit_layer_depth, is_no_decay)

__all__ = [
    'ViTLayerDecayOptimWrapperConstructor', 'get_vit_layer_depth',
    'is_no_decay'
]
