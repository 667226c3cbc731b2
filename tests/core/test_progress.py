"""Progress coalescing at the source: the latest report wins, nothing is stranded, whatever the threads."""

from __future__ import annotations

import asyncio
import threading

from xcron.server.core.progress import ProgressCoalescer

Applied = list[tuple[str, str, float, str | None]]


def coalescer(applied: Applied) -> ProgressCoalescer:
    progress = ProgressCoalescer(lambda *report: applied.append(report))
    progress.bind_loop(asyncio.get_running_loop())
    return progress


async def turn() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_reports_within_one_turn_publish_once_with_the_latest() -> None:
    applied: Applied = []
    progress = coalescer(applied)
    sink = progress.sink("job", "run-1")
    for i in range(1, 1001):
        sink(i / 1000, f"step {i}")
    assert applied == []  # nothing is published inside the job's own turn
    await turn()
    assert applied == [("job", "run-1", 1.0, "step 1000")]


async def test_no_text_keeps_the_latest_text_even_when_not_yet_published() -> None:
    applied: Applied = []
    progress = coalescer(applied)
    sink = progress.sink("job", "run-1")
    sink(0.1, "copying")
    sink(0.2, None)
    await turn()
    assert applied == [("job", "run-1", 0.2, "copying")]


async def test_a_report_taken_at_the_end_of_the_run_is_not_published_again() -> None:
    applied: Applied = []
    progress = coalescer(applied)
    progress.sink("job", "run-1")(0.5, "half")
    assert progress.take("job") == ("run-1", 0.5, "half")
    assert progress.take("job") is None
    await turn()
    assert applied == []


async def test_a_new_run_reports_under_its_own_execution() -> None:
    applied: Applied = []
    progress = coalescer(applied)
    old = progress.sink("job", "run-1")
    progress.forget("job")
    new = progress.sink("job", "run-2")
    new(0.3, "new")
    old(0.9, "late report of the old run")
    await turn()
    assert ("job", "run-2", 0.3, "new") in applied
    assert progress.take("job") is None  # run-2's slot is clean; the old run's report is the executor's to drop


async def test_reports_from_many_threads_never_strand_the_latest() -> None:
    """Thread jobs race the loop's flush: every job's final report must be published, and the one published
    last must be it (a stranded report would leave the job showing an older value)."""
    applied: Applied = []
    finals = {f"job-{n}": (1.0, f"done {n}") for n in range(8)}
    published_final = asyncio.Event()
    loop = asyncio.get_running_loop()

    def apply(job_id: str, execution_id: str, value: float, status: str | None) -> None:
        applied.append((job_id, execution_id, value, status))
        latest = {j: (v, s) for j, _, v, s in applied}
        if latest == finals:
            published_final.set()

    progress = ProgressCoalescer(apply)
    progress.bind_loop(loop)

    def job(job_id: str) -> None:
        sink = progress.sink(job_id, "run")
        for i in range(20_000):
            sink(i / 20_000, f"step {i}")
        sink(*finals[job_id])

    threads = [threading.Thread(target=job, args=(job_id,)) for job_id in finals]
    for thread in threads:
        thread.start()

    def join_all() -> None:
        for thread in threads:
            thread.join()

    await asyncio.to_thread(join_all)
    await asyncio.wait_for(published_final.wait(), 10)
    per_job = {job_id: sum(1 for a in applied if a[0] == job_id) for job_id in finals}
    assert all(count < 200 for count in per_job.values()), per_job  # coalesced, not one publish per report
