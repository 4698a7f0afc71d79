"""The configuration model beyond the fixed cases of test_settings.py: the merge as a property,
the order of the three layers, every setting's type error naming its key, and the resolved
configuration a running component reads from ``$CSCALE_HUB_CONFIG``."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cscale_extensions import config

keys = st.sampled_from(["a", "b", "c", "d"])
leaf = st.none() | st.booleans() | st.integers(-3, 3) | st.lists(st.integers(0, 3), max_size=2)
tree = st.recursive(leaf, lambda inner: st.dictionaries(keys, inner, max_size=3), max_leaves=8)
mapping = st.dictionaries(keys, tree, max_size=4)


@settings(max_examples=80, deadline=None)
@given(base=mapping, override=mapping)
def test_deep_merge_merges_mappings_replaces_the_rest_and_changes_neither_input(base, override):
    before = copy.deepcopy((base, override))
    out = config.deep_merge(base, override)
    assert (base, override) == before

    def check(out: dict, base: dict, override: dict) -> None:
        assert set(out) == set(base) | set(override)
        for k in out:
            if k not in override:
                assert out[k] == base[k]
            elif isinstance(override[k], dict) and isinstance(base.get(k), dict):
                check(out[k], base[k], override[k])
            else:
                assert out[k] == override[k]

    check(out, base, override)
    # the result shares nothing mutable with its inputs
    for v in out.values():
        if isinstance(v, dict | list):
            assert all(v is not x for x in (*base.values(), *override.values()))


def test_overrides_win_over_the_file_which_wins_over_the_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("hub:\n  port: 9000\n  base_url: /x/\n")
    cfg = config.load(path, {"hub": {"port": 9100}})
    assert cfg["hub"]["port"] == 9100  # override
    assert cfg["hub"]["base_url"] == "/x/"  # file
    assert cfg["hub"]["ip"] == config.defaults()["hub"]["ip"]  # default


def test_each_load_gets_its_own_copy_of_the_defaults():
    cfg = config.load(None)
    cfg["auth"]["vos"].append("vo.changed")
    cfg["spawner"]["environment"]["X"] = "1"
    again = config.load(None)
    assert "vo.changed" not in again["auth"]["vos"] and "X" not in again["spawner"]["environment"]


def test_every_bad_key_is_named_in_one_error():
    with pytest.raises(config.ConfigError) as err:
        config.load(None, {"hub": {"port": "x"}, "auth": {"vos": []}, "culler": {"bogus": 1}})
    lines = str(err.value).splitlines()
    assert lines[0] == "invalid configuration:"
    assert any(ln.startswith("  - hub.port: ") for ln in lines)
    assert any(ln.startswith("  - auth.vos: ") for ln in lines)
    assert any(ln.startswith("  - culler.bogus: unknown setting") for ln in lines)


def _typed_leaves(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, set[str]]]:
    for key, sub in node.get("properties", {}).items():
        dotted = f"{path}{key}"
        types = sub.get("type")
        if types is not None and not {"enum", "const", "anyOf", "oneOf"} & set(sub):
            yield dotted, set([types] if isinstance(types, str) else types)
        if sub.get("type") == "object":
            yield from _typed_leaves(sub, dotted + ".")


#: one value of each JSON type, to find one a setting does not accept
WRONG = [
    ("object", {"not": "this"}),
    ("array", [[]]),
    ("string", "not-this"),
    ("integer", 123456),
    ("number", 1.5),
    ("boolean", True),
]
LEAVES = sorted(_typed_leaves(config.schema()))


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


@pytest.mark.parametrize(("dotted", "types"), LEAVES, ids=[d for d, _ in LEAVES])
def test_a_value_of_the_wrong_type_is_refused_naming_the_key(dotted, types):
    accepts = set(types) | ({"integer"} if "number" in types else set())
    wrong = next(v for t, v in WRONG if t not in accepts)
    with pytest.raises(config.ConfigError) as err:
        config.load(None, _nested(dotted, wrong))
    assert f"  - {dotted}: " in str(err.value), str(err.value)
    assert "Traceback" not in str(err.value)


def test_leaves_cover_the_schema():
    assert len(LEAVES) > 50  # the walk found the settings (guards the parametrisation above)


def test_a_component_reads_the_resolved_configuration_it_was_handed(tmp_path, monkeypatch):
    resolved = tmp_path / "config.json"
    resolved.write_text(json.dumps({"hub": {"port": 8123}, "auth": {"vos": ["vo.x"]}}))
    monkeypatch.setenv(config.CONFIG_ENV, str(resolved))
    cfg = config.load_resolved()
    assert cfg["hub"]["port"] == 8123 and cfg["auth"]["vos"] == ["vo.x"]
    assert cfg["culler"] == config.defaults()["culler"]
    resolved.write_text(json.dumps({"hub": {"port": -1}}))
    with pytest.raises(config.ConfigError, match="hub.port"):
        config.load_resolved()
    monkeypatch.delenv(config.CONFIG_ENV)
    monkeypatch.delenv(config.TEXT_ENV, raising=False)
    assert config.load_resolved() == config.load(None)


def test_a_pod_without_a_settings_file_reads_the_settings_text(tmp_path, monkeypatch):
    """The chart's gateway pod mounts no file: the settings YAML is in $CSCALE_SETTINGS_YAML
    (data from the ConfigMap, validated as a file would be); a named file still wins."""
    monkeypatch.delenv(config.CONFIG_ENV, raising=False)
    monkeypatch.setenv(config.TEXT_ENV, "hub: {port: 8124}\n")
    assert config.load_resolved()["hub"]["port"] == 8124
    monkeypatch.setenv(config.TEXT_ENV, "hub: {port: -1}\n")
    with pytest.raises(config.ConfigError, match="hub.port"):
        config.load_resolved()
    monkeypatch.setenv(config.TEXT_ENV, "hub: [\n")
    with pytest.raises(config.ConfigError, match=r"\$CSCALE_SETTINGS_YAML is not valid YAML"):
        config.load_resolved()
    named = tmp_path / "config.yaml"
    named.write_text("hub: {port: 8125}\n")
    monkeypatch.setenv(config.CONFIG_ENV, str(named))
    assert config.load_resolved()["hub"]["port"] == 8125
