"""What the audit trail records (AUD-01, AUD-02, AUD-06) and what the schema never stores about a
patient (DIB-06): the MUST requirements that had no test citing them (issue 18)."""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa
from sqlalchemy import inspect, select

from allocator.models import AuditEvent, LoginSession
from allocator.models.base import Base
from allocator.permissions import Scope
from allocator.services import auth
from allocator.services.accounts import user_admin, users
from allocator.services.context import ServiceContext
from allocator.services.errors import TooManyRequests, Unauthenticated, ValidationFailed
from allocator.services.subjects import corrections, randomize
from tests.reporting import build
from tests.support import CLI_ACTOR, ELIGIBLE, GOOD_PASSWORD, Clock, load_ifn, make_user, ready_trial

ALL = Scope(all_sites=True, site_ids=frozenset())
HERE = auth.Client(address="192.0.2.44", user_agent="pytest-aud06", request_id="req-aud06")


def _actions(ctx: ServiceContext) -> list[AuditEvent]:
    with ctx.db.reading() as s:
        return list(s.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars())


# -- AUD-01: every kind of GCP-relevant record the requirement names leaves an entry -------------

# The kinds AUD-01 lists, and the audit actions that record them. Exports and reprints are checked
# where they are made (test_reports.py, test_codebreak.py, test_exports.py).
AUD01_KINDS = {
    "randomisation": {"subject.randomized"},
    "randomisation in error": {"subject.randomized_in_error"},
    "correction": {"subject.stratum_corrected"},
    "kit assignment and status change": {"dispensation.dispensed", "kit.replaced", "kit.status_changed"},
    "dispensing refused": {"dispensation.refused"},
    "administration": {"administration.recorded"},
    "unblinding": {"unblinding.emergency", "unblinding.pharmacovigilance", "unblinding.offline_registered"},
    "list change": {"list.generated", "list.approved", "list.activated"},
    "configuration change": {"trial.definition_loaded", "site.activated", "trial.status_changed"},
    "user and role administration": {"user.created", "role.granted"},
    "print": {"document.printed", "code_break.generated"},
}


@pytest.mark.req("AUD-01")
def test_every_kind_of_record_in_a_trials_history_is_audited(ctx: ServiceContext, clock: Clock) -> None:
    build(ctx, clock)  # a history with every kind of record (tests/reporting.py)
    entries = _actions(ctx)
    seen = {e.action for e in entries}
    missing = {kind: sorted(actions - seen) for kind, actions in AUD01_KINDS.items() if actions - seen}
    assert missing == {}
    # computer-generated and time-stamped: a server UTC time and the software version on each entry
    for entry in entries:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", entry.at), entry.at
        assert entry.software_version and entry.request_id


# -- AUD-02: who, what, when, why; old and new values; nothing overwritten ------------------------

WHO_WHAT_WHEN = (
    "chain",
    "seq",
    "at",
    "actor_username",
    "actor_name",
    "actor_role",
    "action",
    "object_type",
    "object_id",
    "request_id",
    "software_version",
    "prev_hash",
    "hash",
)


@pytest.mark.req("AUD-02")
def test_who_what_and_when_are_not_null_in_the_schema(ctx: ServiceContext) -> None:
    with ctx.db.reading() as s:
        columns = {c["name"]: c for c in inspect(s.connection()).get_columns("audit_event")}
    assert [name for name in WHO_WHAT_WHEN if columns[name]["nullable"]] == []


@pytest.mark.req("AUD-02")
def test_a_field_changed_twice_shows_both_transitions_with_who_and_why(ctx: ServiceContext) -> None:
    ready = ready_trial(ctx)
    request = randomize.RandomizationRequest(
        site="P1",
        screening_number="P1-0001",
        eligibility=dict(ELIGIBLE),
        strata={"admission_cause": "septic"},
    )
    number = randomize.randomize(ctx, ready.investigator, "IFNG-PAIS", request, ALL).subject_number

    def correct(level: str, reason: str) -> None:
        corrections.correct_stratum(
            ctx,
            ready.investigator,
            "IFNG-PAIS",
            number,
            factor="admission_cause",
            level=level,
            reason=reason,
            scope=ALL,
            agreement_ref=None,
            is_investigator=True,
        )

    with pytest.raises(ValidationFailed) as caught:
        correct("non_septic", "   ")  # a change without a reason is refused and writes nothing
    assert [e.field for e in caught.value.errors] == ["reason"]
    correct("non_septic", "trauma, not sepsis")
    correct("septic", "sepsis confirmed by culture")
    history = [e for e in _actions(ctx) if e.action == "subject.stratum_corrected"]
    assert [
        (json.loads(e.old_values or "{}"), json.loads(e.new_values or "{}")["admission_cause"])
        for e in history
    ] == [
        ({"admission_cause": "septic"}, "non_septic"),
        ({"admission_cause": "non_septic"}, "septic"),
    ]
    assert [e.reason for e in history] == ["trauma, not sepsis", "sepsis confirmed by culture"]
    for entry in history:
        assert (entry.actor_username, entry.actor_role, entry.site_code, entry.object_id) == (
            ready.investigator.username,
            ready.investigator.role,
            "P1",
            number,
        )
        assert entry.actor_name == ready.investigator.name


