"""Schemathesis hooks for test_openapi.py (loaded through SCHEMATHESIS_HOOKS).

A request's "timeout_ms" is its queue deadline: a valid request with a deadline of a
few milliseconds is answered 504 deadline_exceeded by contract (README, openapi.json),
which schemathesis counts as a server error. Generated deadlines under 5 s are raised
to 5 s so that the fuzz exercises everything else; test_api.py checks the 504 itself.
"""
import schemathesis

MIN_DEADLINE_MS = 5000


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    body = case.body
    if isinstance(body, dict):
        t = body.get("timeout_ms")
        if isinstance(t, int) and not isinstance(t, bool) and 1 <= t < MIN_DEADLINE_MS:
            body["timeout_ms"] = MIN_DEADLINE_MS
