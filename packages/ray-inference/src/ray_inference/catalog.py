"""Every model application of the platform, as its spec, in the order they deploy.

``aictl.apps`` renders one Serve application per spec; importing this module imports
each model module (which binds its ``app`` but loads no model).
"""

from __future__ import annotations

from ray_inference import embeddings, llm, reranker, tts, whisper
from ray_inference.spec import ModelAppSpec

MODEL_APPS: tuple[ModelAppSpec, ...] = (
    embeddings.SPEC,
    reranker.SPEC,
    llm.SPEC,
    whisper.SPEC,
    tts.SPEC,
)
