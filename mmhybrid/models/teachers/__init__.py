from .frozen_teacher import FrozenTeacher, load_vit_weights
from .vit_formats import convert_vit_state_dict, detect_format
from .zoo_teacher import ZooTeacher

__all__ = [
    'FrozenTeacher', 'load_vit_weights', 'convert_vit_state_dict',
    'detect_format', 'ZooTeacher'
]
