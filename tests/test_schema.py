"""Dotted keys and YAML: one setter for overrides, tuning values and `tune --apply`."""

from __future__ import annotations

import pytest

from mnist_cnn.schema import dump_yaml, lookup, parse_yaml, set_dotted


def tree():
    return {"model": {"filters": [32, 64], "augment": {"zoom": 0.1}}, "train": {"epochs": 10}}


def test_set_dotted_sets_scalars_nested_keys_and_list_entries_in_place():
    t = tree()
    set_dotted(t, "train.epochs", 2)
    set_dotted(t, "model.augment.zoom", 0.0)
    set_dotted(t, "model.filters.1", 96)
    assert t == {"model": {"filters": [32, 96], "augment": {"zoom": 0.0}}, "train": {"epochs": 2}}
    assert lookup(t, "model.filters.1") == 96


@pytest.mark.parametrize(
    ("dotted", "message"),
    [
        ("train.epoch", r"no 'epoch' in 'train\.epoch'"),
        ("trian.epochs", r"no 'trian' in 'trian\.epochs'"),
        ("model.filters.2", r"no index '2' in the 2-entry list of 'model\.filters\.2'"),
        ("model.filters.x", r"no index 'x'"),
        ("train.epochs.max", r"no 'max' in 'train\.epochs\.max'"),
    ],
)
def test_set_dotted_without_create_refuses_keys_that_do_not_exist(dotted, message):
    t = tree()
    with pytest.raises(KeyError, match=message):
        set_dotted(t, dotted, 1)
    assert t == tree(), "nothing changed"


def test_set_dotted_with_create_makes_missing_sections_but_never_descends_into_a_value():
    t = tree()
    set_dotted(t, "tune.pruner.name", "median", create=True)
    assert t["tune"] == {"pruner": {"name": "median"}}
    with pytest.raises(KeyError, match=r"'epochs' is not a section"):
        set_dotted(t, "train.epochs.max", 3, create=True)


def test_lookup_past_the_end_of_a_list_only_with_any_index():
    assert lookup(tree(), "model.filters.5", any_index=True) is None
    with pytest.raises(KeyError):
        lookup(tree(), "model.filters.5")


def test_yaml_is_1_2_and_round_trips_in_key_order():
    assert parse_yaml("a: on\nb: 1e-3\nc: [1, 2]\n") == {"a": "on", "b": 0.001, "c": [1, 2]}
    data = {"z": 1, "a": {"lr": 0.00345, "name": "cosine", "filters": [40, 80]}, "none": None}
    text = dump_yaml(data)
    assert list(parse_yaml(text)) == ["z", "a", "none"] and parse_yaml(text) == data
