"""Transports: how hactl runs commands on hosts (asyncssh for real hosts, a fake for unit tests)."""

import warnings

# asyncssh touches cryptography's DSA classes when it is imported; cryptography >= 51 warns that
# DSA is deprecated on that access. asyncssh's default algorithm lists (which hactl uses) hold no
# DSA (`ssh-dss`) key or certificate type, so hactl never offers or accepts DSA keys and the
# warning says nothing to hactl's users: silence that one message from asyncssh only, not
# cryptography's warnings in general.
warnings.filterwarnings("ignore", message="DSA is deprecated", category=UserWarning,
                        module=r"asyncssh(\.|$)")
