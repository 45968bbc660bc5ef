"""Fixtures shared by every package's tests: real local servers, started on demand."""

import os
from typing import Any

import pytest

# Ray on these machines: single-machine mode, loopback only, no usage reporting
# (see ARCHITECTURE.md, "Rules of these machines").
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

pytest_plugins: list[str] = [
    "handler_base.testing.ray_fixtures",
    "handler_base.testing.platform_fixtures",
    "chat_handler.testing",
    "handler_base.testing.nats_fixtures",
]

STEADY_VOICE = "steady"
"""A second TTS voice of the shared app: the packaged one without Piper's sampling noise,
so that the same text gives the same samples (ray_inference's TTS tests compare them)."""


@pytest.fixture(scope="session")
def model_app_descriptions(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """The cpu profile's model apps as ``aictl up`` deploys them, for ``model_apps``.

    Three arguments differ: Whisper joins its model in a folder of the session (not the
    user's data folder), TTS has the steady voice beside the default one, and the LLM is
    the smallest (SmolLM2-135M, three times faster than the default): the shared apps
    serve tests of mechanics. Tests of answer quality deploy the default LLM themselves
    (``chat_handler``'s ``test_answer_quality``).
    """
    from aictl.apps import applications
    from ray_inference.tts import DEFAULT_VOICE, DEFAULT_VOICE_SOURCE

    steady = {"source": DEFAULT_VOICE_SOURCE, "noise_scale": 0.0, "noise_w_scale": 0.0}
    overrides: dict[str, dict[str, Any]] = {
        "whisper": {"data_dir": str(tmp_path_factory.mktemp("whisper-data"))},
        "llm": {"model": "smollm2-135m"},
        "tts": {"voices": {DEFAULT_VOICE: DEFAULT_VOICE_SOURCE, STEADY_VOICE: steady}},
    }
    return [
        app.model_copy(update={"args": {**app.args, **overrides.get(app.name, {})}})
        for app in applications()
        if app.role == "model"
    ]
