"""Redis key and stream names. One place, so that no service spells a key by hand.

All keys live under one prefix so that several Lookout deployments can share a Redis server
(``LOOKOUT_KEY_PREFIX``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Builds every Redis key Lookout uses, under one prefix."""

    prefix: str = "lookout"

    # --- frames and results -------------------------------------------------------------
    def frames(self, model: str) -> str:
        """Stream of frames waiting for workers of ``model`` (one consumer group per model)."""
        return f"{self.prefix}:frames:{model}"

    def results(self, session: str) -> str:
        """Stream of results and drop records for one session; only that session reads it."""
        return f"{self.prefix}:results:{session}"

    def drop_counts(self, model: str) -> str:
        """Hash ``reason -> count`` of every drop recorded for ``model`` (all sessions, all places)."""
        return f"{self.prefix}:drops:{model}"

    def inferred_count(self, model: str) -> str:
        """Counter (INCR) of frames of ``model`` that ended as a result; with ``drop_counts`` it gives the
        monitor the cluster-wide infer and drop rates behind the scale ratio."""
        return f"{self.prefix}:inferred:{model}"

    def timed_out(self, model: str, entry_id: str) -> str:
        """Mark (SET EX) that a client stopped waiting for a frame still pending at a worker, and counted
        it as a timeout: the worker's end deletes it and publishes nothing (``wire.outcomes``)."""
        return f"{self.prefix}:timed-out:{model}:{entry_id}"

    # --- patterns the monitor scans to find every model in use ---------------------------------
    def frames_pattern(self) -> str:
        return f"{self.prefix}:frames:*"

    def drop_counts_pattern(self) -> str:
        return f"{self.prefix}:drops:*"

    def inferred_count_pattern(self) -> str:
        return f"{self.prefix}:inferred:*"

    # --- liveness -----------------------------------------------------------------------
    def worker(self, worker_id: str) -> str:
        """Heartbeat (JSON WorkerInfo, SET EX) of one inference worker; expires when it stops beating."""
        return f"{self.prefix}:worker:{worker_id}"

    def worker_pattern(self) -> str:
        return f"{self.prefix}:worker:*"

    def bridge(self, bridge_id: str) -> str:
        """Heartbeat (JSON BridgeInfo, SET EX) of one media bridge; expires when it stops beating."""
        return f"{self.prefix}:bridge:{bridge_id}"

    def bridge_pattern(self) -> str:
        return f"{self.prefix}:bridge:*"

    def bridge_requests(self, bridge_id: str) -> str:
        """List a bridge pops signaling requests (offers, hang-ups) from."""
        return f"{self.prefix}:bridge-requests:{bridge_id}"

    def reply(self, request_id: str) -> str:
        """List that receives the single reply to one request (BLPOP with a timeout)."""
        return f"{self.prefix}:reply:{request_id}"

    def session(self, session: str) -> str:
        """Hash describing one live session (bridge, model, created); expires unless refreshed."""
        return f"{self.prefix}:session:{session}"

    def session_events(self, session: str) -> str:
        """Pub/sub channel for out-of-band events of one session (bridge lost, media state)."""
        return f"{self.prefix}:session-events:{session}"

    # --- model registry -----------------------------------------------------------------
    def model_versions(self, model: str) -> str:
        """Hash ``version -> JSON ModelVersion`` of every registered version of ``model``."""
        return f"{self.prefix}:model:{model}:versions"

    def model_promoted(self, model: str) -> str:
        """String: the version of ``model`` that workers should serve."""
        return f"{self.prefix}:model:{model}:promoted"

    def model_history(self, model: str) -> str:
        """List of versions promoted before, newest first (for rollback)."""
        return f"{self.prefix}:model:{model}:history"

    def model_names(self) -> str:
        """Set of model names known to the registry."""
        return f"{self.prefix}:models"

    def model_events(self) -> str:
        """Pub/sub channel announcing promotions: payload is the model name."""
        return f"{self.prefix}:model-events"


WORKER_GROUP = "workers"
"""Consumer group name on every frame stream: all workers of one model share it."""
