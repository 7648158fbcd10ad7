"""Render only what changed (issue 13): loop bodies compiled apart and their text cached by key.

At compile time, `rewrite` replaces the body of each qualifying `{% for %}` with a call of its own
compiled copy (a *fragment*), passing the loop target and every outer name the body reads.
At render time the call returns the text the same fragment rendered for an equal key, or renders
it. The key is built from those values by `Keys`: scalars by type and value, lbgen's frozen value
types field by field, a `ServiceView` by identity (the view memo hands out the same object while
a service is unchanged), a name read only as `name.a.b` by those values; anything else, and the
body renders uncached. So the text is byte-identical to the whole-template render: a body's text
depends only on what it reads, and everything it reads is in its key. A rewritten loop over a
tuple or list with one name as its target is first walked in Python (`LOOP`), one key per item
and the other values keyed once, rather than one Jinja call per item (`_Rewriting`).

A loop qualifies when its body cannot see or change anything outside those values: not
`recursive`, no `loop`, `caller`, `self`, `super`, no namespace assignment, no macro, call block,
include, import or block, no impure filter or global (`random`, `lipsum`), no filter that reads
the context, and no name both read from outside and assigned inside. A global that reads the
render context is keyed only if its kind says how (`LbKind.fragment_context`). Loops inside a
fragment stay in it; inside a loop that does not qualify, inner loops are looked at.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jinja2
import msgspec
from jinja2 import meta, nodes
from jinja2.utils import _PassArg

from lbgen.core.kinds import ContextRead

__all__ = ["CALL", "LOOP", "SESSION", "Fragment", "FragmentText", "Rules", "Session", "caller", "rewrite"]

CALL = "__lbgen_fragment"  # the template global each rewritten body calls
LOOP = "__lbgen_loop"  # the template global a rewritten loop calls first: its whole text, item by item in Python
SESSION = "__lbgen_fragments"  # the render context's `FragmentSession` (absent: render uncached)

_NOT_IN_BODY = (nodes.Extends, nodes.Block, nodes.Include, nodes.Import, nodes.FromImport, nodes.Macro,
                nodes.CallBlock, nodes.NSRef, nodes.EvalContextModifier, nodes.ScopedEvalContextModifier)
_TEXT = "__lbgen_text"  # the rewritten loop body's local: the fragment's text, or None
_NAMES_NOT_IN_BODY = frozenset({"loop", "caller", "self", "super", CALL, LOOP, SESSION, _TEXT})
_IMPURE = frozenset({"random", "lipsum"})
# Jinja's filters that take the context only to call another filter or test, named by a constant.
_DISPATCHERS = frozenset({"map", "select", "reject", "selectattr", "rejectattr"})
_uids = itertools.count()


class FragmentText(str):
    """A fragment's rendered text: already through the output guard, written as it is."""

    __slots__ = ()


class Rules(msgspec.Struct, frozen=True):
    """What keys allow beyond plain values: `globals`: id → name of the pure template globals;
    `context_reads`: id of a global that reads the render context → what it reads there
    (`lbgen.core.kinds.ContextRead`, per identity-keyed value in the key); `value_types`: frozen
    value types keyed field by field; `identity_types`: types keyed by identity (immutable, handed out again while
    unchanged); `text_types`: `str` subclasses keyed by type and text (`Verbatim`)."""

    globals: Mapping[int, str]
    context_reads: Mapping[int, ContextRead]
    value_types: Mapping[type, tuple[str, ...]]
    identity_types: frozenset[type]
    text_types: frozenset[type]


class Fragment(msgspec.Struct, frozen=True):
    """One rewritten loop body: its compiled template, the names passed to it (in order) and, per
    name, the `.a.b` chains it is read through (None: read whole)."""

    uid: int
    template: jinja2.Template
    names: tuple[str, ...]
    chains: tuple[tuple[tuple[tuple[bool, Any], ...], ...] | None, ...]
    stored: frozenset[str]  # names the body assigns: a context read of one of them is not keyed
    target: int | None = None  # where the loop's item goes in `names` (None: not read, or a tuple target)

    def render(self, context: jinja2.runtime.Context, values: Sequence[Any]) -> FragmentText:
        variables = dict(context.get_all())  # get_all may hand out the context's own dict
        variables.update(zip(self.names, values))
        ctx = self.template.new_context(variables, shared=True)
        return FragmentText(self.template.environment.concat(self.template.root_render_func(ctx)))


