"""The configuration model: defaults, merge order and errors that name the bad key."""

from __future__ import annotations

import pytest

from cscale_extensions import config as settings


def test_defaults_validate_and_cover_every_section():
    cfg = settings.load(None)
    assert set(cfg) == set(settings.schema()["properties"])
    assert cfg["auth"]["vos"] == ["vo.cscale.eu"]
    assert cfg["hub"]["port"] == 8000


def test_yaml_file_overrides_defaults_and_keeps_the_rest(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("auth:\n  vos: [vo.a, vo.b]\nhub:\n  port: 9000\n")
    cfg = settings.load(path)
    assert cfg["auth"]["vos"] == ["vo.a", "vo.b"]
    assert cfg["auth"]["client_id"] == "cscale-hub"  # untouched default
    assert cfg["hub"]["port"] == 9000


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("hub:\n  port: eighty\n", "hub.port: 'eighty' is not of type 'integer'"),
        ("hub:\n  port: 70000\n", "hub.port: 70000 is greater than the maximum"),
        ("auth:\n  vos: []\n", "auth.vos: [] should be non-empty"),
        ("auth:\n  vos: ['bad vo']\n", "auth.vos[0]: 'bad vo' does not match"),
        ("auth:\n  colour: red\n", "auth.colour: unknown setting; allowed here:"),
        ("nonsense: 1\n", "nonsense: unknown setting; allowed here:"),
        ("spawner:\n  backend: docker\n", "spawner.backend: 'docker' is not one of"),
        ("hub:\n  base_url: hub\n", "hub.base_url: 'hub' does not match"),
    ],
)
def test_invalid_values_are_refused_naming_the_key(tmp_path, yaml_text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(settings.ConfigError) as err:
        settings.load(path)
    assert expected in str(err.value)


def test_unreadable_and_malformed_files_give_clear_errors(tmp_path):
    with pytest.raises(settings.ConfigError, match="cannot read configuration file"):
        settings.load(tmp_path / "missing.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("auth: [unclosed\n")
    with pytest.raises(settings.ConfigError, match="not valid YAML"):
        settings.load(bad)
    bad.write_text("- a list\n")
    with pytest.raises(settings.ConfigError, match="must be a mapping"):
        settings.load(bad)


def test_every_setting_is_documented():
    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            assert sub.get("description"), f"{path}{key} has no description"
            walk(sub, f"{path}{key}.")

    walk(settings.schema(), "")


def test_configuration_reference_is_current():
    from pathlib import Path

    from cscale_extensions.config.docs import render

    doc = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    assert doc.read_text() == render() + "\n", "run `make docs` to regenerate docs/configuration.md"
