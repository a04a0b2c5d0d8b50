import pytest

from mmhybrid.engine.hooks import ProgressiveMaskingHook


def test_ratio_schedule():
    hook = ProgressiveMaskingHook(final_ratio=0.5)
    assert hook.ratio_at(0, 100) == 0.0
    assert hook.ratio_at(50, 100) == pytest.approx(0.25)
    assert hook.ratio_at(100, 100) == pytest.approx(0.5)
    hook = ProgressiveMaskingHook(
        final_ratio=0.4, schedule='cosine', start_iter=10, end_iter=20)
    assert hook.ratio_at(5, 100) == 0.0
    assert hook.ratio_at(15, 100) == pytest.approx(0.2)
    assert hook.ratio_at(60, 100) == pytest.approx(0.4)


@pytest.mark.parametrize('kwargs,match', [
    (dict(final_ratio=1.0),
     r'final_ratio=1.0: mask ratio must be in \[0, 1\)'),
    (dict(schedule='exp'), "schedule='exp': expected one of"),
    (dict(start_iter=5, end_iter=5), 'end_iter'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProgressiveMaskingHook(**kwargs)
