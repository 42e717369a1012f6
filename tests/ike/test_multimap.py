"""MultiMap against the dict of dicts it stands for, under random puts and removals."""

from __future__ import annotations

import random
from typing import Any

from xfrmctl.ike.multimap import MemberMap, MultiMap


def _model(model: dict[Any, dict[Any, Any]], key: Any, member: Any, value: Any, put: bool) -> None:
    """What a put or a removal does to the dict of dicts both maps stand for."""
    if put:
        model.setdefault(key, {})[member] = value
        return
    model.get(key, {}).pop(member, None)
    if key in model and not model[key]:
        del model[key]


def test_multimap_answers_as_a_dict_of_dicts() -> None:
    rng = random.Random(7)
    mm: MultiMap[int, str, int] = MultiMap()
    model: dict[int, dict[str, int]] = {}
    for step in range(3000):
        key, member = rng.randrange(8), rng.choice("abc")
        put = rng.random() < 0.6
        if put:
            mm.put(key, member, step)
        else:
            mm.remove(key, member)
        _model(model, key, member, step, put)
        assert sorted(mm) == sorted(model)
        for k, members in model.items():
            assert mm.items(k) == list(members.items())
            assert mm.last(k) == list(members.values())[-1]
        assert dict(mm.lasts()) == {k: list(v.values())[-1] for k, v in model.items()}


def test_member_map_answers_as_a_dict_of_ordered_sets() -> None:
    rng = random.Random(11)
    mm: MemberMap[int, int] = MemberMap()
    model: dict[int, dict[int, None]] = {}
    for _ in range(3000):
        key, member = rng.randrange(8), rng.randrange(4)
        put = rng.random() < 0.6
        if put:
            mm.put(key, member)
        else:
            mm.remove(key, member)
        _model(model, key, member, None, put)
        assert sorted(mm) == sorted(model)
        for k in range(9):
            assert mm.members(k) == list(model.get(k, {})), k
            assert mm.last(k) == (list(model[k])[-1] if k in model else None)
            assert (k in mm) == (k in model)
        assert dict(mm.lasts()) == {k: list(v)[-1] for k, v in model.items()}
    assert not isinstance(next(iter(mm._map.values()), 0), tuple)


def test_a_member_map_key_with_one_member_holds_it_bare() -> None:
    mm: MemberMap[str, int] = MemberMap()
    member = 123456789
    mm.put("conn", member)
    assert mm._map["conn"] is member  # no (member, None) tuple
    mm.put("conn", 7)
    mm.remove("conn", 7)
    assert mm._map["conn"] is member
