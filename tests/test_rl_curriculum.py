"""The pass-rate curriculum promotes on the rolling mean, stops at the last level, round-trips its state,
and rejects bad levels naming the key."""
import pytest

from vagent_jax.config import ConfigError, from_dict
from vagent_jax.rl.curriculum import Curriculum, CurriculumConfig


def test_promotes_on_rolling_mean_and_stops_at_last_level() -> None:
    c = Curriculum(CurriculumConfig(levels=(1, 2, 3), promote_at=0.5, window=2))
    assert c.level == 1
    assert not c.observe(0.9)  # window not full yet
    assert c.observe(0.2) and c.level == 2  # mean 0.55 >= 0.5
    assert not c.observe(0.4) and not c.observe(0.5)  # mean 0.45 < 0.5
    assert c.observe(0.7) and c.level == 3  # mean 0.6
    assert not c.observe(1.0) and not c.observe(1.0) and c.level == 3


def test_state_round_trip_promotes_at_the_same_step() -> None:
    cfg = CurriculumConfig(levels=(1, 2), promote_at=0.5, window=3)
    a = Curriculum(cfg)
    a.observe(0.6)
    b = Curriculum(cfg, a.state())
    assert [a.observe(0.5), a.observe(0.4)] == [b.observe(0.5), b.observe(0.4)] == [False, True]


def test_disabled_curriculum_never_promotes() -> None:
    c = Curriculum(CurriculumConfig())
    assert not c.enabled and c.level is None and not c.observe(1.0)


@pytest.mark.parametrize("data, key", [({"levels": [2, 1]}, "curriculum.levels"),
                                       ({"levels": [0]}, "curriculum.levels"),
                                       ({"promote_at": 0.0}, "curriculum.promote_at"),
                                       ({"window": 0}, "curriculum.window")])
def test_bad_config_names_the_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        from_dict(CurriculumConfig, data, prefix="curriculum")
