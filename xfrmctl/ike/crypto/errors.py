"""Errors of the crypto layer; messages name what is wrong, never key material."""


class CryptoError(Exception):
    """Base of every error raised by xfrmctl.ike.crypto."""


class IntegrityError(CryptoError):
    """An ICV/MAC check failed or an AEAD tag did not match."""


class InvalidKeyExchange(CryptoError):
    """The peer's key exchange public value is malformed or unsafe."""


class UnsupportedAlgorithm(CryptoError):
    """A transform, group or signature scheme we do not implement."""


class CertificateError(CryptoError):
    """A certificate or chain could not be loaded or verified."""


class MalformedCertificate(CertificateError):
    """Bytes that do not parse as a certificate (the peer's fault, not a trust decision)."""
