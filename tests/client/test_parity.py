"""Parity: the blocking and asyncio clients offer the same methods with the same signatures and raise
the same errors; and the typed client reaches every RPC of the proto's JobService, every request field."""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import Any

import pytest

from xcron.client import AsyncClient, Client, Schedule, XcronError
from xcron.v1 import job_service_pb2 as pb

SYNC_TO_ASYNC_DUNDERS = {"__enter__": "__aenter__", "__exit__": "__aexit__"}
# How a sync client's annotation reads in the async client (annotations are strings: PEP 563).
SYNC_TO_ASYNC_TYPES = [
    (re.compile(r"\bGenerator\[(.+), None, None\]"), r"AsyncGenerator[\1, None]"),
    (re.compile(r"\bIterator\["), "AsyncIterator["),
    (re.compile(r"\bgrpc\.Channel\b"), "grpc.aio.Channel"),
    (re.compile(r"\bJobServiceStub\b"), "JobServiceAsyncStub"),
]


def public_methods(cls: type) -> dict[str, Any]:
    names = {name for name in dir(cls) if not name.startswith("_")} | {"__init__", *SYNC_TO_ASYNC_DUNDERS}
    if cls is AsyncClient:
        names = (names - set(SYNC_TO_ASYNC_DUNDERS)) | set(SYNC_TO_ASYNC_DUNDERS.values())
    return {name: inspect.getattr_static(cls, name) for name in names if hasattr(cls, name)}


def as_async(annotation: str) -> str:
    for pattern, replacement in SYNC_TO_ASYNC_TYPES:
        annotation = pattern.sub(replacement, annotation)
    return annotation


def hints(function: Any) -> dict[str, str]:
    target = function.fget if isinstance(function, property) else function
    return {name: str(value) for name, value in target.__annotations__.items()}


def test_same_public_methods() -> None:
    sync_names = set(public_methods(Client)) - set(SYNC_TO_ASYNC_DUNDERS)
    async_names = set(public_methods(AsyncClient)) - set(SYNC_TO_ASYNC_DUNDERS.values())
    assert sync_names == async_names
    assert {"run_job", "watch_jobs", "run_and_wait", "iter_executions", "stub"} <= sync_names  # the test sees them


@pytest.mark.parametrize("name", sorted(set(public_methods(Client)) - set(SYNC_TO_ASYNC_DUNDERS)))
def test_same_signature_and_types(name: str) -> None:
    sync, asyn = public_methods(Client)[name], public_methods(AsyncClient)[name]
    assert isinstance(sync, property) == isinstance(asyn, property), name
    if isinstance(sync, property):
        assert as_async(hints(sync)["return"]) == hints(asyn)["return"]
        return
    sync_sig, async_sig = inspect.signature(sync), inspect.signature(asyn)
    assert [(p.name, p.kind, p.default) for p in sync_sig.parameters.values()] == [
        (p.name, p.kind, p.default) for p in async_sig.parameters.values()
    ], name
    sync_hints, async_hints = hints(sync), hints(asyn)
    for parameter in sync_sig.parameters:
        if parameter != "self":
            assert as_async(sync_hints[parameter]) == async_hints[parameter], (name, parameter)
    assert as_async(sync_hints["return"]) == async_hints["return"], name
    returns_iterator = re.match(r"(Generator|Iterator)\[", sync_hints["return"]) is not None
    if name == "__init__":
        return
    if returns_iterator:  # an async generator, or a plain def returning one (not a coroutine to await first)
        assert inspect.isasyncgenfunction(asyn) or not inspect.iscoroutinefunction(asyn), name
    else:
        assert inspect.iscoroutinefunction(asyn), f"AsyncClient.{name} must be awaited"
    assert (sync.__doc__ is None) == (asyn.__doc__ is None), f"{name}: documented in one client only"


def test_context_managers_match() -> None:
    assert (
        inspect.signature(Client.__exit__).parameters.keys()
        == inspect.signature(AsyncClient.__aexit__).parameters.keys()
    )
    assert inspect.iscoroutinefunction(AsyncClient.__aenter__) and inspect.iscoroutinefunction(AsyncClient.__aexit__)


# --- the same errors --------------------------------------------------------------------------------------

ERROR_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("get_job", ("nope",), {}),
    ("get_job", ("invalid id!",), {}),
    ("get_job", ("unavailable",), {}),
    ("run_job", ("job-4",), {}),
    ("run_job", ("nope",), {"request_id": "r-1"}),
    ("cancel_job", ("job-0",), {}),
    ("set_schedule", ("nope", [Schedule.every(60)]), {}),
    ("clear_schedule", ("nope",), {}),
    ("pause_schedule", ("nope",), {}),
    ("resume_schedule", ("nope",), {}),
    ("list_executions", ("nope",), {}),
    ("get_execution", ("exec-404",), {}),
    ("run_and_wait", ("job-4",), {"timeout": 10}),
]


def error_facts(error: BaseException) -> tuple[Any, ...]:
    assert isinstance(error, XcronError)
    return (type(error), error.code, error.message, error.reason, error.domain, error.field_violations)


