"""Where each frame a worker holds stands, and what the worker should do next: a plain, IO-free class.

The worker's event loop asks the scheduler how many entries the next read may take, which frames to
decode next, which prepared frames to put in the next model batch, and which frames to drop because
their deadline passed; it tells the scheduler what happened (read, accepted, prepared, ended). Nothing
here waits, reads a clock or touches Redis or the model: time is an argument. So every scheduling rule
is tested synchronously (tests/inference/test_scheduler.py), like a jitter buffer.

Each entry the worker holds has exactly one ``Stage``. Two capacities bound what is held:

* every entry held, whatever its stage, counts against ``capacity`` for reads, so that a worker never
  reads far ahead and latency stays flat under overload;
* frames that left the backlog (decoding, prepared, in the model, or ending after that) count against
  ``capacity`` for decoding: one batch in the model and the next one being decoded.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from wire.messages import DropReason, FrameMessage

if TYPE_CHECKING:
    from inference.detector import Prepared

MAX_SKIP_READ = 64
"""Most entries one read takes while it is dropping a backlog of stale frames."""
MAX_STALE_READS = 8
"""Where the count of reads in a row that found only stale frames stops growing (2**8 > MAX_SKIP_READ)."""


class Stage(enum.Enum):
    """Where a held stream entry stands. An entry is held from its read until its outcome was published."""

    READ = "read"
    """Read or claimed; its intake (parse and refusal) is deciding."""
    WAITING = "waiting"
    """Accepted, waiting in the backlog until there is room to decode it."""
    PREPARING = "preparing"
    """Being decoded and letterboxed on the cpu thread."""
    READY = "ready"
    """Prepared, waiting for the model (in stream order)."""
    IN_MODEL = "in_model"
    """In the model, or being postprocessed."""
    ENDING = "ending"
    """Its outcome is being published after it left the backlog: it still holds decoding capacity."""
    DROPPING = "dropping"
    """Its drop is being published before it was ever decoded (refused at intake, or late in the backlog)."""


_NEXT: dict[Stage, frozenset[Stage]] = {
    Stage.READ: frozenset({Stage.WAITING, Stage.DROPPING}),
    Stage.WAITING: frozenset({Stage.PREPARING, Stage.DROPPING}),
    Stage.PREPARING: frozenset({Stage.READY, Stage.ENDING}),
    Stage.READY: frozenset({Stage.IN_MODEL, Stage.ENDING}),
    Stage.IN_MODEL: frozenset({Stage.ENDING}),
    Stage.ENDING: frozenset(),
    Stage.DROPPING: frozenset(),
}
"""The transitions allowed; every stage may also be forgotten once its outcome was published."""

_DECODED = frozenset({Stage.PREPARING, Stage.READY, Stage.IN_MODEL, Stage.ENDING})
"""Stages that hold decoding capacity."""


class IllegalTransitionError(RuntimeError):
    """A held entry was asked to move where its stage does not lead: a bug in the worker."""


@dataclass
class Job:
    """A frame the worker accepted: what it carries through decode, inference and publication.

    Its stage is not here but in the ``Scheduler``, the one place that moves it.
    """

    entry_id: str
    frame: FrameMessage
    read_ms: float
    image: NDArray[np.uint8] | None = None
    prepared: Prepared | None = None
    prepared_by: object | None = None
    """The detector that prepared it: a swapped-in model prepares it again."""
    decode_ms: float = 0.0
    preprocess_ms: float = 0.0


@dataclass(frozen=True)
class Late:
    """A frame to drop as DEADLINE, with the drop's detail."""

    job: Job
    detail: str

    reason = DropReason.DEADLINE


def overdue(frame: FrameMessage, now_ms: float, stage: Stage) -> str | None:
    """The one deadline check: the DEADLINE drop detail if ``frame`` is late at ``now_ms``, else None."""
    late = now_ms - frame.deadline_ms
    if late <= 0:
        return None
    if stage is Stage.READ:
        return f"read {late:.0f} ms after its deadline"
    if stage is Stage.WAITING:
        return "deadline passed while it waited on the worker"
    return "deadline passed before inference"


