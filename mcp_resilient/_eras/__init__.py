"""Protocol eras: what differs between the handshake and the stateless revisions.

The session talks to an ``Era`` for everything era-specific: how a session is opened
(handshake), which headers ride on each request, whether a listen stream exists and
how a session ends. A stateless-era implementation sits beside the handshake one.
"""

from ._base import Era
from ._handshake import HANDSHAKE_VERSIONS, HandshakeEra

__all__ = ["HANDSHAKE_VERSIONS", "Era", "HandshakeEra"]
