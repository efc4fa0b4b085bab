"""Events and listeners, the way Laravel users know them.

An `Event` is a pydantic model (its fields are what listeners receive). A
`Listener[SomeEvent]` subclass registers for the event classes in its type
parameter (`Listener[A | B]` for several) and implements `handle(event, ctx)`.
A listener with `queued = True` (Laravel's ShouldQueue) does not run inline: the
dispatch enqueues one job per queued listener, on the listener's `queue`, in
the caller's transaction. So an event dispatched inside a transaction that
rolls back fires nothing; one that commits has its queued listeners' jobs
committed with it. Synchronous listeners run inline, on that same connection.

Each queued listener gets its own job class (named `listener:<listener name>`)
carrying the listener's queue, tries, backoff, timeout and transactional
options; a worker finds it once the module defining the listener is imported
(`--app`).
"""

from __future__ import annotations

import threading
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from soleil.runner import backoff as backoff_rules
from soleil.runner.errors import ConfigurationError, PermanentFailure
from soleil.runner.job import Job, JobContext

if TYPE_CHECKING:
    import psycopg

    from soleil.runner.runner import Runner


class Event(BaseModel):
    """Base class of events. Fields are the payload; they must serialise to JSON
    when a queued listener listens to the event."""

    model_config = ConfigDict(frozen=True)

    # The registered name; defaults to "module:Class". Set it to keep a moved class working.
    name: ClassVar[str] = ""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = f"{cls.__module__}:{cls.__qualname__}"
        LISTENERS.register_event(cls)


E = TypeVar("E", bound=Event)


@dataclass(frozen=True, slots=True)
class EventContext:
    """What a listener knows: the runner, and the open transaction it runs in.

    Synchronous listeners get the connection the event was dispatched on (their
    writes commit or roll back with the caller's). Queued listeners get
    `job` and, when `transactional = True`, the job's transaction."""

    runner: Runner
    connection: psycopg.Connection[Any] | None = None
    job: JobContext | None = None


class Listener(Generic[E]):
    """Base class of listeners: subclass `Listener[SomeEvent]` and implement handle()."""

    name: ClassVar[str] = ""
    # Laravel's ShouldQueue: run as a job instead of inline.
    queued: ClassVar[bool] = False
    # Options of the job a queued listener runs as (see soleil.runner.Job).
    queue: ClassVar[str] = "default"
    tries: ClassVar[int | None] = None
    backoff: ClassVar[backoff_rules.BackoffSpec | None] = None
    timeout: ClassVar[float | None] = None
    transactional: ClassVar[bool] = False
    delay: ClassVar[float] = 0.0  # seconds before a queued listener's job is due

    # Filled in when the class is defined.
    events: ClassVar[tuple[type[Event], ...]] = ()
    job_class: ClassVar[type[QueuedListenerJob] | None] = None

    def handle(self, event: E, ctx: EventContext) -> None:
        raise NotImplementedError(f"{type(self).__name__}.handle() is not implemented")

    def failed(self, event: E, ctx: EventContext, exc: BaseException) -> None:
        """Queued listeners only: runs once after the job's last try."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = f"{cls.__module__}:{cls.__qualname__}"
        own = _events_in_type_parameter(cls)
        if own is not None:
            cls.events = own
        if not cls.events or cls.handle is Listener.handle:
            return  # a generic or abstract listener: nothing to register
        if cls.queued:
            cls.job_class = _job_class_for(cls)
        LISTENERS.register_listener(cls)


def _events_in_type_parameter(cls: type[Listener[Any]]) -> tuple[type[Event], ...] | None:
    """The event classes named in `Listener[...]` among the class's own bases."""
    for base in cls.__dict__.get("__orig_bases__", ()):
        if typing.get_origin(base) is None or not issubclass(typing.get_origin(base), Listener):
            continue
        (argument,) = typing.get_args(base)
        if isinstance(argument, TypeVar):
            return None
        members = (
            typing.get_args(argument)
            if typing.get_origin(argument) in (typing.Union, types.UnionType)
            else (argument,)
        )
        for member in members:
            if not (isinstance(member, type) and issubclass(member, Event)):
                raise ConfigurationError(
                    f"listener {cls.__module__}.{cls.__qualname__}: {member!r} is not an Event class"
                )
        return tuple(members)
    return None


