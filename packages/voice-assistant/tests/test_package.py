from importlib.metadata import distribution

import voice_assistant


def test_installed_distribution_matches_the_module() -> None:
    dist = distribution("voice-assistant")
    assert dist.version == voice_assistant.__version__
    assert any(req.startswith("handler-base") for req in dist.requires or [])
