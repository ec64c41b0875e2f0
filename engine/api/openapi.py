"""The control API's part of the OpenAPI 3.1 document at ``/api/v1/openapi.json``.

How this works: ``openapi_paths`` returns the paths and component schemas of the routes
``add_routes`` serves; the daemon hands them to ``engine.api.app.openapi_document``, which adds
its own (health, readiness, metrics, index) and the shared Problem response. Where a handler
decodes or answers a msgspec struct (queues, agents, intervals, bans, call recording control), the schema
is generated from that struct, so it cannot drift from the code; the rest (summaries, query
parameters, error codes, the other bodies) is written here by hand.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.api.agents import AgentStateChange, AgentView
from engine.api.calls import CallRecordingChange, CallRecordingState, MonitorChange, MonitorStart
from engine.api.cdr import MAX_CDR_ROWS
from engine.api.queues import QueueView
from engine.api.reports import AgentFigures, IntervalFigures
from engine.api.security import BanView
from engine.api.tasks import (
    MAX_TASK_ROWS,
    CallbackCreated,
    NewCallback,
    NewTask,
    TaskCompletion,
    TaskCreated,
    TaskMessage,
    TaskStateChange,
    TaskTransfer,
    TransitionRefused,
)
from engine.api.transcripts import MAX_TRANSCRIPT_ROWS
from engine.config import TASK_CHANNELS
from engine.recording.service import CONTENT_TYPES
from engine.storage.customers import MAX_CONTACTS
from engine.tasks.lifecycle import REQUESTABLE
from engine.webhooks import DeadLetter, RetryOutcome
from engine.webhooks.service import MAX_DEAD_LETTER_ROWS
from routing_core.stats import SL_DEFINITIONS

# One of a customer's contacts (engine.storage.customers.contacts).
CONTACT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "kind": {"enum": ["call", "task"]},
        "id": {"type": "string"},
        "channel": {"type": "string"},
        "queue": {"type": ["string", "null"]},
        "agent_id": {"type": ["string", "null"]},
        "arrived_at": {"type": "number"},
        "ended_at": {"type": ["number", "null"]},
        "state": {"type": "string", "description": "a call: live or ended; a task: its state"},
        "disposition": {"type": ["string", "null"]},
        "talk_s": {"type": ["number", "null"], "description": "talk (a call) or handle time"},
        "subject": {"type": ["string", "null"]},
    },
}


def _op(
    summary: str, ok_schema: dict[str, Any], *, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": ok_schema}}},
            "401": {"$ref": "#/components/responses/Problem"},
            "403": {"$ref": "#/components/responses/Problem"},
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def openapi_paths() -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) of the routes ``add_routes`` serves."""
    (queues, agents, agent, change, intervals, agent_figures, bans, ban), schemas = (
        msgspec.json.schema_components(
            [
                list[QueueView],
                list[AgentView],
                AgentView,
                AgentStateChange,
                list[IntervalFigures],
                list[AgentFigures],
                list[BanView],
                BanView,
            ],
            ref_template="#/components/schemas/{name}",
        )
    )
    agent_id = {"name": "agent_id", "in": "path", "required": True, "schema": {"type": "string"}}
    address = {"name": "address", "in": "path", "required": True, "schema": {"type": "string"},
               "description": "an IPv4 or IPv6 address"}  # fmt: skip
    epoch = {"type": "number", "description": "epoch seconds"}
    fmt = {"type": "string", "enum": ["json", "csv"], "description": "or Accept: text/csv"}
    paths: dict[str, Any] = {
        "/api/v1/queues": {"get": _op("Queues with live and today's figures", queues)},
        "/api/v1/agents": {"get": _op("Agents and their routing state", agents)},
        "/api/v1/agents/{agent_id}": {
            "get": {**_op("One agent", agent), "parameters": [agent_id]},
        },
        "/api/v1/agents/{agent_id}/state": {
            "put": {
                **_op("Change an agent's state (audited)", agent, body=change),
                "parameters": [agent_id],
            },
        },
        "/api/v1/cdr": {
            "get": {
                **_op(
                    "Search call detail records, newest first",
                    {"type": "array", "items": {"type": "object"}},
                ),
                "parameters": [
                    {"name": n, "in": "query", "schema": sch}
                    for n, sch in (
                        ("since", epoch),
                        ("until", epoch),
                        ("queue", {"type": "string"}),
                        ("agent", {"type": "string"}),
                        ("caller", {"type": "string"}),
                        ("disposition", {"type": "string"}),
                        ("limit", {"type": "integer", "maximum": MAX_CDR_ROWS}),
                    )
                ],
            }
        },
        "/api/v1/customers/contacts": {
            "get": {
                **_op(
                    "A customer's calls and tasks on every channel, newest first (supervisor, "
                    "admin; audited). Phone numbers match by their digits and a leading +, "
                    "e-mail addresses without regard to case; 422 when no key is given",
                    {"type": "array", "items": CONTACT_SCHEMA},
                ),
                "parameters": [
                    {"name": n, "in": "query", "schema": sch}
                    for n, sch in (
                        ("phone", {"type": "string"}),
                        ("email", {"type": "string"}),
                        ("id", {"type": "string", "description": "the CRM's customer id"}),
                        ("limit", {"type": "integer", "maximum": MAX_CONTACTS}),
                    )
                ],
            }
        },
        "/api/v1/stats/intervals": {
            "get": {
                **_op("Per-interval queue statistics", intervals),
                "parameters": [
                    {"name": n, "in": "query", "schema": sch}
                    for n, sch in (
                        ("since", epoch),
                        ("until", epoch),
                        ("interval_s", {"type": "number", "minimum": 60}),
                        ("queue", {"type": "string"}),
                        (
                            "sl",
                            {
                                "type": "string",
                                "enum": list(SL_DEFINITIONS),
                                "description": "service-level definition (routing_core.stats)",
                            },
                        ),
                        ("short_abandon_s", {"type": "number", "description": "for sl=e"}),
                        ("format", fmt),
                    )
                ],
            }
        },
        "/api/v1/stats/agents": {
            "get": {
                **_op("Per-agent occupancy, utilisation and handle times", agent_figures),
                "parameters": [
                    {"name": n, "in": "query", "schema": sch}
                    for n, sch in (
                        ("since", epoch),
                        ("until", epoch),
                        ("agent", {"type": "string"}),
                        ("format", fmt),
                    )
                ],
            }
        },
        "/api/v1/reload": {
            "post": _op("Reload the config file (admin, audited)", {"type": "object"})
        },
        "/api/v1/security/bans": {
            "get": _op("SIP source addresses banned now, oldest first (admin)", bans),
        },
        "/api/v1/security/bans/{address}": {
            "delete": {
                **_op("Lift the ban of a SIP source address now (admin, audited)", ban),
                "parameters": [address],
            },
        },
        **_recording_paths(),
    }
    lift = paths["/api/v1/security/bans/{address}"]["delete"]["responses"]
    lift["400"] = {"$ref": "#/components/responses/Problem", "description": "not an IP address"}
    lift["404"] = {"$ref": "#/components/responses/Problem", "description": "not banned"}
    (change, state), recording_schemas = msgspec.json.schema_components(
        [CallRecordingChange, CallRecordingState], ref_template="#/components/schemas/{name}"
    )
    put = paths["/api/v1/calls/{call_id}/recording"]["put"]
    put["requestBody"]["content"]["application/json"]["schema"] = change
    put["responses"]["200"]["content"]["application/json"]["schema"] = state
    (start, mode_change), monitor_schemas = msgspec.json.schema_components(
        [MonitorStart, MonitorChange], ref_template="#/components/schemas/{name}"
    )
    monitor = paths["/api/v1/calls/{call_id}/monitor"]
    monitor["post"]["requestBody"]["content"]["application/json"]["schema"] = start
    monitor["patch"]["requestBody"]["content"]["application/json"]["schema"] = mode_change
    recording_schemas.update(monitor_schemas)
    task_paths, task_schemas = _task_paths()
    hook_paths, hook_schemas = _webhook_paths()
    all_schemas = {**schemas, **recording_schemas, **task_schemas, **hook_schemas}
    return {**paths, **task_paths, **hook_paths, **_transcript_paths(), **_admin_paths()}, (
        all_schemas
    )


