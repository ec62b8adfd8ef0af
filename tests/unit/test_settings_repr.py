"""Settings never show a secret in repr() or str()."""

from __future__ import annotations

import dataclasses
import re

import pytest

from lapverse_streams.settings import Settings

SECRET_NAME = re.compile(r"token|key|secret|password", re.IGNORECASE)
SECRET_FIELDS = [f.name for f in dataclasses.fields(Settings) if SECRET_NAME.search(f.name)]


def test_every_secret_looking_field_is_left_out_of_repr() -> None:
    assert {"admin_token", "news_ai_key", "share_api_key", "kaggle_key"} <= set(SECRET_FIELDS)
    shown = [f.name for f in dataclasses.fields(Settings) if f.name in SECRET_FIELDS and f.repr]
    assert shown == []


def test_repr_and_str_hide_secret_values() -> None:
    values = {name: f"s3cret-{name}-value" for name in SECRET_FIELDS}
    settings = Settings(**values)  # type: ignore[arg-type]
    for text in (repr(settings), str(settings), f"{settings!r}", f"{settings}"):
        assert "Settings(" in text
        for value in values.values():
            assert value not in text


def test_secrets_from_the_environment_stay_hidden() -> None:
    env = {"LAPVERSE_ADMIN_TOKEN": "adm-7c1e", "KAGGLE_KEY": "kag-91ab"}
    settings = Settings.from_env(env)
    assert settings.admin_token == "adm-7c1e"
    assert settings.kaggle_key == "kag-91ab"
    assert "adm-7c1e" not in repr(settings)
    assert "kag-91ab" not in repr(settings)


def test_exactly_once_makes_readers_read_committed() -> None:
    settings = Settings.from_env({"LAPVERSE_PROCESSING_GUARANTEE": "exactly_once"})
    assert settings.isolation_level == "read_committed"
    assert Settings.from_env({}).isolation_level == "read_uncommitted"


def test_an_unknown_guarantee_is_refused_naming_both() -> None:
    with pytest.raises(ValueError, match="at_least_once or exactly_once"):
        Settings.from_env({"LAPVERSE_PROCESSING_GUARANTEE": "at_most_once"})


def test_an_unknown_engine_is_refused() -> None:
    with pytest.raises(ValueError, match="tansu or kafka"):
        Settings.from_env({"LAPVERSE_EMBEDDED_BROKER": "redpanda"})
