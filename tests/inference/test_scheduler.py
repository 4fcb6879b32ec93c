"""Scheduler: every rule of what a worker reads, decodes, batches and drops as late, tested synchronously.

No Redis, no model, no clock: time is an argument (``NOW``), frames are plain messages.
"""

from __future__ import annotations

import itertools

import pytest

from inference.scheduler import (
    MAX_SKIP_READ,
    IllegalTransitionError,
    Job,
    Scheduler,
    Stage,
    overdue,
)
from wire.messages import DropReason, FrameMessage

NOW = 1_000_000.0
_ids = itertools.count()


def frame(deadline_in_ms: float = 1000.0) -> FrameMessage:
    return FrameMessage(
        session="s",
        seq=next(_ids),
        received_ms=NOW,
        deadline_ms=NOW + deadline_in_ms,
        model="m",
        width=4,
        height=4,
        image=b"x",
        submitted_ms=NOW,
    )


def read(scheduler: Scheduler, count: int, deadline_in_ms: float = 1000.0) -> list[Job]:
    """Register ``count`` new entries and accept them all (what a read whose intake refused none does)."""
    jobs = [Job(entry_id=f"{next(_ids)}-0", frame=frame(deadline_in_ms), read_ms=NOW) for _ in range(count)]
    scheduler.register(job.entry_id for job in jobs)
    scheduler.accept(jobs)
    return jobs


def stages(scheduler: Scheduler, jobs: list[Job]) -> list[Stage | None]:
    return [scheduler.stage(job.entry_id) for job in jobs]


# --- reading ---------------------------------------------------------------------------------------
def test_a_read_takes_one_batch_and_never_more_than_is_free() -> None:
    scheduler = Scheduler(batch=4)
    assert scheduler.capacity == 8
    for held in range(scheduler.capacity + 3):
        scheduler = Scheduler(batch=4)
        scheduler.register(f"{i}-0" for i in range(held))
        free = scheduler.capacity - held
        assert scheduler.read_count() == max(0, min(free, 4)), held
        assert scheduler.read_count() <= max(0, free)


def test_entries_held_in_any_stage_use_read_capacity_until_forgotten() -> None:
    scheduler = Scheduler(batch=1)
    (job,) = read(scheduler, 1)
    scheduler.register(["refused-0"])  # refused at intake: its drop is being published
    scheduler.end(["refused-0"])
    assert len(scheduler) == 2 and scheduler.read_count() == 0
    scheduler.forget(["refused-0"])
    assert scheduler.read_count() == 1
    scheduler.forget([job.entry_id])
    assert len(scheduler) == 0 and scheduler.read_count() == 1


def test_reads_that_find_only_stale_frames_grow_to_max_skip_read_then_reset() -> None:
    scheduler = Scheduler(batch=2)
    counts = []
    for _ in range(12):
        scheduler.read_done(read=scheduler.read_count(), accepted=0)
        counts.append(scheduler.read_count())
    assert counts[:6] == [2, 4, 8, 16, 32, 64]
    assert max(counts) == MAX_SKIP_READ and counts[-1] == MAX_SKIP_READ
    scheduler.read_done(read=5, accepted=1)  # a read that accepted a frame: back to one batch
    assert scheduler.read_count() == 2
    scheduler.read_done(read=3, accepted=0)
    scheduler.read_done(read=0, accepted=0)  # an empty read is no stale read
    assert scheduler.read_count() == 2


def test_a_bulk_stale_read_waits_for_free_capacity_and_its_frames_wait_in_the_backlog() -> None:
    scheduler = Scheduler(batch=1)
    scheduler.read_done(read=1, accepted=0)
    scheduler.read_done(read=2, accepted=0)
    assert scheduler.read_count() == 4  # more than the 2 free: a stale backlog is dropped in bulk
    jobs = read(scheduler, 4)
    assert scheduler.read_count() == 0  # now full: nothing is read until a slot is freed
    groups, late = scheduler.next_groups(NOW)
    assert late == [] and [len(g) for g in groups] == [1, 1]
    assert stages(scheduler, jobs) == [Stage.PREPARING] * 2 + [Stage.WAITING] * 2
    assert scheduler.decoding == scheduler.capacity


