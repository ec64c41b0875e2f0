"""QA rules over one call's transcript: pass or fail per rule, with the times that prove it.

How this works: ``evaluate(rules, transcript)`` is pure. A ``required`` rule passes when any of its
wordings is found on its channel (within ``within_s`` of the recording's start when set); a
``forbidden`` rule fails when any is found; ``talk_ratio`` compares the agent's share of the
recognised speech time with ``[min_ratio, max_ratio]``. A wording is found either by keyword
spotting (a ``Hit`` of that phrase) or by a fuzzy match in the free transcript: a window of about
the phrase's length slides over the channel's words and their letters are compared with
``difflib.SequenceMatcher``; ``min_similarity`` (0.75 by default) absorbs the recogniser's
substitutions ("carries" heard as "can really") without matching unrelated speech. Evidence is the
matched words with their start and end times, so a reviewer can jump to the moment.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from engine.config import QaRuleConfig
from engine.transcription.asr import Hit, Word

CHANNELS = ("caller", "agent")


@dataclass(frozen=True, slots=True)
class Evidence:
    channel: str
    phrase: str  # the rule's wording that matched
    heard: str  # what the recogniser wrote there
    start_s: float
    end_s: float
    similarity: float
    source: str  # transcript | keyword


@dataclass(frozen=True, slots=True)
class RuleResult:
    rule: str
    type: str
    passed: bool
    evidence: tuple[Evidence, ...] = ()
    detail: Mapping[str, float] = field(default_factory=dict)


def _norm(words: Sequence[str]) -> str:
    return " ".join(w.lower() for w in words)


def find_phrase(
    phrase: str, words: Sequence[Word], min_similarity: float, channel: str
) -> Evidence | None:
    """The best fuzzy occurrence of ``phrase`` in ``words`` at or above ``min_similarity``."""
    target = phrase.lower().split()
    if not target or not words:
        return None
    goal = _norm(target)
    best: Evidence | None = None
    n = len(target)
    for size in range(max(1, n - 2), n + 3):
        for i in range(max(1, len(words) - size + 1)):
            window = words[i : i + size]
            ratio = difflib.SequenceMatcher(None, goal, _norm([w.text for w in window])).ratio()
            if ratio >= min_similarity and (best is None or ratio > best.similarity):
                best = Evidence(
                    channel, phrase, _norm([w.text for w in window]),
                    window[0].start_s, window[-1].end_s, round(ratio, 3), "transcript",
                )  # fmt: skip
    return best


def _occurrences(
    rule: QaRuleConfig,
    words: Mapping[str, Sequence[Word]],
    hits: Mapping[str, Sequence[Hit]],
) -> list[Evidence]:
    channels = CHANNELS if rule.channel == "any" else (rule.channel,)
    found: list[Evidence] = []
    for channel in channels:
        for phrase in rule.phrases:
            wanted = " ".join(phrase.lower().split())
            for hit in hits.get(channel, ()):
                if hit.phrase == wanted:
                    found.append(
                        Evidence(channel, phrase, hit.phrase, hit.start_s, hit.end_s,
                                 hit.confidence, "keyword")
                    )  # fmt: skip
            match = find_phrase(phrase, words.get(channel, ()), rule.min_similarity, channel)
            if match is not None:
                found.append(match)
    if rule.within_s > 0:
        found = [e for e in found if e.start_s <= rule.within_s]
    return sorted(found, key=lambda e: (e.start_s, e.source))


def _speech_s(words: Sequence[Word]) -> float:
    return sum(max(0.0, w.end_s - w.start_s) for w in words)


def evaluate(
    rules: Sequence[QaRuleConfig],
    queue: str,
    words: Mapping[str, Sequence[Word]],
    hits: Mapping[str, Sequence[Hit]],
) -> list[RuleResult]:
    """Results of the rules that apply to ``queue`` (``words``/``hits`` by channel)."""
    results: list[RuleResult] = []
    for rule in rules:
        if rule.queues and queue not in rule.queues:
            continue
        if rule.type == "talk_ratio":
            agent, caller = _speech_s(words.get("agent", ())), _speech_s(words.get("caller", ()))
            total = agent + caller
            ratio = agent / total if total else 0.0
            passed = total > 0 and rule.min_ratio <= ratio <= rule.max_ratio
            detail = {
                "agent_s": round(agent, 2),
                "caller_s": round(caller, 2),
                "ratio": round(ratio, 3),
            }
            results.append(RuleResult(rule.name, rule.type, passed, (), detail))
            continue
        found = tuple(_occurrences(rule, words, hits))
        passed = bool(found) if rule.type == "required" else not found
        results.append(RuleResult(rule.name, rule.type, passed, found))
    return results


def keyphrases(rules: Sequence[QaRuleConfig], queue: str) -> list[str]:
    """The wordings worth spotting for a call of ``queue``: those of its phrase rules."""
    out: dict[str, None] = {}
    for rule in rules:
        if rule.type != "talk_ratio" and (not rule.queues or queue in rule.queues):
            for phrase in rule.phrases:
                out[" ".join(phrase.lower().split())] = None
    return list(out)
