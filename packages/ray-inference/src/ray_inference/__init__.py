"""Model deployments on Ray Serve: embeddings, reranker, LLM, Whisper, TTS.

One deployment per module, each with an OpenAI-style FastAPI ingress, a health route and
plain async methods for Ray handle calls; each module exposes ``app`` and ``build_app``
for the Serve config (``ray_inference.embeddings:build_app`` ...) and ``SPEC``, the one
description of the application (:mod:`ray_inference.spec`; all of them in
:mod:`ray_inference.catalog`). Models come from model sources
(:mod:`ray_inference.model_sources`), never from a download at run time.
"""

__version__ = "0.1.0"
