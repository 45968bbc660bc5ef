"""Clients of the platform's services: a Ray Serve handle first, HTTP as the fallback."""

from handler_base.clients.base import CallPath, ClientMode, ServerSentEvent, ServiceClient
from handler_base.clients.chat import ChatClient
from handler_base.clients.embeddings import EmbeddingsClient
from handler_base.clients.knowledge import KnowledgeClient
from handler_base.clients.llm import LLMClient
from handler_base.clients.reranker import RerankerClient
from handler_base.clients.stt import STTClient
from handler_base.clients.tts import TTSClient
from handler_base.clients.voice import VoiceClient

__all__ = [
    "CallPath",
    "ChatClient",
    "ClientMode",
    "EmbeddingsClient",
    "KnowledgeClient",
    "LLMClient",
    "RerankerClient",
    "STTClient",
    "ServerSentEvent",
    "ServiceClient",
    "TTSClient",
    "VoiceClient",
]
