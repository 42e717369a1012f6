"""xfrmctl: an IKEv2 keying daemon that installs IPsec SAs into the Linux kernel's XFRM layer."""

__version__ = "0.1.0"
