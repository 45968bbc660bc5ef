from importlib.metadata import distribution

import pipeline_bridge


def test_installed_distribution_matches_the_module() -> None:
    dist = distribution("pipeline-bridge")
    assert dist.version == pipeline_bridge.__version__
    assert any(req.startswith("handler-base") for req in dist.requires or [])
