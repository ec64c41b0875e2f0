"""Registrar binding store: RFC 3261 10.3 rules with injected time."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sip.registrar import (
    ContactLimitPolicy,
    ContactRequest,
    ListedContact,
    Registrar,
)

AOR = "sip:1001@acd.example.com"
PHONE = "sip:1001@192.0.2.10:5060"
SOFT = "sip:1001@192.0.2.11:5062;transport=tcp"


def _reg(**kw: Any) -> Registrar:
    return Registrar(min_expires_s=60, max_expires_s=3600, default_expires_s=3600, **kw)


def test_add_binding_and_list_with_remaining_expires() -> None:
    r = _reg()
    res = r.register(AOR, [ContactRequest(PHONE)], call_id="c1", cseq=1, expires=600, now=100.0)
    assert res.status_code == 200
    assert res.contacts == (ListedContact(PHONE, 600, None),)
    assert [b.contact for b in res.added] == [PHONE]
    later = r.register(AOR, [], call_id="q", cseq=1, expires=None, now=400.0)
    assert later.status_code == 200
    assert later.contacts == (ListedContact(PHONE, 300, None),)
    assert later.added == ()


def test_contact_expires_param_overrides_header_and_default_applies() -> None:
    r = _reg()
    res = r.register(
        AOR,
        [ContactRequest(PHONE, expires=120), ContactRequest(SOFT)],
        call_id="c1",
        cseq=1,
        expires=None,
        now=0.0,
    )
    assert {c.uri: c.expires_s for c in res.contacts} == {PHONE: 120, SOFT: 3600}


def test_several_contacts_sorted_by_q() -> None:
    r = _reg()
    r.register(AOR, [ContactRequest(PHONE, q=0.5)], call_id="a", cseq=1, expires=600, now=0.0)
    res = r.register(AOR, [ContactRequest(SOFT, q=0.9)], call_id="b", cseq=1, expires=600, now=1.0)
    assert [c.uri for c in res.contacts] == [SOFT, PHONE]
    assert [b.contact for b in r.bindings(AOR, now=2.0)] == [SOFT, PHONE]


def test_same_call_id_lower_or_equal_cseq_is_out_of_order() -> None:
    r = _reg()
    r.register(AOR, [ContactRequest(PHONE)], call_id="c1", cseq=5, expires=600, now=0.0)
    for cseq in (5, 4):
        res = r.register(AOR, [ContactRequest(PHONE)], call_id="c1", cseq=cseq, expires=0, now=1.0)
        assert res.status_code == 500
        assert res.reason == "Out Of Order CSeq"
    # Nothing changed: the binding is still there with its old expiry.
    (b,) = r.bindings(AOR, now=2.0)
    assert (b.cseq, b.expires_at) == (5, 600.0)
    ok = r.register(AOR, [ContactRequest(PHONE)], call_id="c1", cseq=6, expires=900, now=3.0)
    assert ok.status_code == 200
    assert [b.contact for b in ok.refreshed] == [PHONE]
    assert ok.contacts == (ListedContact(PHONE, 900, None),)


def test_different_call_id_replaces_binding() -> None:
    r = _reg()
    r.register(AOR, [ContactRequest(PHONE)], call_id="c1", cseq=50, expires=600, now=0.0)
    res = r.register(AOR, [ContactRequest(PHONE)], call_id="c2", cseq=1, expires=600, now=10.0)
    assert res.status_code == 200
    (b,) = r.bindings(AOR, now=11.0)
    assert (b.call_id, b.cseq, b.expires_at) == ("c2", 1, 610.0)


def test_expires_zero_removes_one_contact() -> None:
    r = _reg()
    r.register(
        AOR, [ContactRequest(PHONE), ContactRequest(SOFT)], call_id="c", cseq=1, expires=600, now=0
    )
    res = r.register(
        AOR, [ContactRequest(SOFT, expires=0)], call_id="c", cseq=2, expires=None, now=1
    )
    assert res.status_code == 200
    assert [c.uri for c in res.contacts] == [PHONE]
    assert [b.contact for b in res.removed] == [SOFT]
    # Removing an unknown contact is not an error.
    res = r.register(AOR, [ContactRequest("sip:x@y")], call_id="c", cseq=3, expires=0, now=2)
    assert res.status_code == 200
    assert res.removed == ()


def test_wildcard_removes_all() -> None:
    r = _reg()
    r.register(
        AOR, [ContactRequest(PHONE), ContactRequest(SOFT)], call_id="c", cseq=1, expires=600, now=0
    )
    res = r.register(AOR, [ContactRequest("*")], call_id="d", cseq=1, expires=0, now=5)
    assert res.status_code == 200
    assert res.contacts == ()
    assert {b.contact for b in res.removed} == {PHONE, SOFT}
    assert r.bindings(AOR, now=6) == ()
    assert len(r) == 0
    assert r.next_expiry() is None


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [
        ([ContactRequest("*")], 3600),
        ([ContactRequest("*")], None),
        ([ContactRequest("*"), ContactRequest(PHONE)], 0),
        ([ContactRequest("*", expires=30)], 0),
    ],
)
def test_wildcard_invalid_forms_are_400(
    contacts: list[ContactRequest], expires: int | None
) -> None:
    r = _reg()
    r.register(AOR, [ContactRequest(PHONE)], call_id="c", cseq=1, expires=600, now=0)
    res = r.register(AOR, contacts, call_id="d", cseq=1, expires=expires, now=1)
    assert res.status_code == 400
    assert len(r.bindings(AOR, now=2)) == 1


def test_wildcard_respects_cseq_order() -> None:
    r = _reg()
    r.register(AOR, [ContactRequest(PHONE)], call_id="c", cseq=7, expires=600, now=0)
    res = r.register(AOR, [ContactRequest("*")], call_id="c", cseq=7, expires=0, now=1)
    assert res.status_code == 500
    assert len(r.bindings(AOR, now=2)) == 1


def test_interval_too_brief_423_with_min_expires() -> None:
    r = _reg()
    res = r.register(AOR, [ContactRequest(PHONE)], call_id="c", cseq=1, expires=30, now=0)
    assert res.status_code == 423
    assert res.min_expires_s == 60
    assert r.bindings(AOR, now=0) == ()
    # The contact param counts too, and one bad contact fails the whole request.
    res = r.register(
        AOR,
        [ContactRequest(SOFT), ContactRequest(PHONE, expires=10)],
        call_id="c",
        cseq=2,
        expires=600,
        now=0,
    )
    assert res.status_code == 423
    assert r.bindings(AOR, now=0) == ()


def test_expiry_above_max_is_clamped() -> None:
    r = _reg()
    res = r.register(AOR, [ContactRequest(PHONE)], call_id="c", cseq=1, expires=86400, now=0)
    assert res.contacts == (ListedContact(PHONE, 3600, None),)


@pytest.mark.parametrize(
    "contact",
    [
        ContactRequest(PHONE, q=1.5),
        ContactRequest(PHONE, q=-0.1),
        ContactRequest(PHONE, expires=-1),
    ],
)
def test_bad_params_are_400(contact: ContactRequest) -> None:
    r = _reg()
    assert r.register(AOR, [contact], call_id="c", cseq=1, expires=None, now=0).status_code == 400
    assert (
        r.register(AOR, [ContactRequest(PHONE)], call_id="c", cseq=2, expires=-5, now=0).status_code
        == 400
    )


def test_expiry_sweep_reports_removed_bindings() -> None:
    r = _reg()
    r.register(AOR, [ContactRequest(PHONE)], call_id="a", cseq=1, expires=100, now=0)
    r.register("sip:1002@acd", [ContactRequest(SOFT)], call_id="b", cseq=1, expires=300, now=0)
    assert r.next_expiry() == 100.0
    assert r.expire(99.9) == []
    gone = r.expire(100.0)
    assert [(b.aor, b.contact) for b in gone] == [(AOR, PHONE)]
    assert r.next_expiry() == 300.0
    # A refresh moves the deadline; the old heap entry must not expire the binding early.
    r.register("sip:1002@acd", [ContactRequest(SOFT)], call_id="b", cseq=2, expires=600, now=200)
    assert r.next_expiry() == 800.0
    assert r.expire(300.0) == []
    assert [b.contact for b in r.expire(800.0)] == [SOFT]
    assert r.next_expiry() is None
    assert len(r) == 0


def test_expired_binding_not_listed_before_sweep() -> None:
    r = _reg()
    r.register(AOR, [ContactRequest(PHONE)], call_id="a", cseq=1, expires=100, now=0)
    res = r.register(AOR, [ContactRequest(SOFT)], call_id="b", cseq=1, expires=100, now=150)
    assert [c.uri for c in res.contacts] == [SOFT]
    assert [b.contact for b in res.removed] == [PHONE]


def test_contact_cap_reject_policy() -> None:
    r = _reg(max_contacts_per_aor=2, contact_limit_policy=ContactLimitPolicy.REJECT)
    r.register(AOR, [ContactRequest(PHONE)], call_id="a", cseq=1, expires=600, now=0)
    r.register(AOR, [ContactRequest(SOFT)], call_id="b", cseq=1, expires=600, now=1)
    res = r.register(AOR, [ContactRequest("sip:third@h")], call_id="c", cseq=1, expires=600, now=2)
    assert res.status_code == 403
    assert {b.contact for b in r.bindings(AOR, now=3)} == {PHONE, SOFT}
    # Refreshing an existing contact is still fine at the cap.
    assert r.register(AOR, [ContactRequest(PHONE)], call_id="a", cseq=2, expires=600, now=3).ok


def test_contact_cap_replace_oldest_policy() -> None:
    r = _reg(max_contacts_per_aor=2)
    r.register(AOR, [ContactRequest(PHONE)], call_id="a", cseq=1, expires=600, now=0)
    r.register(AOR, [ContactRequest(SOFT)], call_id="b", cseq=1, expires=600, now=1)
    res = r.register(AOR, [ContactRequest("sip:third@h")], call_id="c", cseq=1, expires=600, now=2)
    assert res.ok
    assert [b.contact for b in res.removed] == [PHONE]
    assert {c.uri for c in res.contacts} == {SOFT, "sip:third@h"}
    # A single request with more new contacts than the cap cannot be satisfied.
    many = [ContactRequest(f"sip:{i}@h") for i in range(3)]
    assert r.register(AOR, many, call_id="d", cseq=1, expires=600, now=3).status_code == 403


def test_contact_key_normaliser_is_used() -> None:
    r = _reg(contact_key=lambda uri: uri.strip().lower())
    r.register(AOR, [ContactRequest("sip:A@H")], call_id="a", cseq=1, expires=600, now=0)
    res = r.register(AOR, [ContactRequest("sip:a@h")], call_id="a", cseq=2, expires=0, now=1)
    assert res.contacts == ()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),  # contact
            st.sampled_from([0, 60, 120, 600]),  # expires
            st.sampled_from(["x", "y"]),  # call-id
            st.integers(1, 5),  # cseq
            st.integers(0, 200),  # time step
        ),
        max_size=25,
    )
)
def test_store_matches_naive_model(ops: list[tuple[str, int, str, int, int]]) -> None:
    r = _reg(max_contacts_per_aor=10)
    model: dict[str, tuple[float, str, int]] = {}  # contact -> (expires_at, call_id, cseq)
    now = 0.0
    removed_total = 0
    for contact, expires, call_id, cseq, step in ops:
        now += step
        expired_model = [c for c, v in model.items() if v[0] <= now]
        got = r.expire(now)
        assert sorted(b.contact for b in got) == sorted(expired_model)
        for c in expired_model:
            del model[c]
        removed_total += len(got)
        res = r.register(
            AOR, [ContactRequest(contact)], call_id=call_id, cseq=cseq, expires=expires, now=now
        )
        stored = model.get(contact)
        if stored is not None and stored[1] == call_id and cseq <= stored[2]:
            assert res.status_code == 500
        else:
            assert res.status_code == 200
            if expires == 0:
                model.pop(contact, None)
            else:
                model[contact] = (now + expires, call_id, cseq)
        assert {c.uri: c.expires_s for c in res.contacts if res.ok} == (
            {c: int(v[0] - now) for c, v in model.items()} if res.ok else {}
        )
        expected_next = min((v[0] for v in model.values()), default=None)
        assert r.next_expiry() == expected_next
