"""What crosses a process boundary in Lookout: stream names, message schemas, config and the client.

Every service (signaling, mediabridge, inference, training) depends on this package and on no other
service. The wire protocol it implements is documented in ``docs/protocol.md``.
"""

PROTOCOL_VERSION = 2
"""The version every message Lookout writes carries (``v``). v2 renamed ``capture_ms`` to ``received_ms``
(it always was the time the frame entered Lookout, not the camera's capture time), the frame's ``jpeg``
field to ``image`` (it may hold a PNG), and added the ``signaling`` drop site."""
SUPPORTED_VERSIONS = (1, 2)
"""Versions readers still accept: v1 messages are read with their old field names."""
