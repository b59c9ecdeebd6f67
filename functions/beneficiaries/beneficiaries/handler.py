"""Beneficiaries API: parse → service → reply. The ID number is only ever in a POST body."""


import uuid
from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Path

from beneficiaries import service
from beneficiaries.models import Beneficiary, VerifyReply, VerifyRequest
from smartpay import coldstart, snapstart
from smartpay.api import api_handler, make_resolver, require_scope
from smartpay.observability import metrics, tracer

MAX_BODY_BYTES = 16 * 1024

app = make_resolver()

#: A full match names the beneficiary: its profile is the next call (a no-match names no one).
VERIFY_LINKS = {"GetBeneficiary": {"operationId": "get_beneficiary_api_v1_beneficiaries__beneficiary_id__get",
                                   "parameters": {"beneficiary_id": "$response.body#/beneficiary/beneficiary_id"}}}


@app.get("/api/v1/beneficiaries/<beneficiary_id>", summary="A beneficiary's masked profile and open vouchers")
@tracer.capture_method
def get_beneficiary(beneficiary_id: Annotated[uuid.UUID, Path()]) -> Beneficiary:
    require_scope(app, "beneficiaries:read")
    metrics.add_metric(name="BeneficiaryLookups", unit="Count", value=1)
    return service.get(beneficiary_id)


@app.post("/api/v1/beneficiaries/verify",
          summary="Verify a beneficiary by ID number (in the body); unless every supplied field matches, "
                  'the reply is only {"match": false}',
          responses={200: {"description": 'The masked profile when every supplied field matches, else only '
                                          '{"match": false}', "links": VERIFY_LINKS}})
@tracer.capture_method
def verify(request: VerifyRequest) -> VerifyReply:
    require_scope(app, "beneficiaries:read")
    result = service.verify(request)
    metrics.add_metric(name="BeneficiaryVerifications", unit="Count", value=1)
    metrics.add_metric(name="BeneficiaryMatches" if result.match else "BeneficiaryNoMatches", unit="Count", value=1)
    return result


lambda_handler = api_handler(app, max_body_bytes=MAX_BODY_BYTES)


# SnapStart: primed before the snapshot, connections and secrets renewed after each restore.
snapstart.register(snapstart.prime_modules("aws_lambda_powertools.utilities.parameters", "psycopg_pool"))
coldstart.end()  # the init is over: freeze what it loaded, collector back on (smartpay.coldstart)
