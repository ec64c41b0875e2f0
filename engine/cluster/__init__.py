"""Several acd nodes as one cluster (DESIGN.md section 8): who is the routing authority.

``election``: ``LeaderElection``, one node at a time elected leader through a PostgreSQL
advisory lock, a standby taking over when the leader dies; ``acd_cluster_leader`` says which.
Routing does not go through the leader yet: this package only elects it.
"""

from engine.cluster.election import LOCK_KEY, LeaderElection

__all__ = ["LOCK_KEY", "LeaderElection"]
