from importlib.metadata import distribution

import aictl


def test_installed_distribution_matches_the_module() -> None:
    dist = distribution("aictl")
    assert dist.version == aictl.__version__
    assert any(req.startswith("handler-base") for req in dist.requires or [])
