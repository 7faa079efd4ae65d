"""Signature schemes: known answers computed elsewhere, forgeries, replays, rotation, lookup."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr

from prefect_scenario.errors import ScenarioConfigError
from prefect_scenario.webhooks.signatures import (
    MALFORMED_HEADERS,
    MISMATCH,
    MISSING_HEADERS,
    SCHEME_NAMES,
    STALE,
    HmacSha256Hex,
    SignatureError,
    SignatureScheme,
    StandardWebhooks,
    scheme_named,
)

# The example of the Standard Webhooks reference libraries (svix's README and test suite): an
# answer computed by another implementation, and re-checked with `openssl dgst -sha256 -mac HMAC`.
SVIX_SECRET = SecretStr("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
SVIX_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SVIX_TIMESTAMP = 1614265330
SVIX_BODY = b'{"test": 2432232314}'
SVIX_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

# printf '%s' "$HEX_BODY" | openssl dgst -sha256 -hmac 'whsec_c2VjcmV0' -hex
HEX_SECRET = SecretStr("whsec_c2VjcmV0")
HEX_BODY = b'{"id":"dlv_1","type":"generation.completed"}'
HEX_SIGNATURE = "61e4c58be43aa9b2ca604d0daf4a86f6c19aafa219f6b305cfb70c42490cdfcd"

OTHER_SECRET = SecretStr("whsec_" + base64.b64encode(b"another key entirely").decode())


def at(moment: float) -> StandardWebhooks:
    return StandardWebhooks(tolerance_seconds=300, clock=lambda: moment)


def svix_headers(signature: str = SVIX_SIGNATURE, timestamp: int = SVIX_TIMESTAMP) -> dict[str, str]:
    return {"webhook-id": SVIX_ID, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def refused(scheme: SignatureScheme, headers: dict[str, str], body: bytes, secret: SecretStr) -> str:
    with pytest.raises(SignatureError) as caught:
        scheme.verify(headers, body, secret)
    return caught.value.reason


def test_standard_webhooks_known_answer() -> None:
    scheme = at(SVIX_TIMESTAMP)
    assert scheme.signature(SVIX_SECRET, SVIX_ID, SVIX_TIMESTAMP, SVIX_BODY) == SVIX_SIGNATURE
    assert scheme.verify(svix_headers(), SVIX_BODY, SVIX_SECRET) == SVIX_ID
    assert scheme.sign(SVIX_SECRET, SVIX_BODY, delivery_id=SVIX_ID) == svix_headers()


def test_header_names_are_case_insensitive() -> None:
    headers = {name.upper(): value for name, value in svix_headers().items()}
    assert at(SVIX_TIMESTAMP).verify(headers, SVIX_BODY, SVIX_SECRET) == SVIX_ID


def test_a_wrong_key_a_tampered_body_or_id_do_not_match() -> None:
    scheme = at(SVIX_TIMESTAMP)
    assert refused(scheme, svix_headers(), SVIX_BODY, OTHER_SECRET) == MISMATCH
    assert refused(scheme, svix_headers(), b'{"test": 2432232315}', SVIX_SECRET) == MISMATCH
    assert refused(scheme, svix_headers(), SVIX_BODY + b" ", SVIX_SECRET) == MISMATCH
    assert refused(scheme, {**svix_headers(), "webhook-id": "msg_other"}, SVIX_BODY, SVIX_SECRET) == MISMATCH
    # The timestamp is signed: moving it, even within the tolerance, breaks the signature.
    assert refused(scheme, svix_headers(timestamp=SVIX_TIMESTAMP + 1), SVIX_BODY, SVIX_SECRET) == MISMATCH


def test_stale_and_future_timestamps_are_refused_even_when_signed() -> None:
    assert at(SVIX_TIMESTAMP + 300).verify(svix_headers(), SVIX_BODY, SVIX_SECRET) == SVIX_ID
    assert at(SVIX_TIMESTAMP - 300).verify(svix_headers(), SVIX_BODY, SVIX_SECRET) == SVIX_ID
    assert refused(at(SVIX_TIMESTAMP + 301), svix_headers(), SVIX_BODY, SVIX_SECRET) == STALE
    assert refused(at(SVIX_TIMESTAMP - 301), svix_headers(), SVIX_BODY, SVIX_SECRET) == STALE
    tight = StandardWebhooks(tolerance_seconds=10, clock=lambda: SVIX_TIMESTAMP + 11)
    assert refused(tight, svix_headers(), SVIX_BODY, SVIX_SECRET) == STALE


def test_any_matching_entry_of_several_passes() -> None:
    scheme = at(SVIX_TIMESTAMP)
    forged = "v1," + base64.b64encode(b"\0" * 32).decode()
    rotated = f"{forged} v1a,c29tZXRoaW5n v2,{SVIX_SIGNATURE[3:]} {SVIX_SIGNATURE}"
    assert scheme.verify(svix_headers(rotated), SVIX_BODY, SVIX_SECRET) == SVIX_ID
    # The right digest under another version, or entries that are not base64: no match.
    wrong_version = f"v1a,{SVIX_SIGNATURE[3:]} v1,not*base64 v1"
    assert refused(scheme, svix_headers(wrong_version), SVIX_BODY, SVIX_SECRET) == MISMATCH
    assert refused(scheme, svix_headers(forged), SVIX_BODY, SVIX_SECRET) == MISMATCH


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_headers(missing: str) -> None:
    headers = {name: value for name, value in svix_headers().items() if name != missing}
    assert refused(at(SVIX_TIMESTAMP), headers, SVIX_BODY, SVIX_SECRET) == MISSING_HEADERS
    assert refused(at(SVIX_TIMESTAMP), {**svix_headers(), missing: "  "}, SVIX_BODY, SVIX_SECRET) == (
        MISSING_HEADERS
    )


def test_a_timestamp_that_is_not_unix_seconds_is_malformed() -> None:
    headers = {**svix_headers(), "webhook-timestamp": "2021-02-25T15:02:10Z"}
    assert refused(at(SVIX_TIMESTAMP), headers, SVIX_BODY, SVIX_SECRET) == MALFORMED_HEADERS


def test_reasons_never_carry_the_secret_or_a_signature() -> None:
    with pytest.raises(SignatureError) as caught:
        at(SVIX_TIMESTAMP).verify(svix_headers(), SVIX_BODY + b"x", SVIX_SECRET)
    text = f"{caught.value} {caught.value!r}"
    assert SVIX_SECRET.get_secret_value() not in text
    assert SVIX_SIGNATURE[3:] not in text
    assert SVIX_SECRET.get_secret_value() not in repr(at(0))


def test_a_secret_that_is_not_whsec_base64_is_a_configuration_error() -> None:
    scheme = StandardWebhooks()
    scheme.check_secret(SVIX_SECRET)
    scheme.check_secret(SecretStr("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))  # prefix is optional
    for bad in ("whsec_not base64!", "whsec_", ""):
        with pytest.raises(ScenarioConfigError) as caught:
            scheme.check_secret(SecretStr(bad))
        assert "not base64!" not in str(caught.value)
    with pytest.raises(ValueError, match="tolerance"):
        StandardWebhooks(tolerance_seconds=-1)


def test_hmac_sha256_hex_known_answer_and_forgeries() -> None:
    scheme = HmacSha256Hex()
    assert scheme.signature(HEX_SECRET, HEX_BODY) == HEX_SIGNATURE
    assert scheme.verify({"x-scenario-signature": HEX_SIGNATURE}, HEX_BODY, HEX_SECRET) is None
    assert scheme.verify({"X-Scenario-Signature": HEX_SIGNATURE.upper()}, HEX_BODY, HEX_SECRET) is None
    assert refused(scheme, {"x-scenario-signature": HEX_SIGNATURE}, HEX_BODY, OTHER_SECRET) == MISMATCH
    assert refused(scheme, {"x-scenario-signature": HEX_SIGNATURE}, HEX_BODY[:-1], HEX_SECRET) == MISMATCH
    assert refused(scheme, {}, HEX_BODY, HEX_SECRET) == MISSING_HEADERS
    # A Standard Webhooks delivery is not a valid hex one, and the reverse.
    assert refused(scheme, svix_headers(), SVIX_BODY, SVIX_SECRET) == MISSING_HEADERS
    assert refused(at(0), {"x-scenario-signature": HEX_SIGNATURE}, HEX_BODY, HEX_SECRET) == MISSING_HEADERS
    with pytest.raises(ScenarioConfigError, match="empty"):
        scheme.check_secret(SecretStr(""))


def test_schemes_by_name() -> None:
    assert SCHEME_NAMES == ("standard-webhooks", "hmac-sha256-hex")
    standard = scheme_named("standard-webhooks", tolerance_seconds=60)
    assert isinstance(standard, StandardWebhooks)
    assert standard.tolerance_seconds == 60
    assert isinstance(scheme_named("hmac-sha256-hex"), HmacSha256Hex)
    for scheme in (standard, HmacSha256Hex()):
        assert isinstance(scheme, SignatureScheme)
    with pytest.raises(ScenarioConfigError, match="standard-webhooks, hmac-sha256-hex"):
        scheme_named("ed25519")
