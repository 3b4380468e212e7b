"""Protocol eras: what differs between the handshake and the stateless revisions.

The session talks to an ``Era`` for everything era-specific: how a session is opened
(handshake or discovery), which headers and ``_meta`` ride on each request, whether a
listen stream exists and how a session ends. ``Negotiator`` picks the era per endpoint.
"""

from ._base import Era
from ._handshake import HANDSHAKE_VERSIONS, HandshakeEra
from ._negotiate import AUTO, Negotiator, check_version
from ._stateless import STATELESS_VERSIONS, StatelessEra, StatelessSession

__all__ = [
    "AUTO",
    "HANDSHAKE_VERSIONS",
    "STATELESS_VERSIONS",
    "Era",
    "HandshakeEra",
    "Negotiator",
    "StatelessEra",
    "StatelessSession",
    "check_version",
]
