from importlib.metadata import distribution

import chat_handler


def test_installed_distribution_matches_the_module() -> None:
    dist = distribution("chat-handler")
    assert dist.version == chat_handler.__version__
    assert any(req.startswith("handler-base") for req in dist.requires or [])
