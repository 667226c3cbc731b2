"""Job authors import from `xcron.server`: a short, curated path that cannot drift silently."""

from __future__ import annotations

import xcron.server
from xcron.server.core import jobs

EXPECTED = {"Job", "JobCancelled", "JobContext", "Parameter", "ParameterType"}


def test_public_surface_does_not_drift() -> None:
    assert set(xcron.server.__all__) == EXPECTED
    public = {n for n in vars(xcron.server) if not n.startswith("_") and n[0].isupper()}
    assert public == EXPECTED, "public names of xcron.server missing from __all__"


def test_the_short_path_is_the_same_objects_as_the_long_one() -> None:
    for name in EXPECTED:
        assert getattr(xcron.server, name) is getattr(jobs, name)


def test_a_job_written_against_the_short_path_runs_its_checks() -> None:
    from xcron.server import Job, JobContext, Parameter, ParameterType

    class Hello(Job):
        id = "example.hello"
        name = "Hello"
        parameters = (Parameter("who", ParameterType.STRING, default="world"),)

        def run(self, ctx: JobContext) -> None:
            ctx.report_progress(1.0, f"hello {ctx.parameters['who']}")

    assert Hello.parameters[0].name == "who" and Hello.id == "example.hello"
