from importlib.metadata import distribution

import ray_inference


def test_installed_distribution_matches_the_module() -> None:
    dist = distribution("ray-inference")
    assert dist.version == ray_inference.__version__
    assert any(req.startswith("handler-base") for req in dist.requires or [])
