"""Speech in, speech out: STT, RAG, LLM and TTS as a Ray Serve application.

``voice_assistant:app`` is the application (route prefix ``/voice``) and
``voice_assistant:build_app`` its builder; both load Ray Serve on first use only.
The flow itself is :class:`voice_assistant.assistant.VoiceAssistant`.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "app", "build_app"]


def __getattr__(name: str) -> Any:
    if name in ("app", "build_app"):
        from voice_assistant import deployment

        return deployment.build_app() if name == "app" else deployment.build_app
    raise AttributeError(f"module 'voice_assistant' has no attribute {name!r}")
