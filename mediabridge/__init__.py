"""Media bridge: the aiortc WebRTC peer that samples frames and publishes them to Redis Streams."""
