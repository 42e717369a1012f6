"""The entry points: `AsyncXfrm` for the daemon's event loop, `Xfrm` for scripts and the CLI.

Both work on one network namespace: the current one, or a named one (`ip netns` name).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from xfrmctl.kernel import algorithms, events, transaction
from xfrmctl.kernel import policy as policy_ops
from xfrmctl.kernel import sa as sa_ops
from xfrmctl.kernel.messages import Group
from xfrmctl.kernel.socket import Connection, Request
from xfrmctl.kernel.transaction import ChildSA, CleanupReport, Ownership
from xfrmctl.kernel.types import (
    SA,
    Address,
    Mark,
    Policy,
    PolicyId,
    Proto,
    ReplayState,
    SaCounters,
    SaId,
    SpiRequest,
)

T = TypeVar("T")


class AsyncXfrm:
    """XFRM state and policy database of one network namespace."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.conn = Connection(netns)
        self._opened = False

    async def open(self) -> AsyncXfrm:
        if not self._opened:
            await self.conn.open()
            self._opened = True
        return self

    def close(self) -> None:
        if self._opened:
            self.conn.close()
            self._opened = False

    async def __aenter__(self) -> AsyncXfrm:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # SAs
    async def add_sa(self, sa: SA) -> None:
        await sa_ops.add_sa(self.conn, sa)

    async def update_sa(self, sa: SA) -> None:
        await sa_ops.update_sa(self.conn, sa)

    async def delete_sa(self, sa_id: SaId, mark: Mark | None = None) -> None:
        await sa_ops.delete_sa(self.conn, sa_id, mark)

    async def get_sa(self, sa_id: SaId, mark: Mark | None = None) -> SA:
        return await sa_ops.get_sa(self.conn, sa_id, mark)

    async def sas(self) -> list[SA]:
        return [sa async for sa in sa_ops.dump_sas(self.conn)]

    async def flush_sas(self, proto: Proto | None = None) -> None:
        await sa_ops.flush_sas(self.conn, proto)

    async def allocate_spi(self, req: SpiRequest) -> int:
        """A free SPI for an inbound SA, reserved by a larval state that `update_sa` fills."""
        return await sa_ops.allocate_spi(self.conn, req)

    async def counters(self, sa_id: SaId, src: Address, mark: Mark | None = None) -> SaCounters:
        return await sa_ops.get_counters(self.conn, sa_id, src, mark)

    async def set_replay_state(
        self, sa_id: SaId, src: Address, replay: ReplayState, *, esn: bool, mark: Mark | None = None
    ) -> None:
        await sa_ops.set_replay_state(self.conn, sa_id, src, replay, esn=esn, mark=mark)

    # Policies
    async def add_policy(self, policy: Policy) -> None:
        await policy_ops.add_policy(self.conn, policy)

    async def update_policy(self, policy: Policy) -> None:
        await policy_ops.update_policy(self.conn, policy)

    async def delete_policy(self, pid: PolicyId) -> None:
        await policy_ops.delete_policy(self.conn, pid)

    async def get_policy(self, pid: PolicyId) -> Policy:
        return await policy_ops.get_policy(self.conn, pid)

    async def policies(self) -> list[Policy]:
        return [p async for p in policy_ops.dump_policies(self.conn)]

    async def flush_policies(self) -> None:
        await policy_ops.flush_policies(self.conn)

    # Transactions and batches
    async def install_child(self, child: ChildSA, *, replace_policies: bool = True) -> None:
        await transaction.install_child(self.conn, child, replace_policies=replace_policies)

    async def install_children(
        self, children: Sequence[ChildSA], *, replace_policies: bool = True
    ) -> None:
        await transaction.install_children(self.conn, children, replace_policies=replace_policies)

    async def remove_child(self, child: ChildSA, *, keep_policies: bool = False) -> None:
        await transaction.remove_child(self.conn, child, keep_policies=keep_policies)

    async def remove_children(
        self, children: Sequence[ChildSA], *, keep_policies: bool = False
    ) -> None:
        await transaction.remove_children(self.conn, children, keep_policies=keep_policies)

    async def install_policies(self, policies: Sequence[Policy], *, replace: bool = True) -> None:
        await transaction.install_policies(self.conn, policies, replace=replace)

    async def cleanup_stale(
        self,
        ownership: Ownership = transaction.DEFAULT_OWNERSHIP,
        keep: Callable[[SA | Policy], bool] = lambda _: False,
    ) -> CleanupReport:
        return await transaction.cleanup_stale(self.conn, ownership, keep)

    async def batch(self, requests: Sequence[Request]) -> Sequence[Request]:
        """Low level: send prepared requests (sa.add_request(...), ...) in one round-trip."""
        return await self.conn.batch(requests)

    # Events and capabilities
    def events(self, groups: Iterable[Group] = events.DEFAULT_GROUPS) -> events.EventStream:
        return events.EventStream(self.netns, groups)

    async def probe(self) -> algorithms.Capabilities:
        return await algorithms.probe(self.netns)


