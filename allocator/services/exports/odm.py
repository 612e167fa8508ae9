"""CDISC ODM 1.3.2 Snapshot of a trial's randomization and dispensing data (DIB-07).

`Study/MetaDataVersion` describes the items: a Randomization event (subject, site, randomization
number and time, strata as used and as corrected with their code lists, randomized in error, blind
broken, withdrawal) and one Dispensing event per day of the schedule (kit number and type, status,
dispensing and administration times, replacements). `ClinicalData` holds one `SubjectData` per
subject, keyed by the subject number. The arm item and its code list exist only in an unblinded
export; a blinded export has no arm, no block and no list position anywhere (BLD-01).

The document validates against the ODM 1.3.2 schema (tests/schemas/odm, a copy of the CDISC
distribution). Pure: takes a Dataset, returns UTF-8 bytes. Building XML with ElementTree parses
nothing, so the XML-attack warnings about the standard library's parsers do not apply.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from allocator.services.exports.dataset import (
    DOSE_STATUSES,
    WITHDRAWAL_KINDS,
    Dataset,
    ExportSubject,
    utc_text,
)

NS = "http://www.cdisc.org/ns/odm/v1.3"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
MDV = "MDV.1"
YES_NO = "CL.NY"

_OID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def oid(*parts: str) -> str:
    return ".".join(_OID_UNSAFE.sub("_", p) for p in parts)


def _el(parent: ET.Element, tag: str, **attrs: str) -> ET.Element:
    return ET.SubElement(parent, f"{{{NS}}}{tag}", attrs)


def _translated(parent: ET.Element, tag: str, text: str, lang: str = "en") -> None:
    holder = _el(parent, tag)
    translated = _el(holder, "TranslatedText")
    translated.set(XML_LANG, lang)
    translated.text = text


def study_oid(data: Dataset) -> str:
    return oid("ST", data.trial_code)


def _items(data: Dataset) -> dict[str, list[tuple[str, str, str, str | None]]]:
    """Item groups -> items as (OID, name, data type, code list OID or None), in document order."""
    factors = data.definition.stratification
    randomization = [
        (oid("IT", "SITEID"), "SITEID", "text", oid("CL", "SITE")),
        (oid("IT", "SCRNO"), "SCRNO", "text", None),
        (oid("IT", "RANDNO"), "RANDNO", "text", None),
        (oid("IT", "RANDDTC"), "RANDDTC", "datetime", None),
        (oid("IT", "RANDERR"), "RANDERR", "text", YES_NO),
        (oid("IT", "BLINDBRK"), "BLINDBRK", "text", YES_NO),
    ]
    if not data.blinded:
        randomization.append((oid("IT", "ARMCD"), "ARMCD", "text", oid("CL", "ARM")))
    return {
        oid("IG", "RAND"): randomization,
        oid("IG", "STRAT"): [
            (oid("IT", "STRAT", f.code), f"STRAT_{f.code}", "text", oid("CL", f.code)) for f in factors
        ],
        oid("IG", "STRATCOR"): [
            (oid("IT", "STRATCOR", f.code), f"STRATCOR_{f.code}", "text", oid("CL", f.code)) for f in factors
        ],
        oid("IG", "WD"): [
            (oid("IT", "WDKIND"), "WDKIND", "text", oid("CL", "WDKIND")),
            (oid("IT", "WDDAT"), "WDDAT", "date", None),
        ],
        oid("IG", "DISP"): [
            (oid("IT", "KITNO"), "KITNO", "text", None),
            (oid("IT", "KITTYPE"), "KITTYPE", "text", None),
            (oid("IT", "DISPSTAT"), "DISPSTAT", "text", oid("CL", "DISPSTAT")),
            (oid("IT", "DISPDTC"), "DISPDTC", "datetime", None),
            (oid("IT", "ADMDTC"), "ADMDTC", "datetime", None),
            (oid("IT", "KITREPL"), "KITREPL", "integer", None),
        ],
    }


_GROUP_NAMES = {
    "RAND": "Randomization",
    "STRAT": "Stratification factors as used at randomization",
    "STRATCOR": "Stratification factors as corrected",
    "WD": "Withdrawal",
    "DISP": "Kit dispensing and administration",
}


def _metadata(study: ET.Element, data: Dataset) -> None:
    definition = data.definition
    mdv = _el(
        study, "MetaDataVersion", OID=MDV, Name=f"{data.trial_code} definition v{data.definition_version}"
    )
    protocol = _el(mdv, "Protocol")
    events = [(oid("SE", "RAND"), "Randomization")] + [
        (oid("SE", "DISP", d.label), f"Dispensing {d.label}") for d in definition.dispensing.schedule
    ]
    for number, (event_oid, _) in enumerate(events, start=1):
        _el(protocol, "StudyEventRef", StudyEventOID=event_oid, OrderNumber=str(number), Mandatory="No")
    for event_oid, name in events:
        event = _el(mdv, "StudyEventDef", OID=event_oid, Name=name, Repeating="No", Type="Scheduled")
        form = oid("F", "RAND") if event_oid == oid("SE", "RAND") else oid("F", "DISP")
        _el(event, "FormRef", FormOID=form, Mandatory="Yes")
    rand_form = _el(mdv, "FormDef", OID=oid("F", "RAND"), Name="Randomization", Repeating="No")
    for group in ("RAND", "STRAT", "STRATCOR", "WD"):
        _el(rand_form, "ItemGroupRef", ItemGroupOID=oid("IG", group), Mandatory="No")
    disp_form = _el(mdv, "FormDef", OID=oid("F", "DISP"), Name="Dispensing", Repeating="No")
    _el(disp_form, "ItemGroupRef", ItemGroupOID=oid("IG", "DISP"), Mandatory="No")
    items = _items(data)
    for group_oid, group_items in items.items():
        name = _GROUP_NAMES[group_oid.removeprefix("IG.")]
        group_def = _el(mdv, "ItemGroupDef", OID=group_oid, Name=name, Repeating="No")
        for item_oid, *_ in group_items:
            _el(group_def, "ItemRef", ItemOID=item_oid, Mandatory="No")
    for group_items in items.values():
        for item_oid, name, data_type, code_list in group_items:
            item_def = _el(mdv, "ItemDef", OID=item_oid, Name=name, DataType=data_type)
            if code_list is not None:
                _el(item_def, "CodeListRef", CodeListOID=code_list)
    lists: list[tuple[str, str, list[tuple[str, str]]]] = [
        (oid("CL", "SITE"), "Site", [(s.code, f"{s.name}, {s.city}") for s in data.sites]),
        (YES_NO, "No / Yes", [("N", "No"), ("Y", "Yes")]),
        (oid("CL", "WDKIND"), "Withdrawal", list(WITHDRAWAL_KINDS.items())),
        (oid("CL", "DISPSTAT"), "Dispensing status", list(DOSE_STATUSES.items())),
    ]
    lists += [
        (oid("CL", f.code), f.label.en, [(lv.code, lv.label.en) for lv in f.levels])
        for f in definition.stratification
    ]
    if not data.blinded:
        lists.append((oid("CL", "ARM"), "Arm", [(a.code, a.label) for a in definition.arms]))
    for list_oid, name, values in lists:
        code_list_def = _el(mdv, "CodeList", OID=list_oid, Name=name, DataType="text")
        for code, decode in values:
            entry = _el(code_list_def, "CodeListItem", CodedValue=code)
            _translated(entry, "Decode", decode)


def _group(parent: ET.Element, group_oid: str, values: list[tuple[str, str]]) -> None:
    present = [(item, value) for item, value in values if value != ""]
    if not present:
        return
    group = _el(parent, "ItemGroupData", ItemGroupOID=group_oid)
    for item_oid, value in present:
        _el(group, "ItemData", ItemOID=item_oid, Value=value)


def _subject(clinical: ET.Element, data: Dataset, subject: ExportSubject) -> None:
    node = _el(clinical, "SubjectData", SubjectKey=subject.subject_number)
    event = _el(node, "StudyEventData", StudyEventOID=oid("SE", "RAND"))
    form = _el(event, "FormData", FormOID=oid("F", "RAND"))
    rand = [
        (oid("IT", "SITEID"), subject.site),
        (oid("IT", "SCRNO"), subject.screening_number),
        (oid("IT", "RANDNO"), subject.randomization_number),
        (oid("IT", "RANDDTC"), utc_text(subject.randomized_at)),
        (oid("IT", "RANDERR"), "Y" if subject.in_error else "N"),
        (oid("IT", "BLINDBRK"), "Y" if subject.blind_broken else "N"),
    ]
    if not data.blinded and subject.arm is not None:
        rand.append((oid("IT", "ARMCD"), subject.arm))
    _group(form, oid("IG", "RAND"), rand)
    factors = data.definition.stratification
    _group(
        form,
        oid("IG", "STRAT"),
        [(oid("IT", "STRAT", f.code), subject.strata.get(f.code, "")) for f in factors],
    )
    if subject.corrected:
        _group(
            form,
            oid("IG", "STRATCOR"),
            [(oid("IT", "STRATCOR", f.code), subject.strata_corrected.get(f.code, "")) for f in factors],
        )
    if subject.withdrawal_kind is not None:
        _group(
            form,
            oid("IG", "WD"),
            [
                (oid("IT", "WDKIND"), subject.withdrawal_kind),
                (oid("IT", "WDDAT"), subject.withdrawal_date.isoformat() if subject.withdrawal_date else ""),
            ],
        )
    for dose in subject.doses:
        event = _el(node, "StudyEventData", StudyEventOID=oid("SE", "DISP", dose.label))
        form = _el(event, "FormData", FormOID=oid("F", "DISP"))
        _group(
            form,
            oid("IG", "DISP"),
            [
                (oid("IT", "KITNO"), dose.kit_number),
                (oid("IT", "KITTYPE"), dose.kit_type),
                (oid("IT", "DISPSTAT"), dose.status),
                (oid("IT", "DISPDTC"), utc_text(dose.dispensed_at)),
                (oid("IT", "ADMDTC"), utc_text(dose.administered_at)),
                (oid("IT", "KITREPL"), str(dose.replacements)),
            ],
        )


def render(data: Dataset) -> bytes:
    """The ODM 1.3.2 Snapshot document of `data`, UTF-8 with an XML declaration."""
    ET.register_namespace("", NS)
    definition = data.definition
    root = ET.Element(
        f"{{{NS}}}ODM",
        {
            "FileType": "Snapshot",
            "FileOID": oid("allocator", data.trial_code, data.generated_at.strftime("%Y%m%dT%H%M%SZ")),
            "CreationDateTime": utc_text(data.generated_at),
            "ODMVersion": "1.3.2",
            "Originator": data.generated_by,
            "SourceSystem": "allocator",
            "SourceSystemVersion": data.software_version,
            "Granularity": "All",
        },
    )
    study = _el(root, "Study", OID=study_oid(data))
    variables = _el(study, "GlobalVariables")
    _el(variables, "StudyName").text = definition.short_title
    _el(variables, "StudyDescription").text = definition.title
    _el(variables, "ProtocolName").text = definition.sponsor_protocol_code
    _metadata(study, data)
    clinical = _el(root, "ClinicalData", StudyOID=study_oid(data), MetaDataVersionOID=MDV)
    for subject in data.subjects:
        _subject(clinical, data, subject)
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"
