"""Tables of the CDR store (SQLAlchemy Core), shared by the migrations and the queries.

Times are stored as UTC epoch seconds in double precision (``*_at`` columns): exact to the
microsecond, trivially comparable across SQLite and PostgreSQL, and what Asterisk's queue_log uses.
Durations are seconds (``*_s``). The schema itself changes only through a new migration in
``migrations/versions``; this module must always describe the head revision.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# One row per call (DESIGN.md section 3 step 7): the phases of its life, who ended it, and why.
calls = sa.Table(
    "calls",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # our call id (also in logs as call_id)
    sa.Column("sip_call_id", sa.String(255), nullable=False),
    sa.Column("trunk", sa.String(64)),
    sa.Column("caller", sa.String(128)),  # From user part / number
    sa.Column("caller_name", sa.String(128)),
    sa.Column("dialed", sa.String(128)),
    sa.Column("flow", sa.String(64)),
    sa.Column("queue", sa.String(64)),
    sa.Column("agent_id", sa.String(64)),
    sa.Column("arrived_at", sa.Double, nullable=False),
    sa.Column("flow_answered_at", sa.Double),
    sa.Column("enqueued_at", sa.Double),
    sa.Column("first_offer_at", sa.Double),
    sa.Column("agent_answered_at", sa.Double),
    sa.Column("ended_at", sa.Double),
    # answered, abandoned, overflowed, rejected, failed, transferred, flow_ended
    sa.Column("disposition", sa.String(32)),
    sa.Column("hangup_side", sa.String(16)),  # caller, agent, system
    sa.Column("hangup_reason", sa.String(128)),
    sa.Column("wait_s", sa.Double),
    sa.Column("talk_s", sa.Double),
    sa.Column("wrap_up_s", sa.Double),
    sa.Column("hold_s", sa.Double),  # the caller on the agent's hold while bridged (migration 0015)
    sa.Column("flow_data", sa.JSON),
    sa.Column("recording_id", sa.String(64)),
    # post-call survey (queues[].csat): 1 (poor) to 5 (excellent); NULL when not asked or no answer
    sa.Column("csat_score", sa.SmallInteger),
    sa.Column("csat_second_score", sa.SmallInteger),
    # The daemon that held the call (runtime.node): a row with ended_at NULL is a live call,
    # or one a crash of that node interrupted, which it closes when it starts (migration 0011).
    sa.Column("node", sa.String(64)),
    sa.Index(None, "arrived_at"),
    sa.Index(None, "node", "ended_at"),
    sa.Index(None, "queue", "arrived_at"),
    sa.Index(None, "agent_id", "arrived_at"),
    sa.Index(None, "caller", "arrived_at"),
)

# Queue events in the spirit of Asterisk's queue_log: ENTERQUEUE, RINGNOANSWER, CONNECT, ABANDON, ...
queue_events = sa.Table(
    "queue_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("call_id", sa.String(64), nullable=False),
    sa.Column("queue", sa.String(64), nullable=False),
    sa.Column("agent_id", sa.String(64)),
    # enter, offer, ring_no_answer, answer, abandon, overflow, transfer, complete
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("data", sa.JSON),
    sa.Index(None, "at"),
    sa.Index(None, "call_id"),
    sa.Index(None, "queue", "at"),
)

agent_events = sa.Table(
    "agent_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("agent_id", sa.String(64), nullable=False),
    # logged_out, available, reserved, busy, wrap_up, not_ready: the agent's state (channel NULL);
    # task_offered, task_accepted, task_ended: one task of ``channel`` (migration 0008)
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("reason", sa.String(128)),
    sa.Column("call_id", sa.String(64)),
    sa.Column("channel", sa.String(16)),  # a task row's channel (chat, email, social, ticket)
    sa.Column("task_id", sa.String(64)),
    sa.Index(None, "agent_id", "at"),
)

recordings = sa.Table(
    "recordings",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("call_id", sa.String(64), nullable=False),
    sa.Column("queue", sa.String(64)),
    sa.Column("agent_id", sa.String(64)),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("duration_s", sa.Double),
    sa.Column("size_bytes", sa.BigInteger),
    sa.Column("sha256", sa.String(64)),
    sa.Column("codec", sa.String(16)),  # wav, flac, opus
    sa.Column("path", sa.String(1024), nullable=False),
    sa.Column("key_id", sa.String(64)),  # encryption key id; NULL when stored in clear
    sa.Column("legal_hold", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("recovered", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("paused_spans", sa.JSON),
    sa.Column("error", sa.String(255)),
    sa.Column("purged_at", sa.Double),
    # Started through the API mid-call (the file covers the request to the hang-up), and by whom;
    # False / NULL: started by the queue's policy when the call was bridged (migration 0002).
    sa.Column("on_demand", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("started_by", sa.String(64)),
    # The id of this call's recording that ended early (its media worker died): this file takes
    # over from the moment it was started (migration 0003).
    sa.Column("continues", sa.String(64)),
    sa.Index(None, "call_id"),
    sa.Index(None, "started_at"),
)

# One per transcribed recording (migration 0005): deleted with it by the retention purge, so a
# legal hold on the recording keeps its transcript too. When the recording is encrypted, ``text``
# is NULL and ``body`` is sealed with the recordings keyring (``key_id``); ``qa`` holds only rule
# names, outcomes and times, never transcribed words.
transcripts = sa.Table(
    "transcripts",
    metadata,
    sa.Column("recording_id", sa.String(64), primary_key=True),
    sa.Column("call_id", sa.String(64), nullable=False),
    sa.Column("queue", sa.String(64)),
    sa.Column("agent_id", sa.String(64)),
    sa.Column("started_at", sa.Double, nullable=False),  # the recording's, for time windows
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("engine", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(64)),
    sa.Column("text", sa.Text),  # caller and agent words, for search; NULL when encrypted
    sa.Column("body", sa.LargeBinary, nullable=False),  # JSON, or sealed JSON
    sa.Column("qa", sa.JSON),
    sa.Column("qa_passed", sa.Boolean),  # NULL: no rule applied
    sa.Index(None, "call_id"),
    sa.Index(None, "started_at"),
    sa.Index(None, "qa_passed", "started_at"),
)

# Outbound webhook deliveries that ran out of attempts (engine.webhooks; migration 0007): the
# exact body sent, for a retry from the API; delivered_at is set when a retry got through.
webhook_dead_letters = sa.Table(
    "webhook_dead_letters",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # the delivery id (X-Acd-Delivery)
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", sa.Double, nullable=False),  # the event's time
    sa.Column("failed_at", sa.Double, nullable=False),  # the last failed attempt
    sa.Column("delivered_at", sa.Double),
    sa.Index(None, "delivered_at", "failed_at"),
)

# Who looked at or changed what: recordings downloads, config reloads, agent state by supervisors.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16)),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("object_type", sa.String(32)),
    sa.Column("object_id", sa.String(64)),
    sa.Column("outcome", sa.String(16), nullable=False),  # allowed, denied, failed
    sa.Column("remote_addr", sa.String(64)),
    sa.Column("detail", sa.JSON),
    sa.Index(None, "at"),
)

# Agents and queues made through the admin API (migration 0014): the body in the shape of the
# object's TOML section, or deleted = true to hide the config file's object of that name.
admin_objects = sa.Table(
    "admin_objects",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),  # agent, queue
    sa.Column("name", sa.String(64), primary_key=True),  # an agent's id, a queue's name
    sa.Column("body", sa.JSON, nullable=True),  # NULL when deleted
    sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("updated_by", sa.String(64), nullable=False),
)

# One row per non-voice task (DESIGN.md section 9: chats, e-mails, social messages, tickets), with
# the time stamps of a call's CDR: arrival, (effective) enqueue, first offer, accept, end. The row
# is kept current while the task lives, so a daemon that stops finds its open tasks here
# (migration 0004).
tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("external_id", sa.String(255)),  # the creator's id: a second create returns this row
    sa.Column("channel", sa.String(16), nullable=False),  # chat, email, social, ticket
    sa.Column("queue", sa.String(64), nullable=False),
    # scheduled, waiting, offered, assigned, pending, solved, completed, closed, cancelled
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("requirements", sa.JSON),  # skill -> minimum level; NULL: the queue's
    sa.Column("customer", sa.JSON),  # {id, name, email, phone}
    sa.Column("subject", sa.String(255)),
    sa.Column("data", sa.JSON),
    sa.Column("agent_id", sa.String(64)),  # offered to / assigned to / completed by
    sa.Column("created_by", sa.String(64)),  # the token's name
    sa.Column("arrived_at", sa.Double, nullable=False),
    sa.Column("enqueued_at", sa.Double, nullable=False),  # effective: orders the queue
    sa.Column("first_offer_at", sa.Double),
    sa.Column("accepted_at", sa.Double),
    sa.Column("ended_at", sa.Double),
    sa.Column("disposition", sa.String(64)),
    sa.Column("notes", sa.Text),
    sa.Column("wait_s", sa.Double),  # arrival -> accept
    sa.Column("handle_s", sa.Double),  # accept -> complete
    # SLA (migration 0008): due times move on by the time the clock was paused (pending, solved)
    sa.Column("first_response_at", sa.Double),
    sa.Column("first_response_due_at", sa.Double),
    sa.Column("resolution_due_at", sa.Double),
    sa.Column("sla_paused_at", sa.Double),  # non-NULL while pending or solved
    sa.Column("first_response_breached", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("resolution_breached", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("solved_at", sa.Double),
    sa.Column("not_before", sa.Double),  # a scheduled follow-up enters routing at this time
    # who the customer is, from ``customer`` (engine.storage.customers, migration 0016): the
    # phone as digits (and a leading +), the e-mail lower-cased, the CRM's id
    sa.Column("customer_phone", sa.String(255)),
    sa.Column("customer_email", sa.String(255)),
    sa.Column("customer_ref", sa.String(255)),
    sa.Index(None, "external_id", unique=True),
    sa.Index(None, "state"),
    sa.Index(None, "queue", "arrived_at"),
    sa.Index(None, "agent_id", "arrived_at"),
    sa.Index(None, "customer_phone"),
    sa.Index(None, "customer_email"),
    sa.Index(None, "customer_ref"),
)

# A task's history: who did what when (created, offered, accepted, rejected, offer_timeout,
# transferred, completed, cancelled, requeued_after_restart).
task_events = sa.Table(
    "task_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(64)),  # a token's name, or "router" / "daemon"
    sa.Column("agent_id", sa.String(64)),
    sa.Column("queue", sa.String(64)),
    sa.Column("data", sa.JSON),
    sa.Index(None, "task_id", "at"),
    sa.Index(None, "at"),
)

# Every state change of a task (migration 0008): from, to, who, when; the time in each state.
task_states = sa.Table(
    "task_states",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("from_state", sa.String(16)),  # NULL: created
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(64)),
    sa.Column("agent_id", sa.String(64)),
    sa.Column("queue", sa.String(64)),
    sa.Index(None, "task_id", "at"),
    sa.Index(None, "at"),
)

# A chat's transcript (and the messages of any other task): the customer's and the agent's.
task_messages = sa.Table(
    "task_messages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.String(64), nullable=False),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("sender", sa.String(16), nullable=False),  # customer, agent
    sa.Column("author", sa.String(64)),  # the token's name
    sa.Column("text", sa.Text, nullable=False),
    sa.Index(None, "task_id", "at"),
)
