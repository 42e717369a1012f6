"""Token buckets keyed by peer address, with a table of bounded size.

Unauthenticated input must not make us send unbounded traffic (reflection) nor keep unbounded
state: each key gets `burst` tokens refilled at `rate` per second, all keys together share a
global bucket, and the least recently used key is forgotten when the table is full.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at

    def take(self, rate: float, burst: float, now: float) -> bool:
        self.tokens = min(burst, self.tokens + max(0.0, now - self.at) * rate)
        self.at = max(self.at, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RateLimiter:
    def __init__(
        self,
        rate: float,
        burst: float,
        total_rate: float,
        total_burst: float,
        max_keys: int = 1024,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.total_rate = total_rate
        self.total_burst = total_burst
        self.max_keys = max_keys
        self._total = _Bucket(total_burst, 0.0)
        self._keys: OrderedDict[Hashable, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def allow(self, key: Hashable, now: float) -> bool:
        """Spend a token for `key` if both its bucket and the global one have one."""
        bucket = self._keys.get(key)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._keys[key] = bucket
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        # Refill the key's bucket first so a refused global token does not cost it one.
        bucket.tokens = min(self.burst, bucket.tokens + max(0.0, now - bucket.at) * self.rate)
        bucket.at = max(bucket.at, now)
        if bucket.tokens < 1.0:
            return False
        if not self._total.take(self.total_rate, self.total_burst, now):
            return False
        bucket.tokens -= 1.0
        return True
