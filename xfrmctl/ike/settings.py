"""`EndpointConfig`: the engine's tunables (retransmission, DoS limits, fragments, ports).

Defaults follow strongSwan's where it has one, so a user moving over sees the same timing.
"""

from __future__ import annotations

from dataclasses import dataclass

IKE_PORT = 500


@dataclass(frozen=True)
class EndpointConfig:
    retransmit_timeout: float = 4.0  # strongSwan's defaults: 4 s × 1.8^n, 5 retries (~165 s)
    retransmit_base: float = 1.8
    retransmit_tries: int = 5
    half_open_timeout: float = 30.0
    cookie_threshold: int = 10  # half-open SAs before we demand cookies
    cookie_threshold_ip: int = 3  # half-open SAs from one IP before we demand cookies of it
    block_threshold: int = 5  # half-open SAs from one IP beyond which its requests are dropped
    cookie_secret_period: float = 300.0  # cookie secret lifetime; the previous one is kept
    max_half_open: int = 1000  # beyond this, new IKE_SA_INIT requests are dropped
    fragment_size: int = 1280
    temporary_failure_delay: float = 2.0  # retry after TEMPORARY_FAILURE, plus jitter
    # INVALID_IKE_SPI answers to requests for unknown IKE SAs: per source address, and in all.
    invalid_spi_rate: float = 1.0  # per second
    invalid_spi_burst: float = 5.0
    invalid_spi_total_rate: float = 100.0
    invalid_spi_total_burst: float = 200.0
    rate_limit_peers: int = 1024  # addresses remembered by each rate limiter
    dpd_hint_interval: float = 30.0  # at most one liveness check per SA per INVALID_IKE_SPI burst

    def give_up_after(self) -> float:
        """Time from a request's first transmission until we give up on it."""
        return sum(
            self.retransmit_timeout * self.retransmit_base**i
            for i in range(self.retransmit_tries + 1)
        )

    ike_port: int = IKE_PORT  # our local ports; the host may move them (tests, side by side)
    natt_port: int = 4500
    # The last-resort guards (a bug costs one SA, never the process) re-raise instead: tests
    # and fuzzers run strict so that a guard firing is a failure, not a quiet violation.
    strict: bool = False
