"""Rendering: the documented context, strict and sandboxed templates, quoting, and golden renders."""

from __future__ import annotations

import pickle
import re
from typing import Any

import jinja2
import pytest

from lbgen.core.model import Catalog, Endpoint, Service
from lbgen.core.kinds.haproxy import haproxy_quote
from lbgen.core.kinds.nginx import nginx_quote
from lbgen.core.render import BARE_RE, TemplateSource, UnsafeValue, compile_template, render
from lbgen.core.settings import Target
from lbgen.errors import TemplateError
from tests.unit.catalogs import ROOT, TEMPLATES, example_catalog, render_default, tricky_catalog

GOLDEN = ROOT / "tests" / "golden"
HOSTILE = [
    "a;b", "a}", "{a", "a\nb", "a\rb", "a\x00b", 'a"b', "a'b", "a b", "#comment", "a\\b", "$host",
    "x;\n}\nserver { listen 80; }", "'; rm -rf /", "\ttab", "a\x7f",
]


def target(kind: str = "generic", **variables: Any) -> Target:
    return Target(name="t", template="t.j2", dest="/tmp/t", kind=kind, vars=variables)


def nginx_tokens(text: str) -> list[str]:
    """How nginx's tokenizer splits one directive's arguments (quotes and backslash escapes)."""
    return re.findall(r'"(?:[^"\\]|\\.)*"|[^\s;{}"\']+', text)


@pytest.mark.parametrize("value", HOSTILE)
def test_nginx_filter_quotes_or_refuses_hostile_values(value: str) -> None:
    try:
        quoted = nginx_quote(value)
    except UnsafeValue:
        assert re.search(r"[\x00-\x1f\x7f$]", value)
        return
    assert nginx_tokens(quoted) == [quoted]  # exactly one argument: nothing can end the directive
    assert quoted.startswith('"') and quoted.endswith('"')
    inner = quoted[1:-1]
    assert inner.replace('\\\\', "").replace('\\"', "").count('"') == 0
    assert inner.replace("\\\\", "\\").replace('\\"', '"') == value


@pytest.mark.parametrize("value", HOSTILE)
def test_haproxy_filter_quotes_or_refuses_hostile_values(value: str) -> None:
    try:
        quoted = haproxy_quote(value)
    except UnsafeValue:
        assert re.search(r"[\x00-\x1f\x7f']", value)
        return
    assert quoted == f"'{value}'"  # single quotes: no escape, no $ expansion, # is literal


@pytest.mark.parametrize("value, nginx, haproxy", [
    ("/run/nginx.pid", "/run/nginx.pid", "/run/nginx.pid"),
    (8080, "8080", "8080"),
    ("*.example.test", "*.example.test", "*.example.test"),
    ("[::1]:80", "[::1]:80", "[::1]:80"),
    ("/var/log/my logs/x", '"/var/log/my logs/x"', "'/var/log/my logs/x'"),
])
def test_safe_values_stay_bare_and_paths_with_spaces_are_quoted(value: Any, nginx: str, haproxy: str) -> None:
    assert (nginx_quote(value), haproxy_quote(value)) == (nginx, haproxy)


@pytest.mark.parametrize("value", [None, True, ["a"], {"a": 1}, ""])
def test_filters_refuse_non_scalars_and_empty_values(value: Any) -> None:
    for quote in (nginx_quote, haproxy_quote):
        with pytest.raises(UnsafeValue):
            quote(value)


def test_context_is_services_vars_and_revision() -> None:
    catalog = Catalog(42, (
        Service("api", {"listen": 81}, (
            Endpoint("b", "10.0.0.2", 80, health="healthy", node="n1", tags=("t",), meta={"k": "v"}),
            Endpoint("c", "10.0.0.3", 80, health="unhealthy"),
        )),
        Service("web", {}, (Endpoint("a", "10.0.0.1", 80, weight=0),)),
    ))
    source = (
        "{{ revision }} {{ vars.greeting }}\n"
        "{% for s in services %}{{ s.name }} {{ s.spec.listen | default('-') }}"
        " served={% for e in s.endpoints %}{{ e.id }}:{{ e.address }}:{{ e.port }}:{{ e.weight }}:{{ e.health }}"
        ":{{ e.node }}:{{ e.tags | join(',') }}:{{ e.meta.k | default('') }};{% endfor %}"
        " all={{ s.all_endpoints | map(attribute='id') | join(',') }}\n{% endfor %}"
    )
    assert render(source, catalog, target(greeting="hi")) == (
        "42 hi\napi 81 served=b:10.0.0.2:80:1:healthy:n1:t:v; all=b,c\nweb - served= all=a\n"
    )
    unhealthy_too = frozenset({"healthy", "unhealthy"})
    rendered = render(source, catalog, target(greeting="hi"), unhealthy_too)
    assert "served=b:10.0.0.2:80:1:healthy:n1:t:v;c:10.0.0.3:80:1:unhealthy::" in rendered


