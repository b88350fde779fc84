"""Where a setting comes from: flags beat environment beat TOML beat defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from tinystack import config
from tinystack.config import ROLES, Settings, load


GROUPS = {"identity": config.IdentitySettings, "image": config.ImageSettings,
          "compute": config.ComputeSettings, "compute_node": config.ComputeNodeSettings,
          "network": config.NetworkSettings}
"""Settings groups: each is a [section] of the sample config."""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No TINYSTACK_* from the caller's shell, and a data dir of the test's own."""
    for name in list(os.environ):
        if name.startswith(("TINYSTACK_", "_TINYSTACK_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TINYSTACK_DATA_DIR", str(tmp_path / "data"))


def write_toml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults(tmp_path):
    settings = load()

    assert settings.port == 8080
    assert settings.host == "127.0.0.1"
    assert settings.bus == "memory://"
    assert settings.roles == list(ROLES)
    assert settings.identity.token_expiration == 3600
    assert settings.db_url == f"sqlite:///{tmp_path / 'data' / 'tinystack.db'}"
    assert settings.pid_file == tmp_path / "data" / "tinystack.pid"
    assert settings.log_file == tmp_path / "data" / "logs" / "tinystack.log"


def test_default_data_dir_without_env(monkeypatch):
    monkeypatch.delenv("TINYSTACK_DATA_DIR")
    assert Settings.model_fields["data_dir"].default == Path("/var/lib/tinystack")


def test_toml_beats_defaults(tmp_path):
    toml = write_toml(tmp_path / "t.toml", 'port = 9000\nbus = "amqp://rabbit/"\n')

    settings = load(toml)

    assert settings.port == 9000
    assert settings.bus == "amqp://rabbit/"
    assert settings.host == "127.0.0.1"


def test_env_beats_toml(tmp_path, monkeypatch):
    toml = write_toml(tmp_path / "t.toml", "port = 9000\nhost = '0.0.0.0'\n")
    monkeypatch.setenv("TINYSTACK_PORT", "9100")

    settings = load(toml)

    assert settings.port == 9100
    assert settings.host == "0.0.0.0"


def test_flags_beat_env(tmp_path, monkeypatch):
    toml = write_toml(tmp_path / "t.toml", "port = 9000\n")
    monkeypatch.setenv("TINYSTACK_PORT", "9100")

    assert load(toml, port=9200).port == 9200


def test_flags_set_to_none_are_ignored(monkeypatch):
    monkeypatch.setenv("TINYSTACK_PORT", "9100")

    settings = load(None, port=None, host=None, roles=None)

    assert settings.port == 9100
    assert settings.roles == list(ROLES)


def test_toml_in_the_data_dir_is_read_without_config(tmp_path):
    write_toml(tmp_path / "data" / "tinystack.toml", "port = 9300\n")

    assert load().port == 9300


def test_data_dir_flag_chooses_the_toml(tmp_path):
    write_toml(tmp_path / "data" / "tinystack.toml", "port = 9300\n")
    write_toml(tmp_path / "other" / "tinystack.toml", "port = 9400\n")

    settings = load(data_dir=tmp_path / "other")

    assert settings.port == 9400
    assert settings.data_dir == tmp_path / "other"


def test_config_file_replaces_the_data_dir_toml(tmp_path):
    write_toml(tmp_path / "data" / "tinystack.toml", "port = 9300\nregion = 'DataDir'\n")
    explicit = write_toml(tmp_path / "explicit.toml", "port = 9500\n")

    settings = load(explicit)

    assert settings.port == 9500
    assert settings.region == "RegionOne"


def test_nested_identity_from_toml(tmp_path):
    toml = write_toml(tmp_path / "t.toml",
                      "[identity]\ntoken_expiration = 60\nlockout_failure_attempts = 5\n")

    settings = load(toml)

    assert settings.identity.token_expiration == 60
    assert settings.identity.lockout_failure_attempts == 5
    assert settings.identity.max_active_keys == 3


def test_nested_identity_from_env(monkeypatch):
    monkeypatch.setenv("TINYSTACK_IDENTITY__TOKEN_EXPIRATION", "120")
    monkeypatch.setenv("TINYSTACK_IDENTITY__CACHE_TTL", "1.5")

    settings = load()

    assert settings.identity.token_expiration == 120
    assert settings.identity.cache_ttl == 1.5


def test_nested_env_and_toml_merge_key_by_key(tmp_path, monkeypatch):
    toml = write_toml(tmp_path / "t.toml",
                      "[identity]\ntoken_expiration = 60\nlockout_duration = 10\n")
    monkeypatch.setenv("TINYSTACK_IDENTITY__TOKEN_EXPIRATION", "120")

    settings = load(toml)

    assert settings.identity.token_expiration == 120
    assert settings.identity.lockout_duration == 10


def test_nested_flag_beats_env(monkeypatch):
    monkeypatch.setenv("TINYSTACK_IDENTITY__TOKEN_EXPIRATION", "120")

    settings = load(identity={"token_expiration": 30})

    assert settings.identity.token_expiration == 30


def test_roles_from_env_and_flags(monkeypatch):
    monkeypatch.setenv("TINYSTACK_ROLES", '["compute", "network"]')
    assert load().roles == ["compute", "network"]
    assert load(roles=["storage"]).roles == ["storage"]


def test_unknown_toml_option_is_refused(tmp_path):
    toml = write_toml(tmp_path / "t.toml", "prot = 9000\n")

    with pytest.raises(ValidationError, match="prot"):
        load(toml)


def test_bad_value_is_refused(monkeypatch):
    monkeypatch.setenv("TINYSTACK_PORT", "eighty")

    with pytest.raises(ValidationError, match="port"):
        load()


def test_load_leaves_no_trace_in_the_environment(tmp_path):
    toml = write_toml(tmp_path / "t.toml", "port = 9000\n")

    load(toml)

    assert "_TINYSTACK_TOML" not in os.environ
    assert load().port == 8080


@pytest.mark.parametrize(
    ("host", "public_url", "base_url"),
    [
        ("127.0.0.1", "", "http://127.0.0.1:8080"),
        ("0.0.0.0", "", "http://127.0.0.1:8080"),
        ("0.0.0.0", "https://cloud.example/", "https://cloud.example"),
    ],
)
def test_base_url(host, public_url, base_url):
    assert load(host=host, public_url=public_url).base_url == base_url


def test_sample_config_names_every_option():
    """etc/tinystack.toml.sample documents each option config.py has."""
    sample = (Path(__file__).parents[2] / "etc" / "tinystack.toml.sample").read_text()
    for name in Settings.model_fields:
        if name not in GROUPS:
            assert f"\n# {name} = " in sample or f"\n{name} = " in sample, name
    for group, model in GROUPS.items():
        assert f"\n[{group}]" in sample or f"\n# [{group}]" in sample, group
        for name in model.model_fields:
            assert f"\n# {name} = " in sample or f"\n{name} = " in sample, name


def test_sample_config_shows_the_defaults(tmp_path):
    """Uncommenting every option of the sample changes nothing (but the home path)."""
    sample = (Path(__file__).parents[2] / "etc" / "tinystack.toml.sample").read_text()
    lines = []
    for line in sample.splitlines():
        body = line.removeprefix("# ")
        if body in {f"[{group}]" for group in GROUPS} or (body != line and " = " in body and body.split(" = ")[0].isidentifier()):
            if not body.startswith(("data_dir", "clouds_yaml")):
                lines.append(body)
    toml = write_toml(tmp_path / "sample.toml", "\n".join(lines) + "\n")

    assert load(toml) == load()
