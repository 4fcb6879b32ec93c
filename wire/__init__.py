"""What crosses a process boundary in Lookout: stream names, message schemas, config and the client.

Every service (signaling, mediabridge, inference, training) depends on this package and on no other
service. The wire protocol it implements is documented in ``docs/protocol.md``.
"""

PROTOCOL_VERSION = 1