class Scheduler:
    """The stages of the entries one worker holds, and the decisions that follow from them."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.capacity = 2 * batch
        """Frames held at once: one batch in the model, the next one being decoded."""
        self._stages: dict[str, Stage] = {}
        self._counts: Counter[Stage] = Counter()
        self._backlog: deque[Job] = deque()  # the WAITING jobs, in the order they were accepted
        self._ready: deque[Job] = deque()  # the READY jobs, in the order they were prepared
        self._stale_reads = 0  # reads in a row that found only frames refused at once
        self.closed = False
        """Set by ``close()``: nothing more is decoded (the worker is giving up on its frames)."""

    # --- what is held -----------------------------------------------------------------------------
    def __len__(self) -> int:
        """Entries held: read and not ended yet."""
        return len(self._stages)

    def holds(self, entry_id: str) -> bool:
        return entry_id in self._stages

    def stage(self, entry_id: str) -> Stage | None:
        return self._stages.get(entry_id)

    @property
    def decoding(self) -> int:
        """Frames holding decoding capacity (they left the backlog and have not ended)."""
        return sum(self._counts[stage] for stage in _DECODED)

    @property
    def ready(self) -> int:
        return len(self._ready)

    # --- reading ----------------------------------------------------------------------------------
    def read_count(self) -> int:
        """How many entries the next read may take; 0 while every slot is held (wait for one to free).

        One read is one batch: its frames are decoded together and inferred together. Reads that found
        only stale frames used no capacity: while they do, read more at once (doubling up to
        ``MAX_SKIP_READ``), so that a backlog is dropped in bulk and the model is not kept waiting.
        Such a bulk read may take more than is free: what it accepts waits in the backlog.
        """
        free = self.capacity - len(self._stages)
        if free <= 0:
            return 0
        if self._stale_reads:
            return min(MAX_SKIP_READ, 1 << self._stale_reads)  # 2**stale_reads
        return min(free, self.batch)

    def register(self, entry_ids: Iterable[str]) -> None:
        """Entries just read or claimed: held from now on (an entry already held is left as it is)."""
        for entry_id in entry_ids:
            if entry_id not in self._stages:
                self._stages[entry_id] = Stage.READ
                self._counts[Stage.READ] += 1

    def accept(self, jobs: Iterable[Job]) -> None:
        """Jobs whose intake accepted them: into the backlog (``next_groups`` decides when to decode)."""
        for job in jobs:
            self._move(job.entry_id, Stage.WAITING)
            self._backlog.append(job)

    def read_done(self, read: int, accepted: int) -> None:
        """After the intake of a read of ``read`` entries that accepted ``accepted``: adapt the next read."""
        self._stale_reads = min(self._stale_reads + 1, MAX_STALE_READS) if read and not accepted else 0

    # --- decoding ---------------------------------------------------------------------------------
    def next_groups(self, now_ms: float) -> tuple[list[list[Job]], list[Late]]:
        """Backlog frames to decode now, in groups of ``batch`` while there is room; and the late ones.

        Decoding only what the model can take next keeps the cpu thread free for postprocessing, so a
        bulk read under overload does not delay the results of the frames being inferred.
        """
        groups: list[list[Job]] = []
        late: list[Late] = []
        if self.closed:
            return groups, late
        while self._backlog and self.decoding < self.capacity:
            group: list[Job] = []
            while self._backlog and len(group) < self.batch and self.decoding + len(group) < self.capacity:
                job = self._backlog.popleft()
                detail = overdue(job.frame, now_ms, Stage.WAITING)
                if detail is None:
                    group.append(job)
                else:
                    self._move(job.entry_id, Stage.DROPPING)
                    late.append(Late(job, detail))
            for job in group:
                self._move(job.entry_id, Stage.PREPARING)
            if group:
                groups.append(group)
        return groups, late

    def prepared(self, job: Job) -> None:
        """A frame decoded and prepared: it waits for the model, after those prepared before it."""
        self._move(job.entry_id, Stage.READY)
        self._ready.append(job)

    # --- inference --------------------------------------------------------------------------------
    def next_batch(self, now_ms: float) -> tuple[list[Job], list[Late]]:
        """Up to ``batch`` prepared frames for the model, oldest first; and those of them already late."""
        taken = [self._ready.popleft() for _ in range(min(self.batch, len(self._ready)))]
        fresh: list[Job] = []
        late: list[Late] = []
        for job in taken:
            detail = overdue(job.frame, now_ms, Stage.READY)
            if detail is None:
                self._move(job.entry_id, Stage.IN_MODEL)
                fresh.append(job)
            else:
                self._move(job.entry_id, Stage.ENDING)
                late.append(Late(job, detail))
        return fresh, late

    # --- ending -----------------------------------------------------------------------------------
    def end(self, entry_ids: Iterable[str]) -> None:
        """Entries whose outcome is being published now (from any stage; entries not held are ignored)."""
        for entry_id in entry_ids:
            stage = self._stages.get(entry_id)
            if stage is None or stage in (Stage.ENDING, Stage.DROPPING):
                continue
            if stage is Stage.WAITING:  # ended from outside the pipeline (a shutdown)
                self._backlog = deque(j for j in self._backlog if j.entry_id != entry_id)
            elif stage is Stage.READY:
                self._ready = deque(j for j in self._ready if j.entry_id != entry_id)
            self._set(entry_id, Stage.DROPPING if stage in (Stage.READ, Stage.WAITING) else Stage.ENDING)

    def forget(self, entry_ids: Iterable[str]) -> None:
        """Entries that ended (or were left pending for others): no longer held; their slots are free."""
        for entry_id in entry_ids:
            stage = self._stages.get(entry_id)
            if stage is None:
                continue
            if stage not in (Stage.ENDING, Stage.DROPPING):
                self.end([entry_id])
                stage = self._stages[entry_id]
            del self._stages[entry_id]
            self._counts[stage] -= 1

    def close(self) -> None:
        """Decode nothing more: the worker gave up on what it holds (its entries stay pending)."""
        self.closed = True

    # --- plumbing ---------------------------------------------------------------------------------
    def _move(self, entry_id: str, to: Stage) -> None:
        stage = self._stages.get(entry_id)
        if stage is None or to not in _NEXT[stage]:
            raise IllegalTransitionError(f"entry {entry_id} cannot go from {stage} to {to.value}")
        self._set(entry_id, to)

    def _set(self, entry_id: str, to: Stage) -> None:
        self._counts[self._stages[entry_id]] -= 1
        self._stages[entry_id] = to
        self._counts[to] += 1