def test_register_keeps_entries_already_held_as_they_are() -> None:
    scheduler = Scheduler(batch=2)
    (job,) = read(scheduler, 1)
    scheduler.register([job.entry_id, "new-0"])
    assert scheduler.stage(job.entry_id) is Stage.WAITING and scheduler.stage("new-0") is Stage.READ
    assert scheduler.holds("new-0") and not scheduler.holds("other-0") and len(scheduler) == 2


# --- decoding --------------------------------------------------------------------------------------
def test_backlog_frames_are_decoded_in_groups_of_batch_up_to_capacity() -> None:
    scheduler = Scheduler(batch=3)
    jobs = read(scheduler, 7)
    groups, late = scheduler.next_groups(NOW)
    assert late == [] and groups == [jobs[0:3], jobs[3:6]]
    assert scheduler.decoding == 6 == scheduler.capacity
    assert scheduler.next_groups(NOW) == ([], [])  # no room: the 7th waits
    assert scheduler.stage(jobs[6].entry_id) is Stage.WAITING


def test_never_more_than_capacity_is_decoded_at_once_and_freed_room_is_used() -> None:
    scheduler = Scheduler(batch=2)
    jobs = read(scheduler, 9)
    decoding = [j for g in scheduler.next_groups(NOW)[0] for j in g]
    assert len(decoding) == 4
    for job in decoding[:2]:
        scheduler.prepared(job)
    fresh, _late = scheduler.next_batch(NOW)
    scheduler.end(j.entry_id for j in fresh)
    assert scheduler.decoding == 4  # ending after decoding still holds its room
    assert scheduler.next_groups(NOW) == ([], [])
    scheduler.forget([fresh[0].entry_id])
    groups, _late = scheduler.next_groups(NOW)
    assert groups == [[jobs[4]]]  # only as much as was freed, even below a full batch
    assert scheduler.decoding == scheduler.capacity


def test_a_frame_whose_deadline_passed_in_the_backlog_is_dropped_and_takes_no_room() -> None:
    scheduler = Scheduler(batch=2)
    late_jobs = read(scheduler, 2, deadline_in_ms=10)
    fresh_jobs = read(scheduler, 3, deadline_in_ms=10_000)
    groups, late = scheduler.next_groups(NOW + 11)
    assert [x.job for x in late] == late_jobs
    assert {(x.reason, x.detail) for x in late} == {
        (DropReason.DEADLINE, "deadline passed while it waited on the worker")
    }
    assert groups == [fresh_jobs[0:2], fresh_jobs[2:3]]
    assert stages(scheduler, late_jobs) == [Stage.DROPPING] * 2
    assert scheduler.decoding == 3
    assert len(scheduler) == 5  # still held (read capacity) until their drops are published


def test_a_frame_exactly_at_its_deadline_is_not_late() -> None:
    scheduler = Scheduler(batch=1)
    (job,) = read(scheduler, 1, deadline_in_ms=10)
    assert scheduler.next_groups(NOW + 10) == ([[job]], [])


def test_nothing_is_decoded_after_close() -> None:
    scheduler = Scheduler(batch=2)
    jobs = read(scheduler, 2)
    scheduler.close()
    assert scheduler.next_groups(NOW) == ([], [])
    assert stages(scheduler, jobs) == [Stage.WAITING] * 2


# --- inference -------------------------------------------------------------------------------------
def test_batches_take_up_to_batch_prepared_frames_in_the_order_they_were_prepared() -> None:
    scheduler = Scheduler(batch=2)
    jobs = read(scheduler, 4)
    scheduler.next_groups(NOW)
    for job in (jobs[1], jobs[0], jobs[3]):
        scheduler.prepared(job)
    assert scheduler.ready == 3
    assert scheduler.next_batch(NOW) == ([jobs[1], jobs[0]], [])
    assert scheduler.next_batch(NOW) == ([jobs[3]], [])
    assert scheduler.next_batch(NOW) == ([], [])
    assert stages(scheduler, jobs) == [Stage.IN_MODEL, Stage.IN_MODEL, Stage.PREPARING, Stage.IN_MODEL]


