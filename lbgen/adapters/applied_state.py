"""The applied-state file beside each dest (`.<dest name>.applied.json`), written atomically.

A missing file means nothing is known (the guard then allows the first render); an unreadable
or invalid one is logged and treated the same, so a corrupt file can never block an LB.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lbgen.adapters.files import real_dest, write_atomic
from lbgen.core.applied_state import AppliedEncoder, decode_applied
from lbgen.core.model import Catalog
from lbgen.core.settings import Target
from lbgen.errors import ApplyError, InvalidValue

log = logging.getLogger(__name__)


def state_path(dest: Path) -> Path:
    """Where the applied state of `dest` lives (beside it, hidden like the LKG)."""
    return dest.with_name(f".{dest.name}.applied.json")


class AppliedStateFiles:
    """`lbgen.ports.AppliedStates` on the filesystem. `save` is called from one thread (the
    watcher's saver lane, or `lbgen render`): its encoders, one per target, are not locked."""

    def __init__(self) -> None:
        self._encoders: dict[str, AppliedEncoder] = {}

    def load(self, target: Target, current: Catalog | None = None) -> Catalog | None:
        """What `target` last applied. `current` (the catalog just read): what did not change is
        its own (`decode_applied`: `current` itself when nothing did, as for a one-shot render of
        an unchanged registry); its encoding is kept for `save`."""
        path = state_path(real_dest(target))
        try:
            return decode_applied(path.read_bytes(), current, self._encoder(target))
        except FileNotFoundError:
            return None
        except (OSError, InvalidValue) as e:
            log.warning("%s: ignoring %s (the guard starts without it): %s", target.name, path, e)
            return None

    def save(self, target: Target, catalog: Catalog) -> None:
        path = state_path(real_dest(target))
        try:
            encoded = self._encoder(target).encode(catalog)
            write_atomic(path, encoded, target.mode, target.owner, target.group)
        except OSError as e:
            raise ApplyError(f"{target.name}: write {path}: {e}") from e

    def _encoder(self, target: Target) -> AppliedEncoder:
        return self._encoders.setdefault(target.name, AppliedEncoder())
