"""Subject-token and KV-key escaping: any name maps to a valid token and back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wrtci.proto.subjects import Priority, PriorityClass, Subjects
from wrtci.proto.tokens import (
    TokenError,
    decode_key_part,
    decode_token,
    encode_key_part,
    encode_token,
    is_valid_kv_key_part,
    is_valid_token,
)

any_name = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"),
                   max_size=64)
"""Names never hold NUL (PostgreSQL text cannot): decoding refuses a token that does."""


@given(any_name)
def test_any_name_is_one_valid_subject_token_and_back(name: str) -> None:
    token = encode_token(name)
    assert is_valid_token(token)
    assert decode_token(token) == name


def test_a_token_that_decodes_to_nul_is_refused() -> None:
    with pytest.raises(TokenError):
        decode_token(encode_token("a\x00b"))
    with pytest.raises(TokenError):
        decode_key_part(encode_key_part("\x00"))


@given(any_name)
def test_any_name_is_a_valid_kv_key_part_and_back(name: str) -> None:
    part = encode_key_part(name)
    assert is_valid_kv_key_part(part)
    assert decode_key_part(part) == name


@given(any_name, any_name)
def test_escaping_is_injective(a: str, b: str) -> None:
    if a != b:
        assert encode_token(a) != encode_token(b)
        assert encode_key_part(a) != encode_key_part(b)


@pytest.mark.parametrize(
    "name",
    ["ath79/generic/tplink_archer-c7-v2", "mediatek/mt7622/linksys_e8450-ubi", "8dev_carambola2"],
)
def test_openwrt_names_stay_readable(name: str) -> None:
    assert encode_token(name) == name


def test_profile_with_comma_and_dots() -> None:
    assert encode_token("linksys,e8450") == "linksys,e8450"
    assert encode_token("x86/64/generic.v2") == "x86/64/generic~2Ev2"
    assert encode_key_part("linksys,e8450") == "linksys=2Ce8450"


@pytest.mark.parametrize("bad", ["", "a.b", "~G1", "~4", "a b", "~FF"])
def test_decode_rejects_what_encode_never_produces(bad: str) -> None:
    with pytest.raises(TokenError):
        decode_token(bad)


def test_job_subjects_round_trip() -> None:
    subjects = Subjects("wrtci")
    subject = subjects.job(Priority.PR, "ramips/mt7621/xiaomi,mi-router 4a")
    assert subject.split(".")[:3] == ["wrtci", "job", "9"]
    assert len(subject.split(".")) == 4
    assert subjects.parse_job(subject) == (Priority.PR, "ramips/mt7621/xiaomi,mi-router 4a")


def test_consumer_names_are_unique_and_legal() -> None:
    subjects = Subjects("wrtci")
    a = subjects.job_consumer(5, "ath79/generic/a.b")
    b = subjects.job_consumer(5, "ath79/generic/a_b")
    assert a != b
    for name in (a, b):
        assert not any(c in name for c in "./\\*> ")


def test_lab_subjects_scope_and_parse() -> None:
    subjects = Subjects("wrtci")
    subject = subjects.lab_event("lab.aparcar", "job.finished")
    assert subject == "wrtci.lab.lab~2Eaparcar.events.job.finished"
    assert subjects.lab_of_subject(subject) == "lab.aparcar"
    assert subjects.log_chunk("lab.aparcar", "job-1").startswith("wrtci.lab.lab~2Eaparcar.logs.")


def test_priority_order_and_classes() -> None:
    assert [p.value for p in sorted(Priority, reverse=True)] == [9, 8, 5, 3, 2]
    assert PriorityClass("snapshot").priority is Priority.SNAPSHOT


@pytest.mark.parametrize("prefix", ["", "Wrtci", "a.b", "a>b", "x" * 40])
def test_invalid_prefix_rejected(prefix: str) -> None:
    with pytest.raises(ValueError):
        Subjects(prefix)