class Xfrm:
    """Blocking twin of AsyncXfrm, running its own event loop; not for use inside one."""

    def __init__(self, netns: str | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._x = AsyncXfrm(netns)
        self._run(self._x.open())

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coro)

    def close(self) -> None:
        self._x.close()
        self._loop.close()

    def __enter__(self) -> Xfrm:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def add_sa(self, sa: SA) -> None:
        self._run(self._x.add_sa(sa))

    def update_sa(self, sa: SA) -> None:
        self._run(self._x.update_sa(sa))

    def delete_sa(self, sa_id: SaId, mark: Mark | None = None) -> None:
        self._run(self._x.delete_sa(sa_id, mark))

    def get_sa(self, sa_id: SaId, mark: Mark | None = None) -> SA:
        return self._run(self._x.get_sa(sa_id, mark))

    def sas(self) -> list[SA]:
        return self._run(self._x.sas())

    def flush_sas(self, proto: Proto | None = None) -> None:
        self._run(self._x.flush_sas(proto))

    def allocate_spi(self, req: SpiRequest) -> int:
        return self._run(self._x.allocate_spi(req))

    def counters(self, sa_id: SaId, src: Address, mark: Mark | None = None) -> SaCounters:
        return self._run(self._x.counters(sa_id, src, mark))

    def set_replay_state(
        self, sa_id: SaId, src: Address, replay: ReplayState, *, esn: bool, mark: Mark | None = None
    ) -> None:
        self._run(self._x.set_replay_state(sa_id, src, replay, esn=esn, mark=mark))

    def add_policy(self, policy: Policy) -> None:
        self._run(self._x.add_policy(policy))

    def update_policy(self, policy: Policy) -> None:
        self._run(self._x.update_policy(policy))

    def delete_policy(self, pid: PolicyId) -> None:
        self._run(self._x.delete_policy(pid))

    def get_policy(self, pid: PolicyId) -> Policy:
        return self._run(self._x.get_policy(pid))

    def policies(self) -> list[Policy]:
        return self._run(self._x.policies())

    def flush_policies(self) -> None:
        self._run(self._x.flush_policies())

    def install_child(self, child: ChildSA, *, replace_policies: bool = True) -> None:
        self._run(self._x.install_child(child, replace_policies=replace_policies))

    def install_children(
        self, children: Sequence[ChildSA], *, replace_policies: bool = True
    ) -> None:
        self._run(self._x.install_children(children, replace_policies=replace_policies))

    def remove_child(self, child: ChildSA, *, keep_policies: bool = False) -> None:
        self._run(self._x.remove_child(child, keep_policies=keep_policies))

    def remove_children(self, children: Sequence[ChildSA], *, keep_policies: bool = False) -> None:
        self._run(self._x.remove_children(children, keep_policies=keep_policies))

    def install_policies(self, policies: Sequence[Policy], *, replace: bool = True) -> None:
        self._run(self._x.install_policies(policies, replace=replace))

    def cleanup_stale(
        self,
        ownership: Ownership = transaction.DEFAULT_OWNERSHIP,
        keep: Callable[[SA | Policy], bool] = lambda _: False,
    ) -> CleanupReport:
        return self._run(self._x.cleanup_stale(ownership, keep))

    def batch(self, requests: Sequence[Request]) -> Sequence[Request]:
        return self._run(self._x.batch(requests))

    def probe(self) -> algorithms.Capabilities:
        return self._run(self._x.probe())
