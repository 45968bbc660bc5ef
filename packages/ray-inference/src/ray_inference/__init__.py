"""Model deployments on Ray Serve: embeddings, reranker, LLM, Whisper, TTS.

Not built yet: this package only reserves its place in the workspace. Its issue
(see the project's issue list) brings the code.
"""

__version__ = "0.1.0"
