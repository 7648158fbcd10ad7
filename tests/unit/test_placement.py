"""Slot placement (issue 11): a live endpoint keeps its slot for as long as it lives."""

from __future__ import annotations

import msgspec
import random
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbgen.adapters.bounded_render import BoundedRenderer
from lbgen.core.model import DEFAULT_SERVED_HEALTH, Catalog, Endpoint, Service
from lbgen.core.kinds.haproxy.slots import place, previous_slots
from lbgen.core.render import render
from lbgen.core.settings import Target

TEMPLATE = (Path(__file__).parents[2] / "templates" / "haproxy.cfg.j2").read_text(encoding="utf-8")
IDS = st.text("abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=12)
# A step adds (True) or removes (False) the endpoint at a random position.
STEPS = st.lists(st.tuples(st.booleans(), IDS, st.integers(0, 50)), max_size=40)


def assignment(placed: list[str | None]) -> dict[str, int]:
    return {i: number for number, i in enumerate(placed, start=1) if i is not None}


@settings(max_examples=150, deadline=None)
@given(st.lists(IDS, unique=True, max_size=10), STEPS, st.sampled_from([1, 2, 4]))
def test_no_surviving_endpoint_ever_changes_slot(start: list[str], steps: list, minimum: int) -> None:
    alive = list(start)
    current = assignment(place(sorted(alive), minimum))
    for add, new_id, position in steps:
        if add and new_id not in alive:
            alive.append(new_id)
        elif not add and alive:
            alive.pop(position % len(alive))
        placed = place(sorted(alive), minimum, current)
        after = assignment(placed)
        assert sorted(after) == sorted(alive)  # every endpoint once, nothing else
        assert all(after[i] == current[i] for i in alive if i in current)
        assert len(placed) & (len(placed) - 1) == 0 and len(placed) >= max(minimum, len(alive))
        current = after


def test_without_a_previous_assignment_placement_is_by_hash() -> None:
    # crc32 % 4: a → 3, c → 3 (collides, wraps to 0), d → 0 (taken, moves to 1)
    assert place(["a", "c", "d"], 4) == ["c", "d", None, "a"]


def test_slots_grow_by_doubling_and_keep_their_numbers() -> None:
    kept = {"a": 1, "b": 2, "c": 3, "d": 4}
    placed = place(["a", "b", "c", "d", "e"], 4, kept)
    assert len(placed) == 8 and assignment(placed)["e"] in (5, 6, 7, 8)  # slots 1-4 are taken
    assert {i: n for i, n in assignment(placed).items() if i != "e"} == kept


def test_slots_shrink_only_as_far_as_no_kept_endpoint_moves() -> None:
    assert len(place(["a"], 4, {"a": 7})) == 8  # slot 7 stays: no shrink below it
    assert place(["a"], 4, {"a": 2}) == [None, "a", None, None]  # shrinks from any count to 4
    assert len(place([], 4, {"gone": 7})) == 4


def test_a_new_endpoint_takes_its_hash_slot_or_the_next_free_one() -> None:
    home = zlib.crc32(b"new") % 4
    placed = place(["new", "old"], 4, {"old": home + 1})
    assert placed[home] == "old" and placed[(home + 1) % 4] == "new"


def test_clashing_previous_slots_go_to_the_first_id() -> None:
    placed = place(["a", "b"], 4, {"a": 2, "b": 2})
    assert placed[1] == "a" and placed.count("b") == 1


TARGET = Target(name="lb", kind="haproxy", template="haproxy.cfg.j2", dest="/nonexistent/haproxy.cfg")


def catalog(*ids: str) -> Catalog:
    endpoints = tuple(Endpoint(i, "10.0.0.1", 2000 + sum(map(ord, i))) for i in sorted(ids))
    return Catalog(1, (Service("web", {"listen": 80}, endpoints),))


def render_after(text: str | None, now: Catalog) -> str:
    previous = {"previous_slots": previous_slots(text, now)} if text is not None else None
    return render(TEMPLATE, now, TARGET, DEFAULT_SERVED_HEALTH, kind_context=previous)


def servers(text: str) -> dict[str, str]:
    return {line.split()[2]: line.split()[1] for line in text.splitlines() if line.startswith("    server ")}


def test_render_keeps_live_servers_in_their_slots_and_is_unchanged_when_nothing_changed() -> None:
    first = render_after(None, catalog("x7", "q2", "zz", "m0"))
    assert render_after(first, catalog("x7", "q2", "zz", "m0")) == first
    later = render_after(first, catalog("x7", "zz", "m0", "n9", "k3"))  # q2 gone, two new ones
    before, after = servers(first), servers(later)
    for addr, slot in before.items():
        if addr in after and addr != "127.0.0.1:1":
            assert after[addr] == slot


def test_previous_slots_reads_servers_by_address_and_skips_placeholders() -> None:
    text = ("backend web\n    mode http\n    server slot1 127.0.0.1:1 disabled weight 1\n"
            "    server slot3 10.0.0.1:80 weight 1\n    server slot2 [::1]:81 weight 1\n"
            "backend other\n    server slot1 10.0.0.1:80 weight 1\n")
    now = Catalog(1, (Service("web", {}, (Endpoint("a", "10.0.0.1", 80), Endpoint("b", "::1", 81),
                                          Endpoint("c", "10.0.0.9", 80))),))
    assert previous_slots(text, now) == {"web": {"a": 3, "b": 2}}


def random_catalog(ids: list[str]) -> Catalog:
    endpoints = tuple(Endpoint(i, f"10.0.{n // 250}.{n % 250 + 1}", 8080) for n, i in enumerate(sorted(ids)))
    return Catalog(1, (Service("web", {"listen": 80}, endpoints),))


def slot_of(text: str, catalog: Catalog) -> dict[str, int]:
    return previous_slots(text, catalog).get("web", {})


@pytest.mark.parametrize("written", [True, False], ids=["live-file", "render-in-flight"])
def test_bounded_renderer_keeps_live_endpoints_in_their_slots(tmp_path: Path, written: bool) -> None:
    """30 trials with random ids (the issue's case: 15 of 30 moved a live endpoint before)."""
    rng = random.Random(11)
    for trial in range(30):
        renderer = BoundedRenderer()
        target = msgspec.structs.replace(TARGET, dest=str(tmp_path / f"haproxy{trial}.cfg"))
        ids = [f"{rng.getrandbits(64):016x}" for _ in range(rng.randint(2, 9))]
        first = random_catalog(ids)
        text = renderer.render(TEMPLATE, first, target, DEFAULT_SERVED_HEALTH)
        if written:
            Path(target.dest).write_text(text, encoding="utf-8")
        ids.pop(rng.randrange(len(ids)))
        ids.append(f"{rng.getrandbits(64):016x}")
        second = random_catalog(ids)
        after = slot_of(renderer.render(TEMPLATE, second, target, DEFAULT_SERVED_HEALTH), second)
        before = slot_of(text, second)
        assert before and all(after[i] == n for i, n in before.items()), (trial, before, after)


def test_a_far_out_slot_from_a_hand_edited_config_is_not_kept() -> None:
    """`slot999999999` in the live file must not make the backend a billion slots long."""
    placed = place(["a", "b"], 4, {"a": 999_999_999, "b": 2})
    assert len(placed) == 4 and placed[1] == "b" and "a" in placed
    scaled_down = place(["z"], 4, {"z": 60})  # 64 replicas to 1: the survivor stays in slot 60
    assert len(scaled_down) == 64 and scaled_down[59] == "z"