def _admin_paths() -> dict[str, Any]:
    """Agents and queues through the admin API (engine.api.admin): admin only, changes audited."""
    section = {
        "type": "object",
        "description": "the entry's TOML section as JSON (an agent's `queues` and `skills` are "
        "its memberships); GET adds `source`: file or api",
    }
    listed = {"type": "array", "items": section}
    invalid = {
        "description": "the config's own check refused it: {error, key, message}, `key` the "
        "config key path (e.g. agents[3].skills.support)",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    problem = {"$ref": "#/components/responses/Problem"}
    paths: dict[str, Any] = {}
    for table, key, what in (("agents", "id", "agent"), ("queues", "name", "queue")):
        name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
                "description": f"the {what}'s {key}"}  # fmt: skip
        one = {
            "get": _op(f"One {what} of the effective config (admin)", section),
            "put": _op(
                f"Create or replace the {what} (admin, audited, applied live)",
                section,
                body=section,
            ),
            "patch": _op(
                f"Merge keys into the {what} (admin, audited, applied live)", section, body=section
            ),
            "delete": _op(f"Delete the {what}, also one of the file (admin, audited)", section),
        }
        del one["delete"]["responses"]["200"]
        one["delete"]["responses"]["204"] = {"description": "deleted"}
        for method, op in one.items():
            op["parameters"] = [name]
            if method != "put":
                op["responses"]["404"] = {**problem, "description": f"no such {what}"}
            if method in ("put", "patch", "delete"):
                op["responses"]["422"] = invalid
                op["responses"]["409"] = {
                    "description": "it would strand callers or tasks waiting in a queue",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
        paths[f"/api/v1/admin/{table}"] = {
            "get": _op(f"Every {what} of the effective config (file + admin API) (admin)", listed)
        }
        paths[f"/api/v1/admin/{table}/{{name}}"] = one
    skill = {"type": "object", "description": "{name, agents: {id: level}, queues: {name: level}}"}
    skill_name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    paths["/api/v1/admin/skills"] = {
        "get": _op(
            "Every skill an agent holds or a queue requires (admin)",
            {"type": "array", "items": skill},
        ),
    }
    put_skill = _op("Set which agents hold the skill (at which level) and which queues require "
                    "it (admin, audited, applied live)", skill, body=skill)  # fmt: skip
    put_skill["responses"]["422"] = invalid
    delete_skill = _op("Take the skill from every agent and queue (admin, audited)", skill)
    del delete_skill["responses"]["200"]
    delete_skill["responses"]["204"] = {"description": "deleted"}
    get_skill = _op("One skill: its agents and queues (admin)", skill)
    for op in (get_skill, put_skill, delete_skill):
        op["parameters"] = [skill_name]
    for op in (get_skill, delete_skill):
        op["responses"]["404"] = {**problem, "description": "no agent or queue has it"}
    paths["/api/v1/admin/skills/{name}"] = {"get": get_skill, "put": put_skill,
                                            "delete": delete_skill}  # fmt: skip
    return paths


def _webhook_paths() -> tuple[dict[str, Any], dict[str, Any]]:
    (letters, outcome), schemas = msgspec.json.schema_components(
        [list[DeadLetter], RetryOutcome], ref_template="#/components/schemas/{name}"
    )
    delivery_id = {"name": "delivery_id", "in": "path", "required": True,
                   "schema": {"type": "string"}}  # fmt: skip
    retry = {
        **_op("Re-send one dead letter now (admin, audited)", outcome),
        "parameters": [delivery_id],
    }
    retry["responses"]["404"] = {"$ref": "#/components/responses/Problem"}
    retry["responses"]["409"] = {"$ref": "#/components/responses/Problem",
                                 "description": "already delivered, or its URL is no longer configured"}  # fmt: skip
    retry["responses"]["502"] = {"$ref": "#/components/responses/Problem",
                                 "description": "the receiver failed again"}  # fmt: skip
    paths = {
        "/api/v1/webhooks/dead-letters": {
            "get": {
                **_op(
                    "Webhook deliveries that ran out of attempts, latest failure first (admin)",
                    letters,
                ),
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "maximum": MAX_DEAD_LETTER_ROWS},
                    }
                ],
            }
        },
        "/api/v1/webhooks/dead-letters/{delivery_id}/retry": {"post": retry},
    }
    return paths, schemas


