"""A generic target has no built-in control: its own argv check, reload and verify it."""

from lbgen.adapters.kinds import KindAdapter

ADAPTER = KindAdapter()
