"""MultiMap against the dict of dicts it stands for, under random puts and removals."""

from __future__ import annotations

import random

from xfrmctl.ike.multimap import MultiMap


def test_multimap_answers_as_a_dict_of_dicts() -> None:
    rng = random.Random(7)
    mm: MultiMap[int, str, int] = MultiMap()
    model: dict[int, dict[str, int]] = {}
    for step in range(3000):
        key, member = rng.randrange(8), rng.choice("abc")
        if rng.random() < 0.6:
            mm.put(key, member, step)
            model.setdefault(key, {})[member] = step
        else:
            mm.remove(key, member)
            model.get(key, {}).pop(member, None)
            if key in model and not model[key]:
                del model[key]
        assert sorted(mm) == sorted(model)
        for k, members in model.items():
            assert mm.items(k) == list(members.items())
            assert mm.last(k) == list(members.values())[-1]
        assert dict(mm.lasts()) == {k: list(v.values())[-1] for k, v in model.items()}