class QueuedListenerJob(Job):
    """The job a queued listener runs as (Laravel's CallQueuedListener)."""

    listener: ClassVar[type[Listener[Any]]]
    event: str  # the event's registered name
    data: dict[str, Any]  # the event's fields, as JSON

    def load_event(self) -> Event:
        try:
            return LISTENERS.event_class(self.event).model_validate(self.data)
        except (LookupError, ValidationError) as exc:
            raise PermanentFailure(f"cannot rebuild event {self.event!r}: {exc}") from None


def _handle(self: QueuedListenerJob, ctx: JobContext) -> None:
    event = self.load_event()
    self.listener().handle(event, EventContext(ctx.runner, ctx.connection, ctx))


def _failed(self: QueuedListenerJob, ctx: JobContext, exc: BaseException) -> None:
    event = self.load_event()
    self.listener().failed(event, EventContext(ctx.runner, ctx.connection, ctx), exc)


def _job_class_for(listener: type[Listener[Any]]) -> type[QueuedListenerJob]:
    namespace: dict[str, Any] = {
        "__module__": listener.__module__,
        "__qualname__": f"{listener.__qualname__}.Job",
        "name": f"listener:{listener.name}",
        "listener": listener,
        "queue": listener.queue,
        "tries": listener.tries,
        "backoff": listener.backoff,
        "timeout": listener.timeout,
        "transactional": listener.transactional,
        # Defined here, not on QueuedListenerJob, so that only concrete listener
        # jobs enter the job registry.
        "handle": _handle,
        "failed": _failed,
    }
    return type(f"{listener.__name__}Job", (QueuedListenerJob,), namespace)


class ListenerRegistry:
    """Event classes by name, and the listeners of each event class."""

    def __init__(self) -> None:
        self._events: dict[str, type[Event]] = {}
        self._listeners: dict[type[Event], list[type[Listener[Any]]]] = {}
        self._lock = threading.Lock()

    def register_event(self, cls: type[Event]) -> None:
        with self._lock:
            existing = self._events.get(cls.name)
            if existing is not None and existing.__qualname__ != cls.__qualname__:
                raise ConfigurationError(f"event name {cls.name!r} is used by two classes")
            self._events[cls.name] = cls

    def register_listener(self, listener: type[Listener[Any]]) -> None:
        with self._lock:
            for event in listener.events:
                known = self._listeners.setdefault(event, [])
                # Re-importing a module (tests, reloads) replaces rather than duplicates.
                known[:] = [other for other in known if other.name != listener.name]
                known.append(listener)

    def event_class(self, name: str) -> type[Event]:
        try:
            return self._events[name]
        except KeyError:
            raise LookupError(f"no event class is registered under {name!r}") from None

    def listeners_for(self, event: type[Event]) -> list[type[Listener[Any]]]:
        """Listeners of this class and of its Event base classes, most specific first."""
        with self._lock:
            found: list[type[Listener[Any]]] = []
            for cls in event.__mro__:
                if isinstance(cls, type) and issubclass(cls, Event):
                    found.extend(self._listeners.get(cls, []))
            return found


LISTENERS = ListenerRegistry()


class Events:
    """Dispatches events for a runner: `runner.events.dispatch(event, connection=conn)`."""

    def __init__(self, runner: Runner, registry: ListenerRegistry = LISTENERS) -> None:
        self.runner = runner
        self.registry = registry

    def dispatch(self, event: Event, *, connection: psycopg.Connection[Any] | None = None) -> list[int]:
        """Run the synchronous listeners and enqueue the queued ones, all in the
        transaction of `connection` (or in one of its own). Returns the ids of
        the queued listeners' jobs. A listener that raises propagates: the
        caller's transaction should roll back."""
        if connection is None:
            with self.runner.connection() as conn, conn.transaction():
                return self._dispatch(event, conn)
        return self._dispatch(event, connection)

    def _dispatch(self, event: Event, conn: psycopg.Connection[Any]) -> list[int]:
        job_ids: list[int] = []
        for listener in self.registry.listeners_for(type(event)):
            if listener.job_class is None:
                listener().handle(event, EventContext(self.runner, conn))
                continue
            job = listener.job_class(event=type(event).name, data=event.model_dump(mode="json"))
            job_id = self.runner.dispatch(job, connection=conn, delay=listener.delay or None)
            if job_id is not None:
                job_ids.append(job_id)
        return job_ids