def _transcript_paths() -> dict[str, Any]:
    """Transcripts and QA (engine.api.transcripts): supervisor and admin, reads audited."""
    rows = {"type": "array", "items": {"type": "object"}}
    epoch = {"type": "number", "description": "epoch seconds"}
    bad = {"$ref": "#/components/responses/Problem", "description": "a bad query argument"}
    filters = [
        {"name": n, "in": "query", "schema": sch}
        for n, sch in (
            ("queue", {"type": "string"}),
            ("agent", {"type": "string"}),
            ("since", epoch),
            ("until", epoch),
            ("limit", {"type": "integer", "minimum": 1, "maximum": MAX_TRANSCRIPT_ROWS}),
        )
    ]
    call = _op(
        "A call's transcripts (one per recording): words per channel with times, QA results "
        "with their evidence; decrypted when sealed (supervisor, audited)",
        {"type": "object"},
    )
    call["responses"]["404"] = {
        "$ref": "#/components/responses/Problem",
        "description": "no transcript of this call (yet)",
    }
    search = _op("Transcripts holding every word of q, newest first (supervisor, audited)", rows)
    flagged = _op("Transcribed calls that failed a QA rule, newest first (supervisor)", rows)
    for op in (search, flagged):
        op["responses"]["400"] = bad
    q = {"name": "q", "in": "query", "required": True, "schema": {"type": "string"}}
    return {
        "/api/v1/calls/{call_id}/transcript": {
            "get": {
                **call,
                "parameters": [
                    {
                        "name": "call_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            }
        },
        "/api/v1/transcripts": {"get": {**search, "parameters": [q, *filters]}},
        "/api/v1/qa/flagged": {"get": {**flagged, "parameters": filters}},
    }


def _task_paths() -> tuple[dict[str, Any], dict[str, Any]]:
    """The tasks API (engine.api.tasks); request bodies generated from its structs."""
    (new, created, completion, transfer, message, change, refused, new_cb, cb_created), schemas = (
        msgspec.json.schema_components(
            [NewTask, TaskCreated, TaskCompletion, TaskTransfer, TaskMessage, TaskStateChange,
             TransitionRefused, NewCallback, CallbackCreated],
            ref_template="#/components/schemas/{name}",
        )
    )  # fmt: skip
    schemas["NewTask"]["properties"]["channel"]["enum"] = list(TASK_CHANNELS)
    schemas["TaskStateChange"]["properties"]["state"]["enum"] = list(REQUESTABLE)
    task = {"type": "object", "description": "the task with its history and messages"}
    task_id = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}

    def problems(op: dict[str, Any], **codes: str) -> dict[str, Any]:
        for code, description in codes.items():
            op["responses"][code.removeprefix("s")] = {
                "$ref": "#/components/responses/Problem",
                "description": description,
            }
        return op

    def action(summary: str, body: dict[str, Any] | None = None, **codes: str) -> dict[str, Any]:
        op = problems(_op(summary, task, body=body), s404="no such open task", **codes)
        return {"post": {**op, "parameters": [task_id]}}

    create = problems(
        _op(
            "Create a task (integration, supervisor, admin; audited). 201 with its id; a "
            "second create with the same external_id answers 200 with the first task's id "
            "and created = false.",
            created,
            body=new,
        ),
        s422="unknown channel, queue or skill, or a bad field (the detail names it)",
        s409="the queue holds max_length tasks of this channel",
        s503="the router holds as many calls and tasks as it has room for, or the store "
        "failed: nothing was kept, retry later",
    )
    create["responses"]["201"] = create["responses"]["200"]
    callback = problems(
        _op(
            "Schedule a callback (integration, supervisor, admin; audited): a task of channel "
            "callback, scheduled until `at` (ISO-8601 with its zone; absent: queued now), then "
            "queued with `at` as its place in line and delivered by the queue's callback.mode. "
            "201 with its id",
            cb_created,
            body=new_cb,
        ),
        s422="unknown queue, a queue without callback config, a bad number, or `at` in the "
        "past or without a zone (the detail names the field)",
        s409="the queue holds max_length callback tasks",
        s503="the router or the store cannot take it: nothing was kept, retry later",
    )
    callback["responses"]["201"] = callback["responses"].pop("200")
    listing = _op(
        "Tasks: live ones (scheduled, waiting, offered, assigned, pending, solved) from the "
        "service, completed, closed and cancelled from the store; with their SLA due times",
        task,
    )
    listing["parameters"] = [
        {"name": n, "in": "query", "schema": sch}
        for n, sch in (
            ("state", {"type": "string", "description": "comma-separated states"}),
            ("queue", {"type": "string"}),
            ("channel", {"type": "string", "enum": list(TASK_CHANNELS)}),
            ("agent", {"type": "string"}),
            (
                "breached",
                {
                    "type": "string",
                    "enum": ["first_response", "resolution", "any"],
                    "description": "only tasks that breached that SLA due time",
                },
            ),
            ("limit", {"type": "integer", "maximum": MAX_TASK_ROWS}),
        )
    ]
    post_message = problems(
        _op(
            "A message on the task: the customer's (integration token) or the agent's (the "
            "holding agent or a supervisor); on the event stream and stored with the task",
            {"type": "object"},
            body=message,
        ),
        s404="no such open task",
    )

    def state_change() -> dict[str, Any]:
        op = problems(
            _op(
                "Move the task to a state (a ticket: pending, open, solved, closed; any task not "
                "yet taken: cancelled; a chat, email or social task: completed). Integration, "
                "supervisor, or the agent holding or last holding it; audited",
                task,
                body=change,
            ),
            s404="no such open task",
            s422="not a state a client may ask for",
        )
        op["responses"]["409"] = {
            "description": "the task's lifecycle has no such move from its state: `allowed` "
            "names the states it may go to",
            "content": {"application/json": {"schema": refused}},
        }
        return {**op, "parameters": [task_id]}

    paths = {
        "/api/v1/tasks": {"post": create, "get": listing},
        "/api/v1/callbacks": {"post": callback},
        "/api/v1/tasks/{task_id}": {
            "get": {
                **problems(_op("One task", task), s404="no such task"),
                "parameters": [task_id],
            },
            "patch": state_change(),
        },
        "/api/v1/tasks/{task_id}/contacts": {
            "get": {
                **problems(
                    _op(
                        "The task's customer's other contacts on every channel, newest first "
                        "(whoever may read the task; audited)",
                        {"type": "array", "items": CONTACT_SCHEMA},
                    ),
                    s404="no such task",
                ),
                "parameters": [task_id],
            }
        },
        "/api/v1/tasks/{task_id}/transitions": {"post": state_change()},
        "/api/v1/tasks/{task_id}/accept": action(
            "The agent the task is offered to accepts it (audited)", s409="not offered to you"
        ),
        "/api/v1/tasks/{task_id}/reject": action(
            "The agent the task is offered to rejects it: the next agent is offered (audited)",
            s409="not offered to you",
        ),
        "/api/v1/tasks/{task_id}/complete": action(
            "The holding agent (or a supervisor) completes the task (audited)",
            completion,
            s409="not assigned",
        ),
        "/api/v1/tasks/{task_id}/transfer": action(
            "To another queue or to an agent of the task's queue, keeping its enqueue time and "
            "history (audited)",
            transfer,
            s422="unknown queue or agent, or an agent without capacity for the channel",
        ),
        "/api/v1/tasks/{task_id}/cancel": action(
            "The customer left before an agent accepted the task (integration, supervisor)",
            s409="already assigned",
        ),
        "/api/v1/tasks/{task_id}/messages": {"post": {**post_message, "parameters": [task_id]}},
    }
    return paths, schemas


def _recording_paths() -> dict[str, Any]:
    """Recordings and the live calls' recording control (bodies filled in by openapi_paths)."""
    rows = {"type": "array", "items": {"type": "object"}}

    def path_param(name: str) -> dict[str, Any]:
        return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}

    def problems(op: dict[str, Any], **codes: str) -> dict[str, Any]:
        for code, description in codes.items():
            # OpenAPI 3.1: a reference may carry its own description
            op["responses"][code.removeprefix("s")] = {
                "$ref": "#/components/responses/Problem",
                "description": description,
            }
        return op

    audio = _op("Download a recording, decrypted (audited)", {"type": "string"})
    audio["responses"]["200"] = {
        "description": "the audio file",
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in CONTENT_TYPES.values()},
    }  # fmt: skip
    change = problems(
        _op(
            "The call's agent or a supervisor pauses/resumes the recording (PCI) or, with "
            '{"record": true}, starts recording it from now to the hang-up (any queue policy '
            "but never; the index row says on_demand). Every attempt is audited.",
            {"type": "object"},
            body={"type": "object"},
        ),
        s404="no such live call",
        s409="refused: not bridged yet, already recorded, not recorded (pause), or the queue's "
        "policy is never",
    )
    return {
        "/api/v1/recordings": {
            "get": {
                **_op("Search the recordings index, newest first", rows),
                "parameters": [
                    {"name": n, "in": "query", "schema": {"type": t}}
                    for n, t in (
                        ("call_id", "string"),
                        ("queue", "string"),
                        ("agent", "string"),
                        ("since", "number"),
                        ("limit", "integer"),
                    )
                ],
            }
        },
        "/api/v1/recordings/{recording_id}/audio": {
            "get": {
                **problems(audio, s404="no such recording", s410="purged"),
                "parameters": [path_param("recording_id")],
            },
        },
        "/api/v1/recordings/{recording_id}/legal_hold": {
            "put": {
                **_op(
                    "Set or clear a recording's legal hold (admin, audited)",
                    {"type": "object"},
                    body={"type": "object", "properties": {"legal_hold": {"type": "boolean"}}},
                ),
                "parameters": [path_param("recording_id")],
            },
        },
        "/api/v1/calls": {"get": _op("Live calls (supervisor)", rows)},
        "/api/v1/calls/{call_id}/recording": {
            "put": {**change, "parameters": [path_param("call_id")]},
        },
        "/api/v1/calls/{call_id}/transfer": {
            "post": {
                **problems(
                    _op(
                        "The call's agent or a supervisor blind-transfers the caller to a queue, "
                        "or to a number through a trunk; the agent's part ends (audited). A "
                        "number that does not answer puts the caller back in its queue.",
                        {"type": "object"},
                        body={
                            "type": "object",
                            "properties": {
                                "queue": {"type": "string"},
                                "number": {"type": "string"},
                                "trunk": {"type": "string"},
                            },
                        },
                    ),
                    s404="no such live call",
                    s409="refused: not bridged, unknown queue, no trunk to the number",
                ),
                "parameters": [path_param("call_id")],
            },
        },
        "/api/v1/calls/{call_id}/monitor": _monitor_ops(problems, path_param("call_id")),
    }


