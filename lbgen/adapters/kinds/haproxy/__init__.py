"""HAProxy's adapters: the master socket's control (`control`), the stats socket's runtime API
(`runtime`), and the live server slots each render keeps (`live_slots`)."""

from lbgen.adapters.kinds import KindAdapter
from lbgen.adapters.kinds.haproxy.control import HaproxyControl
from lbgen.adapters.kinds.haproxy.live_slots import LiveSlots
from lbgen.adapters.kinds.haproxy.runtime import HaproxyRuntime

ADAPTER = KindAdapter(control=HaproxyControl, runtime=HaproxyRuntime, live_context=LiveSlots)
