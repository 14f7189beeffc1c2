"""What to do: the advice a person reads after what went wrong, beside a row (its ``error``),
under the summary, in the dashboard's sub_code table or in the sentence that stops a run.

Kept apart from the decisions that choose them (``steps``, ``reasons``, ``failures``,
``triage``, the journal), so that every text a person reads about what to do next is in one
place, in one voice.
"""

from __future__ import annotations

from importer.i18n import N_, _
from importer.protocol import AnswerKind, Reply

# What to do about an unknown row: decide in the check sheet (or resend all with a flag).
# These are kept in the journal in English and shown in the run's language (``i18n.shown``).
CHECK_ADVICE = N_(
    "check it on the platform, then write done (it is there) or resend (it is not) in the "
    "decision column of the check sheet and run that sheet with --sheet check "
    "(or rerun with --resend-unknown)"
)
EARLIER_LOST = N_(
    "an earlier attempt's answer was lost, so the platform may have acted on it: {advice}"
).format(advice=CHECK_ADVICE)
UNKNOWN_ADVICE = N_("the platform may have acted on it: {advice}").format(advice=CHECK_ADVICE)

RERUN_ADVICE = N_("check the data, then rerun (the journal resumes)")


_ADVICE = {
    "9": N_("the gateway refused the HTTP method; check --gateway"),
    "11": N_(
        "the app lacks permission for this API: apply for its permission package in the TOP console"
    ),
    "12": N_("the user has not authorised this API: get a session key with the right scope"),
    "13": N_("the partner lacks permission for this API"),
    "21": N_("the method parameter is missing; check the API spec"),
    "22": N_("the gateway does not know this method; check --api and that the app may call it"),
    "23": N_("the response format was refused"),
    "24": N_("the signature is missing"),
    "25": N_(
        "the signature is wrong: check TOP_APP_SECRET belongs to this app key, and --sign-method"
    ),
    "26": N_("this API needs a session: set TOP_SESSION"),
    "27": N_("the session key is invalid or expired: set a fresh TOP_SESSION"),
    "28": N_("the app key is missing: set TOP_APP_KEY"),
    "29": N_("the app key is unknown: check TOP_APP_KEY"),
    "30": N_("the timestamp is missing"),
    "31": N_("the timestamp was refused: check this machine's clock (the gateway allows ~10 min)"),
    "32": N_("the API version is missing"),
    "33": N_("the API version is wrong"),
    "34": N_("the API version is not supported"),
}


def advice(reply: Reply) -> str:
    """What the user should do about a fatal answer (a sentence fragment, in English: ``_`` it
    where it is shown)."""
    if reply.code in _ADVICE:
        return _ADVICE[reply.code]
    if reply.kind is AnswerKind.THROTTLED:
        return N_("the app's quota is spent; rerun after the ban (a rerun resumes), or lower --qps")
    return N_("check the gateway, the credentials and the app's permissions")


_SUB_CODE_ADVICE = (  # (prefix, what to do): the first that matches
    ("isv.missing-parameter", N_("fill the column named after the colon, then rerun")),
    ("isv.invalid-parameter", N_("fix the value the sub_msg names in those rows, then rerun")),
    ("isv.", N_("fix those rows as the sub_msg says, then rerun (the journal sends only them)")),
    ("isp.", N_("the platform's side: rerun later, the journal resumes")),
    ("accesscontrol.", N_("the app's quota: lower --qps, or rerun after the ban")),
)


def sub_code_advice(sub_code: str) -> str:
    """What to do about rows that failed with ``sub_code`` ("" when the reference is silent)."""
    text = next((text for prefix, text in _SUB_CODE_ADVICE if sub_code.startswith(prefix)), "")
    return _(text) if text else ""
