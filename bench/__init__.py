"""Benchmarks run by hand (`make bench`, or `python -m bench.<name>`), each against its baseline in the same run.

| script | measures | baseline |
|---|---|---|
| `bench.rpc` | GetJob / ListJobs throughput and latency at 1, 16 and 64 in flight | bare grpc.aio server, same bytes |
| `bench.watch` | WatchJobs delivery latency, 1,000 streams, moderate and heavy load | bare grpc.aio fan-out server |
| `bench.scheduler` | lateness of 10,000 schedules at 100/s and 1,000/s; idle CPU | APScheduler 3 AsyncIOScheduler |
| `bench.runs` | RunJob to COMPLETED, end to end | (absolute target) |
| `bench.xml_file` | xcron.xml load and save with 10,000 schedules | (absolute target) |

Each prints one `RESULT <bench>.<row> PASS|FAIL|INFO: ...` line per row and exits 1 when a target is missed
(3 on an error). `--quick` shrinks everything for the smoke tests; `--json FILE` appends the rows' figures.
"""
