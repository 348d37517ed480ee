"""User YAML: alias bombs, duplicate keys, folders and binary files give one line; anchors still work."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from a2mae.config import ConfigError, load_params
from a2mae.io.yamlsafe import MAX_NODES, YamlError, expanded_size, load_file, load_text
from a2mae.sensors import SensorRegistryError, load_registry

BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]
)


def test_an_alias_bomb_is_refused_before_it_is_built(tmp_path):
    with pytest.raises(YamlError, match="values once its aliases are expanded") as err:
        load_text(BOMB, "bomb.yaml")
    assert "\n" not in str(err.value)
    user = tmp_path / "bomb.yaml"
    user.write_text("model:\n  name: x\n" + BOMB.replace("a:", "z0:", 1))
    with pytest.raises(ConfigError, match=r"bomb.yaml: over \d+ values"):
        load_params(user)


def test_a_recursive_alias_is_refused():
    with pytest.raises(YamlError, match="expanded"):
        load_text("a: &a [1, *a]\n", "rec.yaml")


def test_plain_anchors_still_work():
    doc = load_text("base: &b {x: 1, y: [1, 2]}\nother: *b\n", "ok.yaml")
    assert doc == {"base": {"x": 1, "y": [1, 2]}, "other": {"x": 1, "y": [1, 2]}}


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [("a: 1\nb: 2\na: 3\n", "'a'", 3), ("tile:\n  chip_size: 96\n  chip_size: 64\n", "'chip_size'", 3)],
)
def test_a_duplicate_key_is_an_error_naming_the_key(text, key, line):
    with pytest.raises(YamlError, match=rf"key {key} appears twice \(line {line}\)"):
        load_text(text, "dup.yaml")


def test_duplicate_key_in_params_and_in_a_sensor_file(tmp_path):
    user = tmp_path / "p.yaml"
    user.write_text("tile:\n  grid_m: 960\n  grid_m: 480\n")
    with pytest.raises(ConfigError, match="'grid_m' appears twice"):
        load_params(user)
    sensors = tmp_path / "s.yaml"
    sensors.write_text("sensors:\n  X: {}\n  X: {}\n")
    with pytest.raises(SensorRegistryError, match="'X' appears twice"):
        load_registry([sensors])


def test_a_folder_or_a_binary_file_as_params_gives_one_line(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_params(tmp_path)
    binary = tmp_path / "model.pt"
    binary.write_bytes(b"\x80\x04\x95\x00\x00PK\x03\x04")
    with pytest.raises(ConfigError, match="not a text file"):
        load_params(binary)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("tile:\n  snapshot: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_params(latin)
    with pytest.raises(YamlError, match="file not found"):
        load_file(tmp_path / "missing.yaml")


def test_python_tags_are_refused():
    with pytest.raises(YamlError, match="not valid YAML"):
        load_text("x: !!python/object/apply:os.system ['true']\n", "evil.yaml")


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 12))
def test_expanded_size_counts_every_value_of_nested_aliases(depth, fan):
    """A chain of `depth` anchors, each a list of `fan` aliases of the previous one."""
    lines = ["l0: &l0 [x]"] + [
        f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * fan) + "]" for i in range(1, depth)
    ]
    node = yaml.compose("\n".join(lines))
    # each level i holds 1 + fan * size(i-1) values; level 0 holds 2 (the list and "x")
    sizes = [2]
    for _ in range(1, depth):
        sizes.append(1 + fan * sizes[-1])
    expected = 1 + sum(1 + s for s in sizes)  # the mapping, then key + value per level
    assert expanded_size(node) == min(expected, MAX_NODES + 1)