def test_the_deadline_is_checked_again_right_before_inference() -> None:
    scheduler = Scheduler(batch=2)
    slow, fine = read(scheduler, 1, deadline_in_ms=10)[0], read(scheduler, 1, deadline_in_ms=10_000)[0]
    scheduler.next_groups(NOW)  # both fresh when decoding starts
    scheduler.prepared(slow)
    scheduler.prepared(fine)
    fresh, late = scheduler.next_batch(NOW + 50)  # decoding outlasted the first one's deadline
    assert fresh == [fine]
    assert [(x.job, x.reason, x.detail) for x in late] == [
        (slow, DropReason.DEADLINE, "deadline passed before inference")
    ]
    assert scheduler.stage(slow.entry_id) is Stage.ENDING  # it was decoded: it holds its room until ended
    assert scheduler.decoding == 2


def test_the_one_deadline_check_names_the_stage_it_caught_the_frame_in() -> None:
    late = frame(deadline_in_ms=-250)
    assert overdue(late, NOW, Stage.READ) == "read 250 ms after its deadline"
    assert overdue(late, NOW, Stage.WAITING) == "deadline passed while it waited on the worker"
    assert overdue(late, NOW, Stage.READY) == "deadline passed before inference"
    assert overdue(frame(deadline_in_ms=0), NOW, Stage.READ) is None


# --- stages ----------------------------------------------------------------------------------------
def test_a_frame_goes_through_every_stage_once_then_is_forgotten() -> None:
    scheduler = Scheduler(batch=1)
    scheduler.register(["e-0"])
    assert scheduler.stage("e-0") is Stage.READ
    job = Job(entry_id="e-0", frame=frame(), read_ms=NOW)
    scheduler.accept([job])
    assert scheduler.stage("e-0") is Stage.WAITING
    scheduler.next_groups(NOW)
    assert scheduler.stage("e-0") is Stage.PREPARING
    scheduler.prepared(job)
    assert scheduler.stage("e-0") is Stage.READY
    scheduler.next_batch(NOW)
    assert scheduler.stage("e-0") is Stage.IN_MODEL
    scheduler.end(["e-0"])
    assert scheduler.stage("e-0") is Stage.ENDING
    scheduler.end(["e-0"])  # ending twice is harmless
    scheduler.forget(["e-0"])
    assert scheduler.stage("e-0") is None and len(scheduler) == 0 and scheduler.decoding == 0


def test_moves_a_stage_does_not_lead_to_are_refused() -> None:
    scheduler = Scheduler(batch=1)
    unknown = Job(entry_id="never-read-0", frame=frame(), read_ms=NOW)
    with pytest.raises(IllegalTransitionError):
        scheduler.accept([unknown])  # accepted without being read
    (job,) = read(scheduler, 1)
    with pytest.raises(IllegalTransitionError):
        scheduler.prepared(job)  # prepared before it left the backlog
    with pytest.raises(IllegalTransitionError):
        scheduler.accept([job])  # accepted twice


def test_a_refused_entry_ends_without_ever_holding_decoding_room() -> None:
    scheduler = Scheduler(batch=1)
    scheduler.register(["bad-0"])
    scheduler.end(["bad-0"])
    assert scheduler.stage("bad-0") is Stage.DROPPING and scheduler.decoding == 0
    (job,) = read(scheduler, 1)
    assert scheduler.next_groups(NOW) == ([[job]], [])


def test_ending_a_waiting_or_ready_frame_from_outside_takes_it_out_of_its_queue() -> None:
    # What a shutdown does: it drops what the consumer still holds, wherever those frames are.
    scheduler = Scheduler(batch=2)
    ready, waiting = read(scheduler, 2), read(scheduler, 3)
    scheduler.next_groups(NOW)  # ready + waiting[0] and waiting[1] decoding; waiting[2] in the backlog
    for job in ready:
        scheduler.prepared(job)
    scheduler.end([ready[0].entry_id, waiting[2].entry_id, "unknown-0"])
    assert scheduler.stage(ready[0].entry_id) is Stage.ENDING
    assert scheduler.stage(waiting[2].entry_id) is Stage.DROPPING
    assert scheduler.next_batch(NOW) == ([ready[1]], [])
    scheduler.forget([waiting[0].entry_id, waiting[1].entry_id])  # forgetting ends them first
    scheduler.forget([j.entry_id for j in ready] + [waiting[2].entry_id, "unknown-0"])
    assert scheduler.next_groups(NOW) == ([], [])  # the ended backlog frame is not decoded
    assert len(scheduler) == 0 and scheduler.decoding == 0