# -- AUD-06: account events and access events ----------------------------------------------------


@pytest.mark.req("AUD-06")
def test_account_and_access_events_are_logged(ctx: ServiceContext) -> None:
    load_ifn(ctx)
    created = make_user(ctx, "inv", "investigator", site="P1")
    auth.change_password(ctx, created.user_id, created.one_time_password, GOOD_PASSWORD, GOOD_PASSWORD, HERE)
    signed_in = auth.login(ctx, "inv", GOOD_PASSWORD, HERE)
    auth.end_session(ctx, signed_in.session_token, "logout", HERE)
    for _ in range(ctx.settings.login_max_failures_per_account):
        with pytest.raises(Unauthenticated):
            auth.login(ctx, "inv", "not the password!", HERE)
    with pytest.raises(TooManyRequests):
        auth.login(ctx, "inv", GOOD_PASSWORD, HERE)
    users.grant_role(ctx, CLI_ACTOR, "inv", users.RoleRequest("nurse", "IFNG-PAIS", "P2", reason="covers P2"))
    user_admin.set_active(ctx, CLI_ACTOR, "inv", False, "left the hospital")

    entries = _actions(ctx)
    actions = [e.action for e in entries]
    for expected in (
        "user.created",
        "role.granted",
        "user.password_changed",
        "auth.login",
        "auth.logout",
        "auth.login_failed",
        "auth.locked_out",
        "user.deactivated",
    ):
        assert expected in actions, expected
    failures = [e for e in entries if e.action == "auth.login_failed"]
    assert len(failures) == ctx.settings.login_max_failures_per_account + 1
    assert {json.loads(e.new_values or "{}")["cause"] for e in failures} == {"wrong password", "locked out"}
    assert {e.object_id for e in failures} == {"inv"}
    login = next(e for e in entries if e.action == "auth.login")
    assert (login.actor_username, login.request_id) == ("inv", "req-aud06")
    with ctx.db.reading() as s:
        session_row = s.execute(select(LoginSession)).scalar_one()
    assert (session_row.address, session_row.user_agent) == ("192.0.2.44", "pytest-aud06")
    # Failed authorisation attempts (auth.permission_denied) are checked in tests/web/test_shell.py.


# -- DIB-06: no column for a patient's identity --------------------------------------------------

# Words that name a person's identity or a direct identifier (French and English).
IDENTIFYING = re.compile(
    r"(^|_)(nom|prenom|surname|first_?name|last_?name|initials?|birth|dob|nir|ssn|insee|ipp|mrn|"
    r"hospital_id|patient_name|address|phone|email)(_|$)"
)
# Staff names are required for attributability (AUD-02): `*_by_name`, the audit actor and the
# signer. Sites and files have names. Nothing else may hold a name.
NAMED_THINGS = {
    ("app_user", "full_name"),
    ("app_user", "username"),
    ("app_user", "email"),
    ("audit_event", "actor_name"),
    ("audit_event", "actor_username"),
    ("signature", "printed_name"),
    ("signature", "username"),
    ("login_session", "address"),
    ("login_throttle", "address"),
    ("notification", "email_to"),  # a member of staff's address
    ("notification", "email_error"),
}


def identity_columns(metadata: sa.MetaData) -> list[str]:
    """Columns that could hold a person's identity, other than the staff names listed above."""
    found = []
    for table in metadata.tables.values():
        for column in table.columns:
            name = column.name.lower()
            if (table.name, name) in NAMED_THINGS or name == "by_name" or name.endswith("_by_name"):
                continue
            if IDENTIFYING.search(name) or (
                name.endswith("name") and table.name.startswith(("subject", "screening"))
            ):
                found.append(f"{table.name}.{name}")
    return found


@pytest.mark.req("DIB-06")
def test_no_table_has_a_column_for_a_patients_identity() -> None:
    assert identity_columns(Base.metadata) == []


@pytest.mark.req("DIB-06")
def test_the_schema_check_catches_a_planted_identity_column() -> None:
    planted = sa.MetaData()
    sa.Table("subject_extra", planted, sa.Column("id", sa.Integer), sa.Column("date_of_birth", sa.Date))
    sa.Table("subject_more", planted, sa.Column("patient_name", sa.Text), sa.Column("nir", sa.Text))
    sa.Table("screening_x", planted, sa.Column("name", sa.Text))
    assert identity_columns(planted) == [
        "subject_extra.date_of_birth",
        "subject_more.patient_name",
        "subject_more.nir",
        "screening_x.name",
    ]