@pytest.mark.parametrize("source, message", [
    ("line one\n{{ vars.missing }}\n", r"^t\.j2:2: UndefinedError: .*'missing'"),
    ("{% for s in services %}\n{{ s.nope }}{% endfor %}", r"^t\.j2:2: UndefinedError: .*'nope'"),
    ("ok\n\n{% for x in %}", r"^t\.j2:3: Expected an expression"),
    ("{% if %}", r"^t\.j2:1: "),
    ("{{ services.__class__.__mro__ }}", r"^t\.j2:1: SecurityError: .*__class__"),
    ("{{ ''.__class__ }}", r"^t\.j2:1: SecurityError"),
    ("{{ vars.update({'a': 1}) }}", r"^t\.j2:1: SecurityError: .*update"),
    ("{{ services[0].spec.clear() }}", r"^t\.j2:1: SecurityError: .*clear"),
    ("{{ 1 / 0 }}", r"^t\.j2:1: ZeroDivisionError"),
    ("{{ vars.path | nginx }}\n{{ vars.bad | nginx }}", r"^t\.j2:2: UnsafeValue: nginx: refusing '\$x'"),
], ids=["undefined-var", "undefined-attribute", "syntax", "syntax-empty-if", "sandbox-mro", "sandbox-str",
        "immutable-vars", "immutable-spec", "runtime", "unsafe-filter-input"])
def test_template_errors_name_template_and_line(source: str, message: str) -> None:
    catalog = Catalog(1, (Service("web", {"listen": 80}, ()),))
    with pytest.raises(TemplateError, match=message) as caught:
        render(source, catalog, target("nginx", path="/x", bad="$x"))
    assert "\n" not in str(caught.value).strip()


@pytest.mark.parametrize("kind, value, allowed", [
    ("nginx", "a;b", False), ("haproxy", "a b", False), ("nginx", "a\nb", False), ("nginx", None, False),
    ("nginx", True, False), ("nginx", "/safe/path:80", True), ("nginx", 12, True), ("generic", "a; b {}", True),
])
def test_unquoted_outputs_must_be_plain_tokens_for_lb_targets(kind: str, value: Any, allowed: bool) -> None:
    catalog = Catalog(1, ())
    if allowed:
        assert render("x {{ vars.v }}\n", catalog, target(kind, v=value)) == f"x {value}\n"
    else:
        with pytest.raises(TemplateError, match=r"^t\.j2:1: UnsafeValue: unquoted output"):
            render("x {{ vars.v }}\n", catalog, target(kind, v=value))


def test_templates_are_compiled_once_per_source() -> None:
    source = "{{ revision }}"
    assert compile_template(source, "a.j2", True) is compile_template(source, "a.j2", True)
    assert compile_template(source + " ", "a.j2", True) is not compile_template(source, "a.j2", True)


def test_bare_tokens_cannot_open_or_close_anything() -> None:
    assert not any(BARE_RE.search(c) for c in ";{}#\"'\\$ \t\n")


GOLDEN_VARS = {
    "nginx": {"pid": "/run/lbgen-golden/nginx.pid", "error_log": "/run/lbgen-golden/error.log",
              "access_log": "off", "temp_dir": "/run/lbgen-golden", "status_port": 18999},
    "haproxy": {"pid": "/run/lbgen-golden/haproxy.pid", "stats_socket": "/run/lbgen-golden/haproxy.sock",
                "stats_port": 18998, "log": "stderr"},
}
CATALOGS = {"example": example_catalog, "tricky": tricky_catalog}


@pytest.mark.parametrize("kind", TEMPLATES)
@pytest.mark.parametrize("catalog_name", CATALOGS)
def test_golden_renders(kind: str, catalog_name: str, update_golden: bool) -> None:
    text = render_default(kind, CATALOGS[catalog_name](), GOLDEN_VARS[kind])
    golden = GOLDEN / f"{catalog_name}.{TEMPLATES[kind].removesuffix('.j2')}"
    if update_golden:
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden} differs: run pytest tests/unit --update-golden and review the diff"


def test_rendering_is_deterministic_and_ignores_the_revision() -> None:
    catalog = example_catalog()
    moved = Catalog(catalog.revision + 100, catalog.services)
    for kind in TEMPLATES:
        assert render_default(kind, catalog, GOLDEN_VARS[kind]) == render_default(kind, moved, GOLDEN_VARS[kind])


def test_includes_resolve_through_the_loader_the_source_carries() -> None:
    loader = jinja2.DictLoader({"upstream.j2": "{% for s in services %}upstream {{ s.name | nginx }};\n{% endfor %}"})
    source = TemplateSource("# head\n{% include 'upstream.j2' %}", loader)
    assert render(source, example_catalog(), target("nginx")).startswith("# head\nupstream ")
    assert pickle.loads(pickle.dumps(source)).loader is not None, "a source can cross a process boundary"


def test_the_guard_also_applies_inside_an_included_template() -> None:
    loader = jinja2.DictLoader({"bad.j2": "{{ vars.evil }}"})
    with pytest.raises(TemplateError, match=r"unquoted output"):
        render(TemplateSource("{% include 'bad.j2' %}", loader), Catalog(1, ()), target("nginx", evil="a;b"))


@pytest.mark.parametrize("source", ["{% include 'x.j2' %}", "{% import 'm.j2' as m %}"], ids=["include", "import"])
def test_an_include_without_a_loader_is_a_template_error_not_a_type_error(source: str) -> None:
    with pytest.raises(TemplateError, match=r"^t\.j2:1: TemplateNotFound: .*not read from a file: no includes"):
        render(source, Catalog(1, ()), target())


def test_a_missing_include_names_the_line_of_the_include() -> None:
    with pytest.raises(TemplateError, match=r"^t\.j2:2: TemplateNotFound: nope\.j2$"):
        render(TemplateSource("a\n{% include 'nope.j2' %}", jinja2.DictLoader({})), Catalog(1, ()), target())
