"""The engine's routing service on a real event loop with the real Router (no stand-ins)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import routing_core as rc
from engine.config import parse_config
from engine.routing.service import RoutingCollector, RoutingService, SkillCatalogue

CONFIG = """
[[queues]]
name = "support"
strategy = "longest_idle"
requirements = { support = 1 }
wrap_up_s = 0.2

[[queues]]
name = "vip"
requirements = { support = 9 }
# After 0.3 s nobody with level 9 answered: anyone with support 1 may take it.
steps = [ { after_s = 0.3, requirements = { support = 1 } } ]

[[queues]]
name = "all"
strategy = "ring_all"

[[agents]]
id = "1001"
skills = { support = 8, sales = 3 }
queues = { support = 0, vip = 0, all = 0 }

[[agents]]
id = "1002"
skills = { support = 4, sales = 9 }
queues = { support = 1, vip = 0, all = 0 }
"""


class Recorder:
    def __init__(self) -> None:
        self.offers: list[rc.Offer] = []
        self.withdrawn: list[rc.Offer] = []
        self.changed = asyncio.Event()

    def offer(self, o: rc.Offer) -> None:
        self.offers.append(o)
        self.changed.set()

    def withdraw(self, o: rc.Offer) -> None:
        self.withdrawn.append(o)

    async def wait_offers(self, n: int, timeout_s: float = 3.0) -> list[rc.Offer]:
        async with asyncio.timeout(timeout_s):
            while len(self.offers) < n:
                self.changed.clear()
                await self.changed.wait()
        return self.offers


@pytest.fixture
async def service() -> tuple[RoutingService, Recorder]:
    rec = Recorder()
    svc = RoutingService(
        parse_config(CONFIG, "t.toml"),
        on_offer=rec.offer,
        on_withdraw=rec.withdraw,
        loop=asyncio.get_running_loop(),
    )
    return svc, rec


def test_skill_catalogue_maps_names_to_dense_indices() -> None:
    cat = SkillCatalogue.from_config(parse_config(CONFIG, "t.toml"))
    assert cat.names == ["sales", "support"]
    assert cat.requirements({"support": 3, "sales": 1}) == (
        rc.Requirement(0, 1),
        rc.Requirement(1, 3),
    )


async def test_offer_accept_complete_and_wrap_up_ends_by_timer(
    service: tuple[RoutingService, Recorder],
) -> None:
    svc, rec = service
    svc.login("1001")
    await asyncio.sleep(0.01)
    svc.login("1002")
    svc.enqueue("call-1", "support")
    (offer,) = await rec.wait_offers(1)
    assert offer == rc.Offer("call-1", "1001", "support")  # idle longest
    assert svc.agent_state("1001") is rc.AgentState.RESERVED
    svc.accept("call-1", "1001")
    assert svc.agent_state("1001") is rc.AgentState.BUSY
    svc.complete("1001", "call-1")
    assert svc.agent_state("1001") is rc.AgentState.WRAP_UP
    await asyncio.sleep(0.35)  # wrap_up_s = 0.2: the service's one timer must have fired
    assert svc.agent_state("1001") is rc.AgentState.AVAILABLE
    svc.close()


async def test_no_agent_is_reserved_until_someone_is_connected_to_hear_the_offer() -> None:
    """The daemon builds the router first and connects the call layer afterwards: a caller
    enqueued in between is offered only once the offer can be rung."""
    rec = Recorder()
    svc = RoutingService(parse_config(CONFIG, "t.toml"), loop=asyncio.get_running_loop())
    svc.login("1001")
    svc.enqueue("call-early", "support")
    await asyncio.sleep(0.05)  # the dispatch has run (call_soon) and must have offered nothing
    assert svc.agent_state("1001") is rc.AgentState.AVAILABLE
    svc.connect(on_offer=rec.offer, on_withdraw=rec.withdraw)
    (offer,) = await rec.wait_offers(1)
    assert offer == rc.Offer("call-early", "1001", "support")
    assert svc.agent_state("1001") is rc.AgentState.RESERVED
    svc.close()


async def test_relaxation_step_fires_from_the_timer_without_any_event(
    service: tuple[RoutingService, Recorder],
) -> None:
    svc, rec = service
    svc.login("1002")  # support 4: not enough for vip (9) until the step widens it
    svc.enqueue("call-v", "vip")
    await asyncio.sleep(0.15)
    assert rec.offers == []
    (offer,) = await rec.wait_offers(1, timeout_s=2.0)
    assert offer == rc.Offer("call-v", "1002", "vip")
    svc.close()


async def test_ring_all_accept_withdraws_the_other_offer(
    service: tuple[RoutingService, Recorder],
) -> None:
    svc, rec = service
    svc.login("1001")
    svc.login("1002")
    svc.enqueue("call-r", "all")
    offers = await rec.wait_offers(2)
    assert {o.agent_id for o in offers} == {"1001", "1002"}
    svc.accept("call-r", "1002")
    assert rec.withdrawn == [rc.Offer("call-r", "1001", "all")]
    assert svc.agent_state("1001") is rc.AgentState.AVAILABLE
    assert svc.agent_state("1002") is rc.AgentState.BUSY
    svc.close()


async def test_abandon_while_ringing_frees_the_agent(
    service: tuple[RoutingService, Recorder],
) -> None:
    svc, rec = service
    svc.login("1001")
    svc.enqueue("call-a", "support")
    await rec.wait_offers(1)
    svc.abandon("call-a")
    assert rec.withdrawn == [rc.Offer("call-a", "1001", "support")]
    assert svc.agent_state("1001") is rc.AgentState.AVAILABLE
    svc.close()


async def test_metrics_are_read_from_the_router_at_scrape_time(
    service: tuple[RoutingService, Recorder],
) -> None:
    svc, _ = service
    registry = CollectorRegistry()
    registry.register(RoutingCollector(lambda: svc))
    svc.login("1001")
    svc.enqueue("w1", "vip")  # 1001 has support 8 < 9: it waits
    await asyncio.sleep(0.05)
    text = generate_latest(registry).decode()
    assert 'acd_queue_waiting_calls{queue="vip"} 1.0' in text
    assert 'acd_queue_waiting_calls{queue="support"} 0.0' in text
    assert 'acd_queue_agents{queue="support",state="available"} 1.0' in text
    assert 'acd_queue_agents{queue="support",state="logged_out"} 1.0' in text
    # one series per configured agent, its state now
    states = [line for line in text.splitlines() if line.startswith("acd_agent_state{")]
    assert 'acd_agent_state{agent="1001",state="available"} 1.0' in states
    assert len(states) == len(svc._cfg.agents)
    assert sum('state="logged_out"' in line for line in states) == len(states) - 1
    oldest = registry.get_sample_value("acd_queue_oldest_wait_seconds", {"queue": "vip"})
    assert oldest is not None
    assert 0.04 <= oldest < 1.0
    svc.close()


# -- reload -----------------------------------------------------------------------------------

RELOAD_BEFORE = """
[[queues]]
name = "q"
requirements = { support = 9 }

