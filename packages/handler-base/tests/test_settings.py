from pathlib import Path

import pytest
from pydantic import ValidationError

from handler_base import Settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No platform variable leaks in from the machine, and no .env file is read."""
    for name in list(Settings.model_fields):
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_defaults_run_the_embedded_stack(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("DATA_DIR", str(tmp_path / "data"))
    settings = Settings()
    assert settings.nats_servers == ["nats://127.0.0.1:4222"]
    assert settings.milvus_target == str(tmp_path / "data" / "milvus.db")
    assert settings.milvus_is_lite
    assert settings.otel_exporter_otlp_endpoint is None
    assert settings.service_url("embeddings") == "http://127.0.0.1:8000/embeddings"
    assert settings.service_url("stt") == "http://127.0.0.1:8000/whisper"


def test_environment_variables_of_the_decision_record(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("NATS_URL", "nats://nats.ai-ml.svc.cluster.local:4222")
    clean_env.setenv("MILVUS_HOST", "milvus.ai-ml.svc.cluster.local")
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4317")
    clean_env.setenv("LLM_URL", "http://llm.example:8000/llm/")
    settings = Settings()
    assert settings.nats_servers == ["nats://nats.ai-ml.svc.cluster.local:4222"]
    assert settings.milvus_target == "http://milvus.ai-ml.svc.cluster.local:19530"
    assert not settings.milvus_is_lite
    assert settings.otel_exporter_otlp_endpoint == "http://otel-collector:4317"
    assert settings.service_url("llm") == "http://llm.example:8000/llm"


def test_milvus_uri_wins_over_host(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MILVUS_HOST", "milvus")
    clean_env.setenv("MILVUS_URI", "http://127.0.0.1:19531")
    assert Settings().milvus_target == "http://127.0.0.1:19531"


def test_blank_values_mean_unset(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MILVUS_URI", "  ")
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    settings = Settings()
    assert settings.milvus_uri is None
    assert settings.otel_exporter_otlp_endpoint is None


def test_several_nats_servers(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("NATS_URL", "nats://127.0.0.1:4222, nats://127.0.0.1:4223")
    assert Settings().nats_servers == ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("NATS_URL", "http://127.0.0.1:4222", "not a NATS server URL"),
        ("NATS_URL", "127.0.0.1:4222", "not a NATS server URL"),
        ("MILVUS_PORT", "0", "greater than 0"),
        ("HTTP_RETRIES", "many", "valid integer"),
        ("LLM_URL", "not a url", "URL"),
        ("NATS_TLS_CERT_FILE", "/tmp/cert.pem", "go together"),
    ],
)
def test_bad_values_are_rejected_with_the_reason(
    clean_env: pytest.MonkeyPatch, name: str, value: str, complaint: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ValidationError, match=complaint):
        Settings()


def test_secrets_never_print(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("NATS_PASSWORD", "hunter2-nats")
    clean_env.setenv("NATS_TOKEN", "hunter2-token")
    clean_env.setenv("MILVUS_TOKEN", "hunter2-milvus")
    clean_env.setenv("SERVICE_API_KEY", "hunter2-key")
    settings = Settings()
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert "hunter2" not in shown
    assert settings.nats_password is not None
    assert settings.nats_password.get_secret_value() == "hunter2-nats"


def test_secrets_from_files(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "nats_password").write_text("from-a-file")
    settings = Settings(_secrets_dir=secrets)
    assert settings.nats_password is not None
    assert settings.nats_password.get_secret_value() == "from-a-file"


def test_dotenv_file_is_read(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("NATS_URL=nats://127.0.0.1:5222\n")
    assert Settings().nats_url == "nats://127.0.0.1:5222"
