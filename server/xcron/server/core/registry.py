"""Which jobs this server knows: loaded from entry points (group `xcron.jobs`) and --jobs modules."""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points
from types import ModuleType

from xcron.server.core.errors import NotFound
from xcron.server.core.jobs import Job

ENTRY_POINT_GROUP = "xcron.jobs"
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
log = logging.getLogger(__name__)


def type_key(type_name: str) -> str:
    """The part of a type name that identifies a job: the class path before the first comma.

    SanteDB writes "Namespace.Class, Assembly"; the assembly part may differ between hosts.
    """
    return type_name.split(",", 1)[0].strip()


class JobRegistry:
    def __init__(self, jobs: Iterable[type[Job]] = ()) -> None:
        self._jobs: dict[str, type[Job]] = {}
        self._by_type: dict[str, type[Job]] = {}
        for job in jobs:
            self.register(job)

    def register(self, job: type[Job]) -> None:
        if not getattr(job, "id", None) or not _ID_PATTERN.match(job.id):
            raise ValueError(
                f"{job.__qualname__}: job id {getattr(job, 'id', None)!r} must match {_ID_PATTERN.pattern}"
            )
        existing = self._jobs.get(job.id)
        if existing is not None and existing is not job:
            raise ValueError(f"job id {job.id!r} is declared by both {existing.__qualname__} and {job.__qualname__}")
        names = [p.name for p in job.parameters]
        if len(set(names)) != len(names):
            raise ValueError(f"job {job.id!r} declares a parameter twice: {names}")
        self._jobs[job.id] = job
        self._by_type[type_key(job.effective_type_name())] = job

    def register_module(self, module: ModuleType) -> int:
        """Registers every concrete Job subclass defined in (or exported by) a module."""
        found = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, Job) and obj is not Job and getattr(obj, "id", None)
        ]
        for job in found:
            self.register(job)
        return len(found)

    def load_module(self, name: str) -> int:
        return self.register_module(importlib.import_module(name))

    def load_entry_points(self) -> int:
        count = 0
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            loaded = ep.load()
            if inspect.ismodule(loaded):
                count += self.register_module(loaded)
            elif inspect.isclass(loaded) and issubclass(loaded, Job):
                self.register(loaded)
                count += 1
            else:
                raise ValueError(f"entry point {ep.name!r} in {ENTRY_POINT_GROUP} is neither a module nor a Job")
            log.info("loaded jobs from entry point %s (%s)", ep.name, ep.value)
        return count

    def get(self, job_id: str) -> type[Job]:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise NotFound(f"no job with id {job_id!r}; ListJobs shows the jobs this server has") from None

    def by_type_name(self, type_name: str) -> type[Job] | None:
        return self._by_type.get(type_key(type_name))

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __iter__(self) -> Iterator[type[Job]]:
        return iter(sorted(self._jobs.values(), key=lambda j: j.id))

    def __len__(self) -> int:
        return len(self._jobs)