[[agents]]
id = "A"
skills = { support = 5 }
queues = { q = 0 }

[[agents]]
id = "B"
skills = { support = 3 }
queues = { q = 0 }
"""
RELOAD_AFTER = (
    RELOAD_BEFORE.replace('name = "q"', 'name = "q"\nstrategy = "most_skilled"')
    .replace("requirements = { support = 9 }", "requirements = { support = 1 }")
    .replace("skills = { support = 3 }", "skills = { support = 9, billing = 2 }")
)


async def test_reload_changes_strategy_skills_and_requirements_for_waiting_callers() -> None:
    rec = Recorder()
    svc = RoutingService(
        parse_config(RELOAD_BEFORE, "t.toml"),
        on_offer=rec.offer,
        on_withdraw=rec.withdraw,
        loop=asyncio.get_running_loop(),
    )
    svc.login("A")  # idle longest: longest_idle would pick A first
    await asyncio.sleep(0.01)
    svc.login("B")
    svc.enqueue("c1", "q")
    await asyncio.sleep(0.01)
    svc.enqueue("c2", "q")
    await asyncio.sleep(0.05)
    assert rec.offers == []  # nobody has support 9
    cfg = parse_config(RELOAD_AFTER, "t.toml")
    assert svc.refused(cfg) == []
    svc.apply(cfg)
    offers = await rec.wait_offers(2)
    # c1 kept its place ahead of c2; most skilled now, with B's new level 9 (and a skill name,
    # billing, the Router had no column for).
    assert offers == [rc.Offer("c1", "B", "q"), rc.Offer("c2", "A", "q")]
    svc.close()


async def test_removing_a_queue_with_waiting_callers_is_refused_and_an_empty_one_goes(
    service: tuple[RoutingService, Recorder],
) -> None:
    svc, _ = service
    without_vip = CONFIG.replace(
        """[[queues]]
name = "vip"
requirements = { support = 9 }
# After 0.3 s nobody with level 9 answered: anyone with support 1 may take it.
steps = [ { after_s = 0.3, requirements = { support = 1 } } ]
""",
        "",
    ).replace(", vip = 0", "")
    cfg = parse_config(without_vip, "t.toml")
    svc.enqueue("waiting", "vip")
    (problem,) = svc.refused(cfg)
    assert problem.startswith("queues.vip: removed while 1 waiting in it")
    svc.abandon("waiting")
    assert svc.refused(cfg) == []
    svc.apply(cfg)
    assert [name for name, _, _ in svc.queue_figures()] == ["support", "all"]
    svc.close()


async def test_a_removed_agent_is_offered_nothing_and_comes_back_when_re_added() -> None:
    rec = Recorder()
    emptied: list[str] = []
    cfg = parse_config(CONFIG.replace('name = "all"', 'name = "all"\nleave_empty = true'), "t")
    svc = RoutingService(cfg, loop=asyncio.get_running_loop())
    svc.connect(on_offer=rec.offer, on_withdraw=rec.withdraw, on_queue_empty=emptied.append)
    svc.login("1001")
    only_1002 = (
        CONFIG[: CONFIG.index('[[agents]]\nid = "1001"')]
        + CONFIG[CONFIG.index('[[agents]]\nid = "1002"') :]
    )
    svc.apply(parse_config(only_1002, "t"))
    # 1001 was the only member logged in: every queue it was in is left empty.
    assert sorted(emptied) == ["all", "support", "vip"]
    svc.enqueue("c", "support")
    await asyncio.sleep(0.05)
    assert rec.offers == []  # 1001 is still logged in, in no queue
    svc.apply(cfg)
    (offer,) = await rec.wait_offers(1)
    assert offer == rc.Offer("c", "1001", "support")
    svc.close()


async def test_a_reload_adding_more_agents_than_the_router_holds_is_refused() -> None:
    svc = RoutingService(parse_config(RELOAD_BEFORE, "t.toml"), loop=asyncio.get_running_loop())
    assert svc.router.max_agents == 16  # twice the configured agents, at least 16
    many = RELOAD_BEFORE + "".join(
        f'[[agents]]\nid = "x{i}"\nqueues = {{ q = 0 }}\n' for i in range(15)
    )
    (problem,) = svc.refused(parse_config(many, "t.toml"))
    assert problem.startswith("agents: 17 agents")
    assert svc.refused(parse_config(many.split('[[agents]]\nid = "x14"')[0], "t.toml")) == []
    svc.close()
