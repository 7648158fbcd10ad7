"""A generic target: lbgen renders and writes the file; the target's own argv check and reload
do the rest. No quoting is enforced, no built-in check (settings then ask for one)."""

from lbgen.core.kinds import LbKind

KIND = LbKind(name="generic")
