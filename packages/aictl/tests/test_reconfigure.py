"""`aictl configure`'s parts that need no cluster: reading --set, changing one app, checking."""

from pathlib import Path

import pytest

from aictl.apps import StackOptions
from aictl.reconfigure import SettingError, check_arguments, parse_setting, with_settings
from aictl.render import ServeOptions, serve_config


@pytest.fixture
def config() -> dict[str, object]:
    return serve_config(StackOptions(), ServeOptions())


def test_values_are_json_text_or_a_file(tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Be brief.\n{passages}\n", encoding="utf-8")
    assert parse_setting("rag.temperature=0.2") == (["rag", "temperature"], 0.2)
    assert parse_setting('rag.budget={"context_tokens": 4096}') == (
        ["rag", "budget"],
        {"context_tokens": 4096},
    )
    assert parse_setting("rag.no_sources_answer=No idea.") == (
        ["rag", "no_sources_answer"],
        "No idea.",
    )
    assert parse_setting("store=memory") == (["store"], "memory")
    assert parse_setting(f"rag.prompt_template=@{prompt}") == (
        ["rag", "prompt_template"],
        "Be brief.\n{passages}\n",
    )
    for bad in ["no-equals", "=value", "rag..temperature=1", f"x=@{tmp_path / 'missing'}"]:
        with pytest.raises(SettingError):
            parse_setting(bad)


def test_only_the_named_application_changes(config: dict[str, object]) -> None:
    changed = with_settings(config, "chat", [parse_setting("rag.temperature=0.3")])
    before = {a["name"]: a for a in config["applications"]}  # type: ignore[attr-defined]
    after = {a["name"]: a for a in changed["applications"]}
    assert after["chat"]["args"]["rag"] == {"temperature": 0.3}
    assert "rag" not in before["chat"]["args"]  # the original is left as it was
    assert {n: a for n, a in after.items() if n != "chat"} == {
        n: a for n, a in before.items() if n != "chat"
    }
    check_arguments(changed, "chat")


def test_bad_settings_are_refused_before_anything_is_applied(config: dict[str, object]) -> None:
    with pytest.raises(SettingError, match="no application 'chatt'"):
        with_settings(config, "chatt", [parse_setting("rag.temperature=0.3")])
    template = with_settings(config, "chat", [parse_setting("rag.prompt_template=No place.")])
    with pytest.raises(SettingError, match=r"chat refuses these arguments: .*passages"):
        check_arguments(template, "chat")
    unknown = with_settings(config, "chat", [parse_setting("rag.temprature=0.3")])
    with pytest.raises(SettingError, match="temprature"):
        check_arguments(unknown, "chat")
    nested = with_settings(config, "chat", [parse_setting("store=memory")])
    with pytest.raises(SettingError, match="store is not an object"):
        with_settings(nested, "chat", [parse_setting("store.kind=x")])
