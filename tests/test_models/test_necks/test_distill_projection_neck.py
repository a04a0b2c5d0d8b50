import pytest
import torch

from mmhybrid.models.necks import DistillProjectionNeck


@pytest.mark.parametrize('proj_type', ['linear', 'mlp'])
def test_shapes(proj_type):
    neck = DistillProjectionNeck(8, 12, proj_type=proj_type)
    neck.init_weights()
    assert neck(torch.randn(2, 5, 8)).shape == (2, 5, 12)


def test_bad_type():
    with pytest.raises(ValueError, match="'conv'"):
        DistillProjectionNeck(8, 12, proj_type='conv')
