"""HAProxy's pure rules: its built-in check, its quoting filter (`haproxy`), its routing rules
(`rules`), its fixed server slots and their placement (`slots`), and the runtime plan that moves
endpoints within those slots through the stats socket instead of a reload (`runtime_plan`)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from lbgen.core.kinds import ContextRead, LbKind
from lbgen.core.kinds.haproxy.rules import HaproxyRule, default_backend, haproxy_rules
from lbgen.core.kinds.haproxy.slots import Slot, previous_of, template_slots, warm
from lbgen.core.layout import UnsafeValue, Verbatim
from lbgen.core.quoting import BARE_RE, scalar_text

if TYPE_CHECKING:
    from lbgen.core.kinds.haproxy.runtime_plan import RuntimePlan


def haproxy_quote(value: Any) -> Verbatim:
    """An HAProxy word: bare when safe, else single-quoted (no escapes or `$` expansion inside)."""
    text = scalar_text(value, "haproxy")
    if BARE_RE.fullmatch(text):
        return Verbatim(text)
    if "'" in text:
        raise UnsafeValue(f"haproxy: refusing {text!r}: a single quote cannot be quoted safely")
    return Verbatim(f"'{text}'")


def _plan_runtime(old: str, new: str) -> RuntimePlan | None:
    """`runtime_plan.plan_runtime`, imported at the first change planned: every one-shot render and
    every watcher of another kind loads the whole kind registry, not its runtime planner (issue 13)."""
    from lbgen.core.kinds.haproxy.runtime_plan import plan_runtime

    return plan_runtime(old, new)


def _runtime_default(variables: Mapping[str, Any]) -> bool:
    """Runtime updates default to on when the target's vars name its stats socket."""
    return "stats_socket" in variables


KIND = LbKind(
    name="haproxy",
    # Not `-q`: with it, `haproxy -c` also hides the errors that say why a config is invalid.
    check=("haproxy", "-c", "-f", "{staged}"),
    guarded=True,
    filters=MappingProxyType({"haproxy": haproxy_quote}),
    template_globals=MappingProxyType(
        {"slots": template_slots, "haproxy_rules": haproxy_rules, "default_backend": default_backend}
    ),
    context=MappingProxyType({"previous_slots": MappingProxyType({})}),
    value_types=(HaproxyRule, Slot),
    runtime_default=_runtime_default,
    plan_runtime=_plan_runtime,
    warm=warm,
    fragment_context=MappingProxyType({"slots": ContextRead(("previous_slots",), previous_of)}),
)
