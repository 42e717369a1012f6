"""XFRM over netlink: SAs, policies, SPI allocation and kernel events, on pyroute2."""