def _monitor_ops(problems: Any, call_param: dict[str, Any]) -> dict[str, Any]:
    """Supervisor listen / whisper / barge on a bridged call (bodies filled in by openapi_paths)."""
    session = {"type": "object"}  # MonitorSession.as_dict
    start = problems(
        _op(
            "A supervisor (or admin) rings a supervisor's SIP phone to listen to (hears both "
            "sides), whisper into (heard by the agent only) or barge in on (heard by both) the "
            "bridged call: 202 with the monitor id, then progress on the event stream (type "
            "monitor). Audited; agents never see it.",
            session,
            body={"type": "object"},
        ),
        s400="bad mode, or a supervisor not in [[agents]]",
        s404="no such live call",
        s409="not bridged, already monitored, the supervisor busy or without a registered SIP "
        "phone",
    )
    start["responses"]["202"] = {
        **start["responses"].pop("200"),
        "description": "Accepted: ringing",
    }
    change = problems(
        _op(
            "Switch the call's monitoring to another mode (audited)",
            session,
            body={"type": "object"},
        ),
        s400="bad mode",
        s404="no such live call, or not monitored",
    )
    stop = problems(
        _op("End the call's monitoring: the supervisor's phone is hung up, the call goes on "
            "(audited)", session),
        s404="no such live call, or not monitored",
    )  # fmt: skip
    return {
        "post": {**start, "parameters": [call_param]},
        "patch": {**change, "parameters": [call_param]},
        "delete": {**stop, "parameters": [call_param]},
    }
