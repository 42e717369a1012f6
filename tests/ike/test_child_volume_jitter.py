"""rand_bytes / rand_packets: volume rekey limits less a random jitter (swanctl), so many
Child SAs with the same limits do not rekey at the same moment; 0 jitter keeps the limit."""

from __future__ import annotations

from harness import child_spec, make_pair

from xfrmctl.ike.events import ChildSaReady


def soft_limits(seed: int, **child: int) -> tuple[int, int]:
    h, _, _ = make_pair(seed=seed, children=(child_spec(**child),))  # type: ignore[arg-type]
    h.a.initiate("a-to-b", now=h.now)
    h.run(5.0)
    (ready,) = h.of("a", ChildSaReady)
    return ready.lifetimes.soft_bytes, ready.lifetimes.soft_packets


def test_jitter_is_subtracted_within_the_range_and_varies() -> None:
    limits = {
        soft_limits(
            seed, rekey_bytes=1_000_000, rand_bytes=200_000, rekey_packets=5000, rand_packets=1000
        )
        for seed in range(6)
    }
    assert all(800_000 < b <= 1_000_000 and 4000 < p <= 5000 for b, p in limits), limits
    assert len({b for b, _ in limits}) > 1 and len({p for _, p in limits}) > 1, limits


def test_without_jitter_the_limit_is_exact_and_zero_means_none() -> None:
    assert soft_limits(1, rekey_bytes=1_000_000, rekey_packets=5000) == (1_000_000, 5000)
    assert soft_limits(1, rand_bytes=5000, rand_packets=50) == (0, 0)


def test_hard_volume_limits_are_life_bytes_and_life_packets() -> None:
    h, _, _ = make_pair(
        seed=1,
        children=(
            child_spec(rekey_bytes=1000, life_bytes=1500, rekey_packets=10, life_packets=15),
        ),
    )  # type: ignore[arg-type]
    h.a.initiate("a-to-b", now=h.now)
    h.run(5.0)
    (ready,) = h.of("a", ChildSaReady)
    assert (ready.lifetimes.hard_bytes, ready.lifetimes.hard_packets) == (1500, 15)
