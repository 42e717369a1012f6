"""IKEv2 cryptography: algorithms, key exchange, key schedule, authentication, certificates.

All primitives come from `cryptography`; only AES-XCBC is assembled here from its AES blocks.
"""
