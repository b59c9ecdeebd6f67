"""PII never reaches a reply that does not need it, nor any log line."""

import io
import json
import logging

from smartpay.masking import mask_id_number, mask_msisdn, mask_name, scrub, scrub_text


def test_maskers_keep_only_what_identifies_nothing() -> None:
    assert mask_id_number("85010112345") == "*******2345"
    assert mask_msisdn("+264811234567") == "+264*****4567"
    assert mask_name("Ndapewa van Wyk") == "N****** v** W**"


def test_scrub_masks_by_key_and_by_pattern() -> None:
    record = {"id_number": "85010112345", "nested": {"msisdn": "+264811234567", "full_name": "Anna Angula"},
              "message": "lookup of 85010112345 from +264851234567"}
    masked = json.dumps(scrub(record))
    assert "85010112345" not in masked and "811234567" not in masked and "851234567" not in masked
    assert "Anna" not in masked
    assert "*******2345" in masked


def test_scrub_text_leaves_uuids_and_amounts_alone() -> None:
    text = "voucher 3fa85f64-5717-4562-b3fc-2c963f66afa6 amount 140000 at 2026-11-26T10:00:00Z"
    assert scrub_text(text) == text


def test_scrub_text_keeps_uuids_whose_last_group_is_all_digits() -> None:
    """~0.8 % of UUIDs end in 11+ decimal digits; masked, that voucher id could not be found in the logs."""
    for voucher_id in ("b31b7241-63a6-4bee-a90e-b85010112345", "3fa85f64-5717-4562-b3fc-285010112345",
                       "3FA85F64-5717-4562-B3FC-850101123456"):
        text = f"voucher {voucher_id} for 85010112345, phone +264811234567"
        assert scrub_text(text) == f"voucher {voucher_id} for *******2345, phone +264*****4567"
        assert scrub({"voucher_ids": [voucher_id]}) == {"voucher_ids": [voucher_id]}
    # Not a UUID (a digit run glued to one): still masked.
    assert scrub_text("x3fa85f64-5717-4562-b3fc-85010112345") != "x3fa85f64-5717-4562-b3fc-85010112345"
    assert scrub_text("85010112345-5717") == "*******2345-5717"


def test_logger_masks_every_line(monkeypatch) -> None:
    from smartpay.observability import logger

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    try:
        logger.info("verify 85010112345", extra={"msisdn": "+264811234567", "last_name": "Nangolo"})
        logger.append_keys(id_number="90010154321")
        logger.warning({"payload": {"beneficiary_id_number": "70010154321"}})
        # Patterns anywhere in the record (lists, nested dicts, odd keys) are caught on the rendered line.
        logger.info("batch", extra={"ids": ["60010154321", {"note": "call +264851230000"}], "x": {"y": "50010154321"}})
        # JSON escapes ending in a digit right before a number (\u0001, \u00e9) do not hide it.
        logger.info("escapes", extra={"a": "\x0140010154321", "b": "é30010154321", "c": "\x01264811230001"})
    finally:
        logger.remove_keys(["id_number"])
        logger.removeHandler(handler)
    out = stream.getvalue()
    for secret in ("85010112345", "811234567", "Nangolo", "90010154321", "70010154321", "60010154321",
                   "851230000", "50010154321", "40010154321", "30010154321", "811230001"):
        assert secret not in out
    assert "*******2345" in out and "N******" in out


def test_untraced_containers_never_import_the_xray_sdk() -> None:
    """Tracer decorators still work when tracing is off, without paying for the X-Ray SDK."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from smartpay.observability import tracer\n"
        "@tracer.capture_method\n"
        "def f(x):\n    return x + 1\n"
        "@tracer.capture_lambda_handler\n"
        "def h(e, c):\n    return f(1)\n"
        "assert h({}, None) == 2\n"
        "print('aws_xray_sdk.core' in sys.modules, 'botocore.session' in sys.modules)\n"
    )
    env = {"POWERTOOLS_TRACE_DISABLED": "true", "PATH": "", "AWS_DEFAULT_REGION": "af-south-1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["False", "False"]


def _real_ids() -> list[str]:
    """Ids in the shapes this system makes them, plus ones whose random part holds digit runs."""
    import secrets
    import uuid

    ids = []
    for _ in range(300):
        ids += [str(uuid.uuid4()), f"msg_{uuid.uuid4().hex}", f"dlv_{uuid.uuid4().hex[:20]}",
                f"reconcile-{uuid.uuid4()}-{uuid.uuid4().hex[:8]}"]
        ids.append(f"msg_{secrets.token_urlsafe(18)}")  # smartpay.signing's webhook ids
    ids += ["msg_e22e85010112345f3457f0a1", "msg_26481123456712345678", "dlv_85010112345abcdef012",
            "msg_Zx-85010112345_k2", "dlv_26481123456700000000", "3fa85f64-5717-4562-b3fc-285010112345"]
    return ids


def test_ids_stay_whole_in_text_and_fields() -> None:
    """Webhook ids (msg_…), delivery ids (dlv_…), request ids and UUIDs are never masked, even
    when their random part holds 11 digits or +264… (an operator must be able to search for them)."""
    for value in _real_ids():
        for text in (value, f"delivery {value} applied", f'"webhook_id":"{value}"', f"id={value}."):
            assert scrub_text(text) == text, value
        assert scrub({"webhook_id": value, "delivery_id": value, "request_id": value}) == {
            "webhook_id": value, "delivery_id": value, "request_id": value}


def test_names_in_free_text_and_tracebacks_are_masked() -> None:
    row = ("Failing row contains (3fa85f64-5717-4562-b3fc-2c963f66afa6, 85010112345, Tuyeni, Haufiku, "
           "+264811234567, Oshana, old_age, active, 2026-11-28 07:00:00+00).")
    masked = scrub_text(row)
    for secret in ("85010112345", "Tuyeni", "Haufiku", "811234567"):
        assert secret not in masked
    assert "3fa85f64-5717-4562-b3fc-2c963f66afa6" in masked and "T*****" in masked
    for text, secret in (("full_name='Anna Angula' rejected", "Angula"), ('{"last_name": "Nangolo"}', "Nangolo"),
                         ("first_name=\\\"Selma\\\"", "Selma"), ("[type=string_type, input_value='Rauna Shilongo']",
                                                                  "Shilongo")):
        assert secret not in scrub_text(text), text


def test_logged_tracebacks_carry_no_personal_data() -> None:
    import pydantic

    from smartpay.observability import logger

    class Person(pydantic.BaseModel):
        id_number: int
        full_name: int

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    # The data arrive at run time (the traceback's frames quote source lines, not values).
    payload = json.loads('{"id_number": "85010112345x", "full_name": "Ndapewa Kambonde"}')
    detail = json.loads('"Failing row contains (b31b7241-63a6-4bee-a90e-b85010112345, 70010154321, Loide, '
                        'Uusiku, +264851234567)"')
    try:
        try:
            Person.model_validate(payload)
        except pydantic.ValidationError:
            logger.exception("bad payload for voucher 3fa85f64-5717-4562-b3fc-285010112345 via msg_26481123456712345678")
        try:
            raise ValueError(detail)
        except ValueError:
            logger.exception("insert failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "Traceback" in out or "stack_trace" in out
    for secret in ("85010112345x", "Ndapewa", "Kambonde", "70010154321", "Loide", "Uusiku", "851234567"):
        assert secret not in out, secret
    for kept in ("3fa85f64-5717-4562-b3fc-285010112345", "msg_26481123456712345678",
                 "b31b7241-63a6-4bee-a90e-b85010112345"):
        assert kept in out