def rewrite(env: jinja2.Environment, ast: nodes.Template, name: str) -> dict[str, Callable[..., Any]]:
    """Rewrite `ast` in place (outermost qualifying loops first); the template globals (`CALL`,
    `LOOP`) its calls, and its fragments' calls, go through."""
    rewriting = _Rewriting(env, name)
    if not any(True for _ in ast.find_all((nodes.Extends, nodes.Block, nodes.EvalContextModifier,
                                              nodes.ScopedEvalContextModifier))):
        rewriting.visit(ast, depth=0)
    return rewriting.globals


# Only a loop whose body holds a loop is rewritten: a one-line body (`{{ line }}`) costs less to
# render than its key and lookup (10,000 of them cost 100 ms more, bench/render_bench.py). A
# fragment's own such loops are fragments too, one level down: the server blocks inside
# `for listener in lb.http` (one port can hold 10,000 hosts) are kept apart; further down not
# (100,000 tiny entries would cost more than they save).
_NESTED = 1


class _Rewriting:
    """One template's rewrite: its fragments, in the order its calls index them.

    A rewritten loop `{% for x in xs if test %}body{% endfor %}` becomes

        {% set seq = xs %}{% set text = __lbgen_loop(i, seq, names...) %}{% if text is not none %}{{ text }}
        {% else %}{% for x in seq if test %}<body: its cached text, else as written>{% endfor %}{% endif %}

    The loop call walks the items in Python, each body's text by key (the body being
    `{% if test %}body{% endif %}`), which costs a fraction of a Jinja call per item: at 10,000
    sites on one port, one call per server block cost more than the whole render (issue 13).
    It returns None, and the loop runs as written, when an item has no key or the sequence is not
    a tuple or list (a generator is not walked twice). A loop with `{% else %}` or a tuple target
    is rewritten in its body only."""

    def __init__(self, env: jinja2.Environment, name: str) -> None:
        self.env, self.name = env, name
        self.fragments: list[Fragment] = []
        self.globals: dict[str, Callable[..., Any]] = {CALL: caller(self.fragments), LOOP: looper(self.fragments)}

    def visit(self, node: nodes.Node, depth: int) -> None:
        for field in node.fields:
            value = getattr(node, field, None)
            if isinstance(value, list):
                setattr(node, field, [new for child in value for new in self.rewritten(child, depth)])
            elif isinstance(value, nodes.Node):
                self.visit(value, depth)

    def rewritten(self, child: Any, depth: int) -> list[Any]:
        """`child`, or what replaces it when it is a qualifying loop (its inner nodes visited)."""
        if not isinstance(child, nodes.Node):
            return [child]
        wanted = isinstance(child, nodes.For) and any(True for _ in child.find_all(nodes.For))
        fragment = self.fragment(child, depth) if isinstance(child, nodes.For) and wanted else None
        if not isinstance(child, nodes.For) or fragment is None:
            self.visit(child, depth)
            return [child]
        self.fragments.append(fragment)
        index = len(self.fragments) - 1
        child.body = self.cached_or_inline(child, index, fragment.names)
        for other in child.else_:
            self.visit(other, depth)
        return self.whole(child, index, fragment) if fragment.target is not None else [child]

    def whole(self, loop: nodes.For, index: int, fragment: Fragment) -> list[nodes.Node]:
        """The loop call first, the loop as it is if that returns None."""
        seq, text = f"__lbgen_seq{index}", f"__lbgen_loop{index}"
        names = [nodes.Name(n, "load") for i, n in enumerate(fragment.names) if i != fragment.target]
        call = nodes.Call(nodes.Name(LOOP, "load"), [nodes.Const(index), nodes.Name(seq, "load"), *names],
                          [], None, None)
        found = nodes.Not(nodes.Test(nodes.Name(text, "load"), "none", [], [], None, None))
        # A new loop over `seq`: this one may also stand, unchanged, in an outer body rendered in place.
        inline = nodes.For(loop.target, nodes.Name(seq, "load"), loop.body, loop.else_, loop.test, loop.recursive)
        body: list[nodes.Node] = [nodes.Assign(nodes.Name(seq, "store"), loop.iter),
                                  nodes.Assign(nodes.Name(text, "store"), call),
                                  nodes.If(found, [nodes.Output([nodes.Name(text, "load")])], [], [inline])]
        for node in body:
            node.set_lineno(loop.lineno)
            node.set_environment(self.env)
        return body

    def cached_or_inline(self, loop: nodes.For, index: int, names: tuple[str, ...]) -> list[nodes.Node]:
        """`{% set t = __lbgen_fragment(index, names...) %}{% if t is not none %}{{ t }}{% else %}`
        the body as it was `{% endif %}`: a body whose values have no key renders in place, at the
        cost of the attempt only."""
        call = nodes.Call(nodes.Name(CALL, "load"), [nodes.Const(index)] + [nodes.Name(n, "load") for n in names],
                          [], None, None)
        found = nodes.Not(nodes.Test(nodes.Name(_TEXT, "load"), "none", [], [], None, None))
        body: list[nodes.Node] = [nodes.Assign(nodes.Name(_TEXT, "store"), call),
                                  nodes.If(found, [nodes.Output([nodes.Name(_TEXT, "load")])], [], loop.body)]
        for node in body:
            node.set_lineno(loop.lineno)
            node.set_environment(self.env)
        return body

    def fragment(self, loop: nodes.For, depth: int) -> Fragment | None:
        """The fragment for `loop`'s body (under its test, if any), or None when the loop does not
        qualify."""
        content: list[nodes.Node] = loop.body
        if loop.test:
            content = [nodes.If(loop.test, loop.body, [], [], lineno=loop.lineno)]
        if loop.recursive or not _pure(self.env, content):
            return None
        body = nodes.Template(content, lineno=loop.lineno)
        body.set_environment(self.env)
        free = _free_names(self.env, body)
        stored = {n.name for n in body.find_all(nodes.Name) if n.ctx in ("store", "param")}
        if free & (_NAMES_NOT_IN_BODY | stored):
            return None
        names = tuple(sorted(free))
        chains = tuple(_chains(content, n) for n in names)  # read before its own loops are rewritten
        if depth < _NESTED:
            self.visit(body, depth + 1)
        try:
            code = self.env.compile(body, name=self.name, filename=self.name)
        except jinja2.TemplateError:
            return None
        template = self.env.template_class.from_code(self.env, code, self.env.make_globals(self.globals))
        simple = isinstance(loop.target, nodes.Name) and not loop.else_ and loop.target.name in names
        target = names.index(loop.target.name) if simple else None  # type: ignore[attr-defined]
        return Fragment(next(_uids), template, names, chains, frozenset(stored), target)