async def call_sync(client: Client, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return await asyncio.to_thread(getattr(client, name), *args, **kwargs)


@pytest.mark.parametrize(("name", "args", "kwargs"), ERROR_CALLS, ids=[f"{c[0]}{c[1][:1]}" for c in ERROR_CALLS])
async def test_same_errors(fake: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with Client(fake.target, timeout=10) as client, pytest.raises(XcronError) as sync_error:
        await call_sync(client, name, args, kwargs)
    async with AsyncClient(fake.target, timeout=10) as async_client:
        with pytest.raises(XcronError) as async_error:
            await getattr(async_client, name)(*args, **kwargs)
    assert error_facts(sync_error.value) == error_facts(async_error.value)


async def test_same_errors_from_iterators(fake: Any) -> None:
    with Client(fake.target, timeout=10) as client, pytest.raises(XcronError) as sync_error:
        await asyncio.to_thread(lambda: list(client.iter_executions("nope")))
    async with AsyncClient(fake.target, timeout=10) as async_client:
        with pytest.raises(XcronError) as async_error:
            [e async for e in async_client.iter_executions("nope")]
    assert error_facts(sync_error.value) == error_facts(async_error.value)
    with Client(fake.target, timeout=10) as client, pytest.raises(TypeError) as sync_usage:
        client.watch_jobs("job-0")  # one str, not a list of ids
    async with AsyncClient(fake.target, timeout=10) as async_client:
        with pytest.raises(TypeError) as async_usage:
            async_client.watch_jobs("job-0")
    assert (type(sync_usage.value), str(sync_usage.value)) == (type(async_usage.value), str(async_usage.value))


# --- the typed client reaches the whole proto ---------------------------------------------------------------

SERVICE = pb.DESCRIPTOR.services_by_name["JobService"]

# Each RPC: the typed client's method for it, and the call the test makes.
RPC_TO_CLIENT: dict[str, tuple[str, Callable[[Any], Awaitable[Any] | Any]]] = {
    "ListJobs": ("list_jobs", lambda c: c.list_jobs(page_size=1)),
    "GetJob": ("get_job", lambda c: c.get_job("job-0", next_fire_time_count=2)),
    "RunJob": ("run_job", lambda c: c.run_job("job-0", {"n": 1}, request_id="r-9")),
    "CancelJob": ("cancel_job", lambda c: c.cancel_job("job-0", execution_id="exec-1")),
    "SetSchedule": ("set_schedule", lambda c: c.set_schedule("job-0", [Schedule.every(60)])),
    "PauseSchedule": ("pause_schedule", lambda c: c.pause_schedule("job-0")),
    "ResumeSchedule": ("resume_schedule", lambda c: c.resume_schedule("job-0")),
    "ReloadSchedules": ("reload_schedules", lambda c: c.reload_schedules()),
    "WatchJobs": ("watch_jobs", lambda c: c.watch_jobs(["job-0"], after_sequence=0)),
    "ListExecutions": ("list_executions", lambda c: c.list_executions("job-0", page_size=1)),
    "GetExecution": ("get_execution", lambda c: c.get_execution("exec-1")),
    "GetCaller": ("get_caller", lambda c: c.get_caller()),
}


def test_every_rpc_has_a_typed_method() -> None:
    assert set(RPC_TO_CLIENT) == {method.name for method in SERVICE.methods}, "an RPC without a typed client method"


@pytest.mark.parametrize("rpc", sorted(RPC_TO_CLIENT))
@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_every_request_field_is_a_parameter(rpc: str, cls: type) -> None:
    method_name = RPC_TO_CLIENT[rpc][0]
    parameters = set(inspect.signature(getattr(cls, method_name)).parameters)
    request = SERVICE.methods_by_name[rpc].input_type
    missing = {f.name for f in request.fields} - parameters
    assert missing == set(), f"{cls.__name__}.{method_name} cannot set {rpc}Request fields {sorted(missing)}"


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_every_rpc_is_reached_through_the_typed_client(fake: Any, flavour: str) -> None:
    fake.executions["exec-1"] = pb.Execution(id="exec-1", job_id="job-0", state=pb.EXECUTION_STATE_COMPLETED)
    for rpc, (_, make_call) in RPC_TO_CLIENT.items():
        before = len(fake.calls)
        if flavour == "sync":
            with Client(fake.target, timeout=10) as client:
                await asyncio.to_thread(_drive_sync, make_call, client)
        else:
            async with AsyncClient(fake.target, timeout=10) as async_client:
                await _drive_async(make_call, async_client)
        assert fake.calls[before:] == [rpc], (rpc, fake.calls[before:])


def _drive_sync(make_call: Callable[[Any], Any], client: Client) -> None:
    try:
        result = make_call(client)
        if isinstance(result, Generator):
            next(result)  # the watch snapshot
            result.close()
    except XcronError:
        pass  # CancelJob on the fake answers FAILED_PRECONDITION: the RPC was still reached


async def _drive_async(make_call: Callable[[Any], Any], client: AsyncClient) -> None:
    try:
        result = make_call(client)
        if isinstance(result, AsyncGenerator):
            await anext(result)
            await result.aclose()
        else:
            await result
    except XcronError:
        pass
