"""Non-voice interactions (chat, e-mail, social, ticket) as routing tasks beside the calls.

``model``: the task, its states and the service's errors; ``service``: ``TaskService``, which
creates tasks (now, or scheduled with ``not_before``; ``PluginTasks`` is its face for plugin steps), takes the routing service's offers for
their channels, times offers out, and carries out agents' and integrations' actions;
``lifecycle``: the ticket states beyond routing (pending, solved, closed, reopened) and the table
of the moves a client may ask for; ``sla``: first-response and resolution due times, their pauses
and breaches; ``followups``: tasks scheduled with ``not_before``; ``recovery``: what comes back
after a restart; ``metrics``: the per-channel Prometheus figures.
The record of each task is in the store (``engine.storage.tasks``); the API is ``engine.api.tasks``.
"""

from engine.tasks.metrics import TaskCollector, TaskMetrics
from engine.tasks.model import (
    IllegalTransition,
    InvalidTask,
    Task,
    TaskConflict,
    TaskError,
    TaskState,
    TaskUnavailable,
    UnknownTask,
)
from engine.tasks.service import PluginTasks, TaskService

__all__ = [
    "IllegalTransition",
    "InvalidTask",
    "PluginTasks",
    "Task",
    "TaskCollector",
    "TaskConflict",
    "TaskError",
    "TaskMetrics",
    "TaskService",
    "TaskState",
    "TaskUnavailable",
    "UnknownTask",
]