class _Names(meta.TrackingCodeGenerator):
    """Every name a template resolves from its context, globals included (Jinja's own
    `find_undeclared_variables` leaves globals out, but a body may read a global through a name
    the outer template shadows, or one that reads the render context)."""

    def enter_frame(self, frame: Any) -> None:
        super(meta.TrackingCodeGenerator, self).enter_frame(frame)
        for action, param in frame.symbols.loads.values():
            if action == "resolve":
                self.undeclared_identifiers.add(param)


def _free_names(env: jinja2.Environment, body: nodes.Template) -> set[str]:
    names = _Names(env)
    names.visit(body)
    return names.undeclared_identifiers


def _pure(env: jinja2.Environment, body: list[nodes.Node]) -> bool:
    """No node that reaches outside the body, and no filter or test that is impure or reads the context."""
    for node in body:
        if any(True for _ in node.find_all(_NOT_IN_BODY)) or isinstance(node, _NOT_IN_BODY):
            return False
        for call in node.find_all((nodes.Filter, nodes.Test)):
            table = env.filters if isinstance(call, nodes.Filter) else env.tests
            if not _pure_callable(env, call.name, table.get(call.name), call.args):
                return False
    return True


def _pure_callable(env: jinja2.Environment, name: str, function: Any, args: list[nodes.Expr]) -> bool:
    if name in _IMPURE or function is None:
        return False
    if not _reads_context(function):
        return True
    # `map('upper')` calls the filter it names: a constant name of a pure filter or test is fine
    return name in _DISPATCHERS and all(
        isinstance(a, nodes.Const) and a.value not in _IMPURE
        and not _reads_context(env.filters.get(a.value) or env.tests.get(a.value)) for a in args)


