"""Allot's own schemathesis checks (loaded by ops/fuzz.sh through SCHEMATHESIS_HOOKS).

allot_authorization: with the token of one role (ALLOT_FUZZ_ROLE), an operation whose `x-allot-roles` does not
name that role must never succeed (2xx); and no body may carry the marker of an organisation the token is not
of (ALLOT_FUZZ_FOREIGN, comma-separated), whatever the status.
"""
import os

import schemathesis

ROLE = os.environ.get("ALLOT_FUZZ_ROLE", "")
FOREIGN = [m for m in os.environ.get("ALLOT_FUZZ_FOREIGN", "").split(",") if m]


@schemathesis.check
def allot_authorization(ctx, response, case):
    raw = case.operation.definition.raw
    roles = raw.get("x-allot-roles")
    if roles is not None and ROLE and ROLE not in roles and 200 <= response.status_code < 300:
        raise AssertionError(
            f"{case.operation.label} answered {response.status_code} to a {ROLE} token; it is for {', '.join(roles)}"
        )
    text = response.text or ""
    for marker in FOREIGN:
        if marker in text:
            raise AssertionError(f"{case.operation.label} showed '{marker}' (another organisation's) to a {ROLE} token")
    return None
