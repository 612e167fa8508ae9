"""Exports in standard formats with signed manifests (issue 17; DIB-04, DIB-07, BLD-01, BLD-08):
CDISC ODM validated against the ODM 1.3.2 schema, FHIR validated with `fhir.resources`, REDCap and
CSV against their documented headers; blinded exports of a trial with both arms carry no arm (the
crawler's leak scanner); unblinded exports exist only after the final unblinding."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.researchstudy import ResearchStudy
from fhir.resources.R4B.researchsubject import ResearchSubject
from lxml import etree
from sqlalchemy import select

from allocator import crypto, manifest
from allocator.cli import main
from allocator.models import AuditEvent
from allocator.permissions import Scope
from allocator.services import dispensing, exports, lookups, signatures
from allocator.services.closeout import state
from allocator.services.context import ServiceContext
from allocator.services.errors import Forbidden
from allocator.services.exports import redcap, tables
from allocator.services.subjects import corrections, randomize, withdrawal
from allocator.trialdef import parse_definition
from tests.conftest import FreshDatabase
from tests.leakcheck import LeakChecker, Vocabulary
from tests.support import CLI_ACTOR, ELIGIBLE, GOOD_PASSWORD, IFN_TRIAL, ReadyTrial, arm_of, ready_trial

TRIAL = "IFNG-PAIS"
ALL = Scope(all_sites=True, site_ids=frozenset())
SIGNED = signatures.SignatureRequest(password=GOOD_PASSWORD)
SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "odm" / "cdisc-odm-1.3.2" / "ODM1-3-2.xsd"
ODM = "{http://www.cdisc.org/ns/odm/v1.3}"


@dataclass
class Populated:
    ready: ReadyTrial
    arms: dict[str, str]  # subject number -> arm, for the test's eyes only
    dispensed: str
    withdrawn: str
    corrected: str


@pytest.fixture
def populated(ctx: ServiceContext) -> Populated:
    ready = ready_trial(ctx, kits_per_site=36)  # enough kits of each arm, whatever the lists drew
    results = [
        randomize.randomize(
            ctx,
            ready.investigator,
            TRIAL,
            randomize.RandomizationRequest(
                site="P1",
                screening_number=f"P1-{i:04d}",
                eligibility=ELIGIBLE,
                strata={"admission_cause": "septic"},
            ),
            ALL,
        )
        for i in range(1, 5)  # both arms: blocks of 2, 4 or 6 hold at most 3 of one arm
    ]
    arms = {r.subject_number: arm_of(ctx, r.kits[0].kit_number) for r in results}
    assert set(arms.values()) == {"A", "B"}
    first, second, third = (r.subject_number for r in results[:3])
    dispensing.dispense(
        ctx,
        ready.pharmacist,
        TRIAL,
        first,
        {"D1": results[0].kits[0].kit_number},
        scope=ALL,
        signature=SIGNED,
    )
    withdrawal.withdraw(
        ctx,
        ready.investigator,
        TRIAL,
        second,
        kind="consent_withdrawn",
        effective_date="2026-03-02",
        reason="the patient's family withdrew consent",
        scope=ALL,
        signature=SIGNED,
        agreement_ref=None,
        is_investigator=True,
    )
    corrections.correct_stratum(
        ctx,
        ready.investigator,
        TRIAL,
        third,
        factor="admission_cause",
        level="non_septic",
        reason="trauma, not sepsis",
        scope=ALL,
        agreement_ref=None,
        is_investigator=True,
    )
    return Populated(ready, arms, first, second, third)


def _checker() -> LeakChecker:
    return LeakChecker(Vocabulary.of(parse_definition(IFN_TRIAL.read_text(encoding="utf-8"))))


def _validate_odm(content: bytes) -> etree._Element:
    schema = etree.XMLSchema(etree.parse(str(SCHEMA)))
    document = etree.fromstring(content)
    schema.assertValid(document)
    return document


def _items(document: etree._Element, subject: str, event: str = "SE.RAND") -> dict[str, str]:
    node = document.find(
        f".//{ODM}SubjectData[@SubjectKey='{subject}']/{ODM}StudyEventData[@StudyEventOID='{event}']"
    )
    assert node is not None
    return {i.get("ItemOID"): i.get("Value") for i in node.iter(f"{ODM}ItemData")}


def _exported(ctx: ServiceContext, fmt: str, name: str = "export") -> exports.Export:
    return exports.export_trial(ctx, CLI_ACTOR, TRIAL, fmt, name=name)


@pytest.mark.req("DIB-04")
@pytest.mark.req("DIB-07")
@pytest.mark.req("BLD-01")
def test_the_odm_export_validates_against_the_schema_and_names_no_arm(
    ctx: ServiceContext, populated: Populated
) -> None:
    made = _exported(ctx, "odm", "ifng.xml")
    content = made.files["ifng.xml"]
    document = _validate_odm(content)
    keys = [s.get("SubjectKey") for s in document.iter(f"{ODM}SubjectData")]
    assert sorted(keys) == sorted(populated.arms)
    assert made.rows == {"subjects": 4, "doses": 12}
    dispensed = _items(document, populated.dispensed, "SE.DISP.D1")
    assert _items(document, populated.dispensed, "SE.DISP.D2")["IT.DISPSTAT"] == "allocated"
    assert dispensed["IT.DISPSTAT"] == "dispensed" and dispensed["IT.DISPDTC"].endswith("Z")
    assert _items(document, populated.withdrawn)["IT.WDKIND"] == "consent_withdrawn"
    corrected = _items(document, populated.corrected)
    assert (corrected["IT.STRAT.admission_cause"], corrected["IT.STRATCOR.admission_cause"]) == (
        "septic",
        "non_septic",
    )
    # BLD-01: no arm item, no arm code list, nothing the leak scanner finds.
    assert b"ARM" not in content
    assert _checker().html("odm export", content.decode("utf-8")) == []


@pytest.mark.req("DIB-04")
@pytest.mark.req("DIB-07")
@pytest.mark.req("BLD-01")
def test_the_fhir_export_validates_with_fhir_resources_and_names_no_arm(
    ctx: ServiceContext, populated: Populated
) -> None:
    content = _exported(ctx, "fhir", "ifng.json").files["ifng.json"]
    bundle = Bundle.model_validate_json(content)
    assert bundle.type == "collection"
    raw = json.loads(content)
    resources = [e["resource"] for e in raw["entry"]]
    study = ResearchStudy.model_validate(resources[0])
    assert study.status == "active" and study.arm is None
    people = [ResearchSubject.model_validate(r) for r in resources[1:]]
    assert sorted(p.identifier[0].value for p in people) == sorted(populated.arms)
    status = {p.identifier[0].value: p.status for p in people}
    assert status[populated.withdrawn] == "withdrawn" and status[populated.dispensed] == "on-study"
    assert all(p.assignedArm is None and p.actualArm is None for p in people)
    assert _checker().json_text("fhir export", content.decode("utf-8")) == []


@pytest.mark.req("DIB-04")
@pytest.mark.req("DIB-07")
@pytest.mark.req("BLD-01")
def test_redcap_and_csv_exports_have_their_documented_headers_and_no_arm(
    ctx: ServiceContext, populated: Populated
) -> None:
    content = _exported(ctx, "redcap", "ifng-redcap.csv").files["ifng-redcap.csv"].decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(content)))
    assert list(rows[0]) == [
        "record_id",
        "site",
        "screening_number",
        "rand_number",
        "rand_datetime",
        "strat_site",
        "strat_admission_cause",
        "strat_corr_site",
        "strat_corr_admission_cause",
        "rand_in_error",
        "blind_broken",
        "withdrawal",
        "withdrawal_date",
        "kit_d1",
        "dispensed_d1",
        "administered_d1",
        "kit_d2",
        "dispensed_d2",
        "administered_d2",
        "kit_d3",
        "dispensed_d3",
        "administered_d3",
    ]
    by_id = {r["record_id"]: r for r in rows}
    assert by_id[populated.withdrawn]["withdrawal"] == "consent_withdrawn"
    assert by_id[populated.corrected]["strat_corr_admission_cause"] == "non_septic"
    # REDCap conventions: local date-times YYYY-MM-DD HH:MM, yes/no as 1/0.
    assert by_id[populated.dispensed]["rand_datetime"] == "2026-03-02 10:30"
    assert {r["rand_in_error"] for r in rows} == {"0"}
    checker = _checker()
    assert checker.csv_text("redcap export", content) == []

    made = _exported(ctx, "csv", "ifng-tables")
    assert sorted(made.files) == [
        "ifng-tables/data_dictionary.csv",
        "ifng-tables/dispensing.csv",
        "ifng-tables/subjects.csv",
    ]
    dictionary = list(csv.DictReader(io.StringIO(made.files["ifng-tables/data_dictionary.csv"].decode())))
    documented = {(d["table"], d["column"]) for d in dictionary}
    for table in (tables.SUBJECTS, tables.DISPENSING):
        text = made.files[f"ifng-tables/{table}"].decode("utf-8")
        header = next(csv.reader(io.StringIO(text)))
        assert {(table, column) for column in header} == {(t, c) for t, c in documented if t == table}
        assert checker.csv_text(f"csv export {table}", text) == []
    assert len(list(csv.DictReader(io.StringIO(made.files["ifng-tables/dispensing.csv"].decode())))) == 12


@pytest.mark.req("DIB-07")
def test_the_redcap_field_names_follow_the_trial_definition(ctx: ServiceContext) -> None:
    text = IFN_TRIAL.read_text(encoding="utf-8") + (
        '\n[exports.redcap]\nrecord_id = "subjid"\nrandomization_number = "randno"\n'
        'kit_prefix = "kitno_"\nevent_name = "randomization_arm_1"\n'
    )
    definition = parse_definition(text)
    data = exports.dataset.Dataset(
        trial_code=TRIAL,
        trial_status="active",
        definition_version=1,
        definition=definition,
        sites=(),
        subjects=(),
        blinded=True,
        generated_at=ctx.now(),
        generated_by="test",
        software_version="0",
    )
    header = redcap.columns(data)
    assert header[:2] == ["subjid", "redcap_event_name"] and "randno" in header and "kitno_d1" in header
    with pytest.raises(ValueError, match=r"exports\.redcap\.record_id: 'Subject ID' is not valid"):
        parse_definition(
            IFN_TRIAL.read_text(encoding="utf-8") + '\n[exports.redcap]\nrecord_id = "Subject ID"\n'
        )
    with pytest.raises(ValueError, match="the REDCap field 'site' is mapped twice"):
        parse_definition(IFN_TRIAL.read_text(encoding="utf-8") + '\n[exports.redcap]\nrecord_id = "site"\n')


def _exports_audited(ctx: ServiceContext) -> list[AuditEvent]:
    with ctx.db.reading() as s:
        return list(s.execute(select(AuditEvent).where(AuditEvent.action == "trial.exported")).scalars())


@pytest.mark.req("DIB-07")
@pytest.mark.req("BLD-08")
def test_an_unblinded_export_exists_only_after_the_final_unblinding_signed_and_audited(
    ctx: ServiceContext, populated: Populated
) -> None:
    stat = populated.ready.statistician
    with pytest.raises(lookups.NotUnblinded) as early:
        exports.export_trial(ctx, stat, TRIAL, "odm", name="x.xml", unblinded=True, signature=SIGNED)
    assert early.value.status == 409
    assert _exports_audited(ctx) == []
    state.lock(ctx, stat, TRIAL, reason="database lock", signature=SIGNED)
    state.unblind_trial(ctx, stat, TRIAL, reason="final analysis", signature=SIGNED)
    with pytest.raises(Forbidden):  # the monitor's or anyone else's unblinded export
        exports.export_trial(ctx, CLI_ACTOR, TRIAL, "odm", name="x.xml", unblinded=True, signature=SIGNED)
    with pytest.raises(signatures.SignatureRefused):
        exports.export_trial(
            ctx,
            stat,
            TRIAL,
            "odm",
            name="x.xml",
            unblinded=True,
            signature=signatures.SignatureRequest("wrong!"),
        )
    assert _exports_audited(ctx) == []
    made = exports.export_trial(ctx, stat, TRIAL, "odm", name="x.xml", unblinded=True, signature=SIGNED)
    document = _validate_odm(made.files["x.xml"])
    assert {n: _items(document, n)["IT.ARMCD"] for n in populated.arms} == populated.arms
    # The leak scanner that passes the blinded exports does find the arms here (it is not blind).
    assert _checker().html("unblinded odm", made.files["x.xml"].decode("utf-8")) != []
    assert made.manifest["blinded"] is False and made.manifest["unblinding_signature"]["meaning"] == (
        exports.UNBLINDED_EXPORT_MEANING
    )
    (entry,) = _exports_audited(ctx)
    recorded = json.loads(entry.new_values or "{}")
    assert recorded["blinded"] is False and recorded["sha256"] == {
        "x.xml": made.manifest["files"][0]["sha256"]
    }
    fhir_made = exports.export_trial(
        ctx, stat, TRIAL, "fhir", name="x.json", unblinded=True, signature=SIGNED
    )
    people = [e["resource"] for e in json.loads(fhir_made.files["x.json"])["entry"][1:]]
    assert {p["identifier"][0]["value"]: p["assignedArm"] for p in people} == populated.arms
    Bundle.model_validate_json(fhir_made.files["x.json"])


@pytest.mark.req("DIB-07")
def test_export_verify_checks_every_file_and_the_signature(
    ctx: ServiceContext, populated: Populated, tmp_path: Path, ring: crypto.KeyRing
) -> None:
    made = _exported(ctx, "csv", "tables")
    for relative, content in made.files.items():
        (tmp_path / relative).parent.mkdir(exist_ok=True)
        (tmp_path / relative).write_bytes(content)
    written = manifest.write(tmp_path / "tables", made.manifest)
    assert written.name == "tables.manifest.json"
    trusted = list(crypto.audit_public_keys_pem(ring).values())
    result = manifest.verify(tmp_path / "tables", trusted)
    assert result.ok and result.trusted and result.files == 3, result.problems
    assert manifest.verify(written).ok  # untrusted: the manifest's own key
    # Another instance's key is not trusted.
    assert not manifest.verify(
        tmp_path / "tables", ["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"]
    ).ok
    # One byte of one file.
    target = tmp_path / "tables" / "dispensing.csv"
    original = target.read_bytes()
    target.write_bytes(original[:-3] + bytes([original[-3] ^ 1]) + original[-2:])
    result = manifest.verify(tmp_path / "tables", trusted)
    assert not result.ok and result.problems == (
        "tables/dispensing.csv: its SHA-256 does not match the manifest (file altered)",
    )
    target.write_bytes(original)
    # The manifest itself: a row count changed.
    body = json.loads(written.read_text("utf-8"))
    body["rows"]["subjects"] = 5
    written.write_text(json.dumps(body), "utf-8")
    result = manifest.verify(tmp_path / "tables", trusted)
    assert not result.ok and "the signature does not match the manifest" in result.problems[0]


@pytest.fixture
def run(fresh_database: FreshDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ALLOCATOR_DATABASE_URL", fresh_database.url)
    monkeypatch.setenv("ALLOCATOR_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("ALLOCATOR_ENV", "test")
    runner = CliRunner()

    def invoke(*args: str, stdin: str | None = None) -> tuple[int, str]:
        result = runner.invoke(main, list(args), input=stdin, catch_exceptions=False)
        return result.exit_code, result.output

    return invoke


@pytest.mark.req("DIB-07")
def test_the_export_commands(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run("init")[0] == 0 and run("load-trial", str(IFN_TRIAL))[0] == 0
    out = tmp_path / "ifng.xml"
    code, text = run("export", "IFNG-PAIS", "--format", "odm", "--out", str(out))
    assert code == 0 and "wrote blinded odm export of IFNG-PAIS" in text, text
    _validate_odm(out.read_bytes())
    code, text = run("export", "verify", str(out))
    assert code == 0 and "1 files intact, manifest signed by a trusted key" in text
    code, text = run("export", "IFNG-PAIS", "--format", "odm", "--out", str(out))
    assert code == 1 and "already exists" in text
    code, text = run("export", "IFNG-PAIS", "--format", "csv", "--out", str(tmp_path / "tables"))
    assert code == 0 and (tmp_path / "tables" / "data_dictionary.csv").is_file()
    assert run("export", "verify", str(tmp_path / "tables.manifest.json"))[0] == 0
    code, text = run(
        "export", "IFNG-PAIS", "--format", "odm", "--out", str(tmp_path / "u.xml"), "--unblinded"
    )
    assert code == 1 and "--signer" in text
    code, text = run("export", "NOPE", "--format", "fhir", "--out", str(tmp_path / "n.json"))
    assert code == 1 and "no trial 'NOPE'" in text
    out.write_bytes(out.read_bytes().replace(b"Snapshot", b"Snapshou"))
    code, text = run("export", "verify", str(out))
    assert code == 1 and "ifng.xml: its SHA-256 does not match the manifest (file altered)" in text
