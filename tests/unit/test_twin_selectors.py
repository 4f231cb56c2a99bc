"""Label and field selectors, and name validation, with the API server's rules."""

from __future__ import annotations

import pytest

from simulations.twin.errors import ApiError
from simulations.twin.selectors import (
    field_getters,
    from_label_selector,
    parse_field_selector,
    parse_label_selector,
    selector_string,
)
from simulations.twin.validation import dns1123_label, dns1123_subdomain, label_value, qualified_name

LABELS = {"app": "web", "tier": "front", "version": "3"}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app!=web", False),
        ("app=web,tier=back", False),
        ("app in (web, api)", True),
        ("app notin (web,api)", False),
        ("tier", True),
        ("!tier", False),
        ("!missing", True),
        ("missing!=x", True),
        ("version>2", True),
        ("version<3", False),
        ("app in (web),tier notin (back),!canary", True),
        ("environment in (production, qa)", False),
    ],
)
def test_label_selector_matching(text, matches):
    assert parse_label_selector(text).matches(LABELS) is matches


@pytest.mark.parametrize(
    "text", ["=web", "app in web", "app in (web", "app=web,", "Bad Key=x", "app=in valid"]
)
def test_bad_label_selectors_are_bad_requests(text):
    with pytest.raises(ApiError) as caught:
        parse_label_selector(text)
    assert caught.value.code == 400


def test_an_empty_value_selects_empty_labels():
    assert parse_label_selector("app=").matches({"app": ""})
    assert not parse_label_selector("app=").matches({"app": "web"})


def test_label_selector_objects_and_their_string_form():
    selector = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "back"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ],
    }
    assert from_label_selector(selector).matches(LABELS)
    assert not from_label_selector(selector).matches({**LABELS, "canary": "1"})
    assert selector_string(selector) == "app=web,!canary,tier in (back,front)", "sorted by key, as in Go"
    assert from_label_selector({}).matches(LABELS), "the empty selector selects everything"
    assert not from_label_selector(None).matches(LABELS), "no selector selects nothing"


def test_field_selectors():
    getters = field_getters("involvedObject.name", "involvedObject.kind")
    event = {
        "metadata": {"name": "e", "namespace": "ns"},
        "involvedObject": {"name": "web", "kind": "Deployment"},
    }
    assert parse_field_selector("involvedObject.name=web,involvedObject.kind=Deployment", getters).matches(
        event, getters
    )
    assert not parse_field_selector("involvedObject.kind!=Deployment", getters).matches(event, getters)
    assert parse_field_selector("metadata.namespace==ns", getters).matches(event, getters)
    with pytest.raises(ApiError) as caught:
        parse_field_selector("spec.nope=1", getters)
    assert caught.value.code == 400
    assert "field label not supported" in caught.value.message


@pytest.mark.parametrize(
    ("name", "label_ok", "subdomain_ok"),
    [
        ("web", True, True),
        ("web-1", True, True),
        ("a.b", False, True),
        ("Web", False, False),
        ("-web", False, False),
        ("web_1", False, False),
        ("x" * 63, True, True),
        ("x" * 64, False, True),
        ("x" * 254, False, False),
        ("", False, False),
    ],
)
def test_dns1123_names(name, label_ok, subdomain_ok):
    assert (not dns1123_label(name)) is label_ok
    assert (not dns1123_subdomain(name)) is subdomain_ok


def test_label_keys_and_values():
    assert not qualified_name("app.kubernetes.io/name")
    assert qualified_name("bad/key/x")
    assert qualified_name("-x")
    assert not label_value("")
    assert label_value("bad value")
