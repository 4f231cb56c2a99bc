"""Templating: substitution only, one pass, Kubernetes names checked."""

from __future__ import annotations

import pytest

from agent.playbook.templating import (
    NameKind,
    Scope,
    TemplateError,
    format_number,
    kubernetes_name_problem,
    parse_template,
    render_name,
)


def test_substitutes_variables_and_keeps_text() -> None:
    t = parse_template(
        "restart {{ target.name }} in {{target.namespace}}: {{ labels.pod_name }}", Scope.ACTION
    )
    assert t.variables == ("target.name", "target.namespace", "labels.pod_name")
    ctx = {"target.name": "web", "target.namespace": "shop", "labels.pod_name": "web-1"}
    assert t.render(ctx) == "restart web in shop: web-1"


def test_a_substituted_value_is_never_expanded_again() -> None:
    t = parse_template("{{ labels.a }}{{ labels.b }}", Scope.ACTION)
    assert t.render({"labels.a": "{{ labels.b }}", "labels.b": "x"}) == "{{ labels.b }}x"


def test_a_missing_label_names_the_label() -> None:
    t = parse_template("{{ labels.deployment }}", Scope.TARGET)
    with pytest.raises(TemplateError, match="label 'deployment' is not set"):
        t.render({})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ labels.x | upper }}", "no expressions, filters or code"),
        ("{{ labels.x + 1 }}", "no expressions"),
        ("{{ __import__('os').system('id') }}", "not a variable"),
        ("{{ config.items() }}", "not a variable"),
        ("{{ labels.x }", "unbalanced or nested braces"),
        ("{{ {{ labels.x }} }}", "unbalanced or nested braces"),
        ("{{}}", "not a variable"),
        ("{{ signal.valu }}", "did you mean 'signal.value'"),
        ("{{ secrets.token }}", "unknown template variable 'secrets.token'"),
    ],
)
def test_anything_but_a_known_variable_is_refused(text: str, expected: str) -> None:
    with pytest.raises(TemplateError, match=expected.replace("(", r"\(").replace("|", r"\|")):
        parse_template(text, Scope.ACTION)


def test_jinja_statements_are_plain_text() -> None:
    t = parse_template("{% for x in y %}{# c #}", Scope.ACTION)
    assert t.is_literal
    assert t.render({}) == "{% for x in y %}{# c #}"


def test_a_target_cannot_use_target_or_incident_variables() -> None:
    with pytest.raises(TemplateError, match="before target and incident exist"):
        parse_template("{{ target.name }}", Scope.TARGET)
    with pytest.raises(TemplateError, match="before target and incident exist"):
        parse_template("{{ incident.id }}", Scope.TARGET)
    assert parse_template("{{ incident.id }}", Scope.ACTION).variables == ("incident.id",)


@pytest.mark.parametrize(
    ("value", "kind", "problem"),
    [
        ("web", NameKind.SUBDOMAIN, None),
        ("web.v2", NameKind.SUBDOMAIN, None),
        ("web.v2", NameKind.LABEL, "not a valid Kubernetes name"),
        ("{{ labels.x }}", NameKind.SUBDOMAIN, "template braces"),
        ("../etc", NameKind.SUBDOMAIN, "path element"),
        ("a/b", NameKind.SUBDOMAIN, "path element"),
        ("..", NameKind.SUBDOMAIN, "path element"),
        ("web\nkube-system", NameKind.SUBDOMAIN, "control character"),
        ("", NameKind.SUBDOMAIN, "is empty"),
        ("Web", NameKind.SUBDOMAIN, "not a valid Kubernetes name"),
        ("-web", NameKind.SUBDOMAIN, "not a valid Kubernetes name"),
        ("a" * 64, NameKind.LABEL, "more than 63"),
        ("a" * 254, NameKind.SUBDOMAIN, "more than 253"),
    ],
)
def test_kubernetes_name_rules(value: str, kind: NameKind, problem: str | None) -> None:
    found = kubernetes_name_problem(value, kind)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def test_render_name_checks_the_substituted_value() -> None:
    t = parse_template("train-{{ labels.model }}", Scope.TARGET)
    assert render_name(t, {"labels.model": "churn"}, NameKind.SUBDOMAIN, "target name") == "train-churn"
    with pytest.raises(TemplateError, match=r"target name 'train-\.\./x' .* path element"):
        render_name(t, {"labels.model": "../x"}, NameKind.SUBDOMAIN, "target name")


def test_numbers_print_short() -> None:
    assert format_number(3.0) == "3"
    assert format_number(0.123456789) == "0.123457"
    assert format_number(1e20) == "1e+20"
