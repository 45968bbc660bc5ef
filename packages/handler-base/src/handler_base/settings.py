"""Platform settings, read from the environment (and a ``.env`` file when present).

The defaults run the embedded stack on one machine: NATS on loopback, a Milvus Lite
database under the data folder, the Serve proxy on ``127.0.0.1:8000``. Secrets are
``SecretStr`` so they never appear in ``repr``, logs or ``aictl status``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AnyUrl, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from handler_base.services import EMBEDDINGS, LLM, RERANKER, TTS, WHISPER, ModelService

DEFAULT_SERVE_URL = "http://127.0.0.1:8000"


def default_data_dir() -> Path:
    """Where the embedded stack keeps its data unless ``DATA_DIR`` says otherwise."""
    return Path.home() / ".local" / "share" / "ray-ai-platform"


class Settings(BaseSettings):
    """Every setting of the platform, one environment variable each (same name, upper case)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        # A bad value may be a secret, or a URL with one: errors do not repeat it.
        hide_input_in_errors=True,
        # Secrets mounted as files (Kubernetes, Docker): SECRETS_DIR/NATS_PASSWORD, ...
        secrets_dir=os.environ.get("SECRETS_DIR") or None,
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    """Folder for the embedded stack's data: the Milvus Lite database, joined models."""

    # --- NATS -------------------------------------------------------------------------
    nats_url: str = Field(default="nats://127.0.0.1:4222", repr=False)
    """One or more server URLs, comma separated; left out of ``repr`` (user info is a secret)."""
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_token: SecretStr | None = None
    nats_creds_file: Path | None = None
    """A NATS ``.creds`` file (JWT and NKey seed)."""
    nats_tls_ca_file: Path | None = None
    nats_tls_cert_file: Path | None = None
    nats_tls_key_file: Path | None = None
    nats_tls_hostname: str | None = None
    nats_name: str = "ray-ai-platform"
    nats_connect_timeout_s: float = Field(default=2.0, gt=0)
    nats_reconnect_wait_s: float = Field(default=0.5, gt=0)
    """First wait between reconnect attempts; it doubles up to ``nats_reconnect_max_wait_s``."""
    nats_reconnect_max_wait_s: float = Field(default=5.0, gt=0)
    nats_max_reconnect_attempts: int = Field(default=-1, ge=-1)
    """-1: keep trying for ever."""
    nats_request_timeout_s: float = Field(default=30.0, gt=0)
    nats_chat_subject: str = "ai.chat.request"
    """Subject of chat requests over NATS (ChatRequest in, ChatResponse out)."""
    nats_voice_subject: str = "voice.request"
    """Subject of voice requests over NATS (VoiceRequest in, VoiceResponse out)."""

    # --- Milvus -----------------------------------------------------------------------
    milvus_uri: str | None = None
    """``http://host:19530`` for a server, or a ``.db`` path for Milvus Lite."""
    milvus_host: str | None = None
    milvus_port: int = Field(default=19530, gt=0, lt=65536)
    milvus_token: SecretStr | None = None
    milvus_db_name: str = "default"
    embedding_dim: int = Field(default=384, gt=0)
    """Dimension of the vectors the embeddings model makes (all-MiniLM-L6-v2: 384)."""

    # --- Telemetry --------------------------------------------------------------------
    otel_exporter_otlp_endpoint: str | None = None
    """OTLP collector; unset means telemetry is recorded in-process and never exported."""
    otel_exporter_otlp_protocol: Literal["grpc", "http/protobuf"] = "grpc"
    otel_service_name: str = "ray-ai-platform"

    # --- Inference services: HTTP fallback when no Ray handle is reachable ------------
    # One per model service, named by its contract's ``url_setting`` (handler_base.services).
    embeddings_url: AnyUrl = AnyUrl(EMBEDDINGS.url_under(DEFAULT_SERVE_URL))
    reranker_url: AnyUrl = AnyUrl(RERANKER.url_under(DEFAULT_SERVE_URL))
    llm_url: AnyUrl = AnyUrl(LLM.url_under(DEFAULT_SERVE_URL))
    stt_url: AnyUrl = AnyUrl(WHISPER.url_under(DEFAULT_SERVE_URL))
    tts_url: AnyUrl = AnyUrl(TTS.url_under(DEFAULT_SERVE_URL))
    chat_url: AnyUrl = AnyUrl(f"{DEFAULT_SERVE_URL}/chat")
    voice_url: AnyUrl = AnyUrl(f"{DEFAULT_SERVE_URL}/voice")
    service_api_key: SecretStr | None = None
    """Bearer token sent to the HTTP fallback, when the services require one."""

    # --- Access control of the HTTP apps (server side) ---------------------------------
    api_keys: SecretStr | None = None
    """Keys the HTTP apps accept (``Authorization: Bearer`` or ``X-API-Key``), comma
    separated; unset or blank: the routes are open. Read by each replica from its own
    environment (or ``SECRETS_DIR/API_KEYS``), never from the Serve config."""
    http_timeout_s: float = Field(default=60.0, gt=0)
    http_connect_timeout_s: float = Field(default=2.0, gt=0)
    http_retries: int = Field(default=3, ge=0, le=10)
    """Retries for connection errors and 503 only; other errors are never retried."""

    @field_validator("nats_url")
    @classmethod
    def _check_nats_urls(cls, value: str) -> str:
        for url in (u.strip() for u in value.split(",")):
            scheme = urlsplit(url).scheme
            if scheme not in {"nats", "tls", "ws", "wss"} or not urlsplit(url).hostname:
                raise ValueError(  # without the URL itself: it may carry a password
                    f"not a NATS server URL (scheme {scheme!r}; expected nats://host:port)"
                )
        return value

    @field_validator("milvus_uri", "milvus_host", "otel_exporter_otlp_endpoint", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "nats_creds_file", "nats_tls_ca_file", "nats_tls_cert_file", "nats_tls_key_file"
    )
    @classmethod
    def _absolute_path(cls, value: Path | None) -> Path | None:
        """Made absolute where the settings are read: Ray actors run in other folders."""
        return value.expanduser().absolute() if value is not None else None

    @model_validator(mode="after")
    def _check_tls_pair(self) -> Settings:
        if (self.nats_tls_cert_file is None) != (self.nats_tls_key_file is None):
            raise ValueError("NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE go together")
        return self

    @property
    def nats_servers(self) -> list[str]:
        """The NATS server URLs as a list."""
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    @property
    def inbox_dir(self) -> Path:
        """Where pipeline triggers may name files by default (``DATA_DIR/inbox``)."""
        return self.data_dir / "inbox"

    @property
    def milvus_target(self) -> str:
        """Where Milvus is: ``MILVUS_URI``, else ``MILVUS_HOST``, else a Milvus Lite file."""
        if self.milvus_uri:
            return self.milvus_uri
        if self.milvus_host:
            return f"http://{self.milvus_host}:{self.milvus_port}"
        return str(self.data_dir / "milvus.db")

    @property
    def milvus_is_lite(self) -> bool:
        """True when the target is an embedded Milvus Lite database file."""
        return not self.milvus_target.startswith(("http://", "https://", "tcp://", "unix:"))

    def accepted_api_keys(self) -> list[str]:
        """The keys of ``API_KEYS``, blanks dropped; empty when access is open."""
        if self.api_keys is None:
            return []
        return [k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()]

    def service_url(self, service: str | ModelService) -> str:
        """The HTTP fallback base URL of a service, without a trailing /.

        Args:
            service: A model service's contract, or the setting name of a service
                (``chat``, ``voice``, ``embeddings``, ``stt``...: field ``<name>_url``).
        """
        name = service.url_setting if isinstance(service, ModelService) else service
        url: AnyUrl = getattr(self, f"{name}_url")
        return str(url).rstrip("/")
