"""Sans-IO IKEv2 engine (RFC 7296): bytes and clock in, bytes and events out.

Nothing in this package opens sockets, reads clocks, sleeps or touches netlink.
"""