def _reads_context(function: Any) -> bool:
    return getattr(function, "jinja_pass_arg", None) is _PassArg.context


Chain = tuple[tuple[bool, Any], ...]  # (is_attribute, attribute or constant item) per step


def _chains(body: list[nodes.Node], name: str) -> tuple[Chain, ...] | None:
    """The maximal `name.a[0].b` chains `body` reads `name` through; None when it reads it whole."""
    found: set[Chain] = set()
    pending: list[nodes.Node] = list(body)
    while pending:
        node = pending.pop()
        chain = _chain(node, name) if isinstance(node, (nodes.Getattr, nodes.Getitem)) else None
        if chain is not None:
            found.add(chain)
            continue
        if isinstance(node, nodes.Name) and node.name == name and node.ctx == "load":
            return None
        pending.extend(node.iter_child_nodes())
    return tuple(sorted(found, key=repr))


def _chain(node: nodes.Node, name: str) -> Chain | None:
    steps: list[tuple[bool, Any]] = []
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            steps.append((True, node.attr))
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, (str, int)):
            steps.append((False, node.arg.value))
        else:
            return None
        node = node.node
    if isinstance(node, nodes.Name) and node.name == name and node.ctx == "load":
        return tuple(reversed(steps))
    return None


class Session:
    """What a render's context holds as `__lbgen_fragments` (`lbgen.core.fragment_cache`)."""

    def text(self, fragment: Fragment, context: jinja2.runtime.Context, values: Sequence[Any]
             ) -> FragmentText | None:
        raise NotImplementedError

    def loop(self, fragment: Fragment, context: jinja2.runtime.Context, items: Sequence[Any],
             values: Sequence[Any]) -> FragmentText | None:
        raise NotImplementedError


def caller(fragments: Sequence[Fragment]) -> Callable[..., FragmentText | None]:
    """The `__lbgen_fragment(index, *values)` global of one compiled template: the body's text,
    or None when it is to render in place (no session, or no key for these values). Called
    otherwise than the rewrite calls it (a template can name it), it refuses or returns None."""

    @jinja2.pass_context
    def call(context: jinja2.runtime.Context, index: int, *values: Any) -> FragmentText | None:
        fragment = fragments[index]
        if len(values) != len(fragment.names):
            raise TypeError(f"{CALL}: expected {len(fragment.names)} values, got {len(values)}")
        session = context.get(SESSION)
        if not isinstance(session, Session):
            return None
        return session.text(fragment, context, values)

    call.unsafe_callable = call.alters_data = False  # type: ignore[attr-defined]  # the sandbox asks, per call
    return call



def looper(fragments: Sequence[Fragment]) -> Callable[..., FragmentText | None]:
    """The `__lbgen_loop(index, items, *values)` global of one compiled template: the whole loop's
    text (`values`: the body's other names), or None when it is to run as written."""

    @jinja2.pass_context
    def loop(context: jinja2.runtime.Context, index: int, items: Any, *values: Any) -> FragmentText | None:
        fragment = fragments[index]
        if fragment.target is None or len(values) != len(fragment.names) - 1:
            raise TypeError(f"{LOOP}: not a loop of this template, or not its values")
        session = context.get(SESSION)
        if not isinstance(session, Session) or type(items) not in (tuple, list):
            return None
        return session.loop(fragment, context, items, values)

    loop.unsafe_callable = loop.alters_data = False  # type: ignore[attr-defined]  # the sandbox asks, per call
    return loop
