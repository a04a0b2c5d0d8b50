from ...vit_checkpoints import (convert_vit_state_dict, detect_format,
                                load_vit_weights)
from .frozen_teacher import FrozenTeacher
from .zoo_teacher import ZooTeacher

__all__ = [
    'FrozenTeacher', 'load_vit_weights', 'convert_vit_state_dict',
    'detect_format', 'ZooTeacher'
]
