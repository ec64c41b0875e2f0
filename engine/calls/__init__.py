"""Calls: a trunk call from its INVITE through flow and queue to a bridged agent and its record.

Where things are: ``service.CallService`` is the coordinator the daemon and the API use; one
module per phase does the work (``listeners``, ``dispatch``, ``inbound``, ``session``, ``media``,
``queueing``, ``ringing``, ``softphones``, ``transfers``, ``surveys``, ``monitoring``, ``teardown``), over the objects in
``model`` (``Call``, ``AgentLeg``, ``CallIndex``). ``record`` builds the CDR row, ``metrics`` the
call layer's Prometheus figures; ``flows`` runs the declarative call flows and
``announcements`` turns positions and waits into prompts.
"""
