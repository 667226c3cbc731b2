"""xcron server. Job authors need only this path:

    from xcron.server import Job, JobContext, Parameter, ParameterType

Everything else (xcron.server.core, .stores, .api) is the server's own and may change between releases.
"""

from xcron.server.core.jobs import Job, JobCancelled, JobContext, Parameter, ParameterType

__all__ = ["Job", "JobCancelled", "JobContext", "Parameter", "ParameterType"]
