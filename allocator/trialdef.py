"""Trial definition files: parse and validate a TOML file into frozen dataclasses.

The format is described in docs/trial-definition.md. Everything about a trial that varies between
trials — identifiers, arms, ratio, strata, randomization parameters, eligibility criteria, kits,
dispensing schedule, label texts, sites — is configuration read here, never code (VAL-03).

Validation collects every problem rather than stopping at the first, and each message names the
file, the dotted field path and the problem, e.g.::

    trials/x.toml: randomization.block_sizes[1]: 3 is not a multiple of the ratio total 2

Pure: imports neither Flask nor SQLAlchemy.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

FORMAT_VERSION = 1

_CODE = re.compile(r"^[A-Z0-9][A-Z0-9-]{1,19}$")  # trial codes go into QR payloads (alphanumeric mode)
_SITE_CODE = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,9}$")
_ARM_CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,15}$")
_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_EU_CT = re.compile(r"^\d{4}-\d{6}-\d{2}-\d{2}$")
_NCT = re.compile(r"^NCT\d{8}$")
_DAY_LABEL = re.compile(r"^[A-Z0-9]{1,4}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_LANGS = ("en", "fr")

# LBL-01/LBL-04: the texts a label cannot be printed without, in every language.
LABEL_TEXT_KEYS = (
    "clinical_trial_use_only",
    "product_name",
    "pharmaceutical_form",
    "route",
    "quantity",
    "storage",
    "directions",
    "keep_out_of_reach",
    "emergency_contact",
)


class DefinitionError(ValueError):
    """A trial definition is invalid. `problems` lists every (field path, message) found."""

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = [f"{source}: {path or '(top level)'}: {message}" for path, message in self.problems]
        super().__init__("\n".join(lines))


# --- the definition ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Text:
    """A user-facing text in English and French."""

    en: str
    fr: str


@dataclass(frozen=True, slots=True)
class Contact:
    name: str
    phone: str
    email: str


@dataclass(frozen=True, slots=True)
class Sponsor:
    name: str
    address: str
    main_contact: Contact
    emergency_phone: str  # LBL-07: the 24/7 emergency-unblinding number


@dataclass(frozen=True, slots=True)
class Arm:
    code: str
    label: str
    product: str


@dataclass(frozen=True, slots=True)
class Level:
    code: str
    label: Text


@dataclass(frozen=True, slots=True)
class Factor:
    """A stratification factor. `source = "site"` takes its levels from the trial's sites."""

    code: str
    label: Text
    source: Literal["site", "entered"]
    levels: tuple[Level, ...]


@dataclass(frozen=True, slots=True)
class BlockRandomization:
    """Stratified permuted blocks with block sizes drawn at random from `block_sizes` (RND-01)."""

    block_sizes: tuple[int, ...]
    slots_per_stratum: int
    alert_remaining: int
    method: Literal["permuted_blocks"] = "permuted_blocks"


@dataclass(frozen=True, slots=True)
class MinimizationRandomization:
    """Pocock-Simon minimization over `factors` with a random element `p_preferred`."""

    factors: tuple[str, ...]
    weights: Mapping[str, Fraction]
    imbalance: Literal["range", "variance"]
    p_preferred: Fraction
    max_subjects: int
    alert_remaining: int
    method: Literal["minimization"] = "minimization"


Randomization = BlockRandomization | MinimizationRandomization
StudyKind = Literal["randomized", "observational"]
CriterionKind = Literal["inclusion", "exclusion", "data"]


@dataclass(frozen=True, slots=True)
class BooleanCriterion:
    id: str
    kind: CriterionKind
    label: Text
    required: bool  # the answer that keeps the patient eligible
    type: Literal["boolean"] = "boolean"


@dataclass(frozen=True, slots=True)
class NumberCriterion:
    """A number with a unit. `min`/`max` decide eligibility; `input_min`/`input_max` bound what
    can be entered at all (a value outside them is an input error, not an ineligibility; DIB-08)."""

    id: str
    kind: CriterionKind
    label: Text
    unit: str
    integer: bool
    min: Fraction | None
    max: Fraction | None
    min_inclusive: bool
    max_inclusive: bool
    input_min: Fraction | None
    input_max: Fraction | None
    type: Literal["number"] = "number"


@dataclass(frozen=True, slots=True)
class DateCriterion:
    """A date; optionally within `window_days` (inclusive) after another date criterion."""

    id: str
    kind: CriterionKind
    label: Text
    relative_to: str | None
    window_days: tuple[int, int] | None
    not_in_future: bool
    max_days_ago: int | None
    type: Literal["date"] = "date"


Criterion = BooleanCriterion | NumberCriterion | DateCriterion


@dataclass(frozen=True, slots=True)
class Tube:
    """One tube of a sample kit (an observational study's pre-labelled tube set)."""

    type: str
    volume_ml: Fraction


@dataclass(frozen=True, slots=True)
class KitType:
    code: str
    description: str
    units: int
    tubes: tuple[Tube, ...] = ()  # a sample kit's tubes; empty for a drug kit


@dataclass(frozen=True, slots=True)
class DispensingDay:
    day: int
    label: str
    kit_type: str
    offset_hours: int


@dataclass(frozen=True, slots=True)
class Dispensing:
    expiry_margin_days: int  # LBL-05: a kit must not expire before the last day plus this margin
    out_of_order: Literal["refuse", "warn"]  # LBL-06: giving D2 before D1
    schedule: tuple[DispensingDay, ...]


@dataclass(frozen=True, slots=True)
class LabelTexts:
    clinical_trial_use_only: str
    product_name: str
    pharmaceutical_form: str
    route: str
    quantity: str
    storage: str
    directions: str
    keep_out_of_reach: str
    emergency_contact: str


@dataclass(frozen=True, slots=True)
class Labels:
    fr: LabelTexts
    en: LabelTexts
    print_keep_out_of_reach: bool  # Annex VI A.1(l) may be omitted when the product is not taken home
    omit_expiry_immediate: bool  # LBL-02: only with the expiry kept on the outer packaging


@dataclass(frozen=True, slots=True)
class SiteDef:
    code: str
    name: str
    city: str
    principal_investigator: str


@dataclass(frozen=True, slots=True)
class SiteSupply:
    """The automatic resupply levels of one site, in treatment courses (one course: the kits one
    subject needs, one per dispensing day)."""

    initial_courses: int  # shipped when the site is activated
    trigger_courses: int  # a shipment is requested when the site's courses fall below this
    resupply_courses: int  # ... of enough courses to bring it back to this
    lead_time_days: int  # from the request to the receipt at the site


@dataclass(frozen=True, slots=True)
class Supply:
    """`[supply]`: automatic resupply of the sites from the depot (issue 19). Absent: shipments are
    made by hand only."""

    levels: SiteSupply  # every site's, unless `overrides` names it
    do_not_ship_days: int  # a shipped kit must stay usable this many days after its arrival + a course
    predictive: bool  # raise the trigger to the courses the recent enrolment would use in the lead time
    enrolment_window_days: int  # the "recent" of the enrolment rate
    overrides: tuple[tuple[str, SiteSupply], ...] = ()

    def for_site(self, code: str) -> SiteSupply:
        return dict(self.overrides).get(code, self.levels)


@dataclass(frozen=True, slots=True)
class Timepoint:
    """One sample of an observational study: due `day` days after the anchor date (the anchor's
    day is day 0), collectable up to day `last_day`, with a kit of `kit_type`."""

    label: str
    day: int
    last_day: int
    kit_type: str


@dataclass(frozen=True, slots=True)
class Sampling:
    """`[sampling]`: the sample schedule of an observational study. `anchor` is the date criterion
    the days count from; the samples are moved onto the central lab's working days: ISO weekdays
    `working_weekdays`, minus the public holidays of `holidays_country` (and closures entered by
    the lab manager)."""

    anchor: str
    working_weekdays: tuple[int, ...]
    holidays_country: str
    timepoints: tuple[Timepoint, ...]
    # The longest pre-analytical delay (collection to receipt at the central lab) before a sample
    # is flagged on the receipt and accountability pages (issue 20).
    max_preanalytical_hours: int = 24


class NotRandomized(LookupError):
    """A randomization-only part of a definition (randomization, dispensing, drug labels) was asked
    of an observational study."""

    def __init__(self, code: str, part: str) -> None:
        self.code = code
        self.part = part
        super().__init__(f"{code} is an observational study: it has no {part}")


@dataclass(frozen=True, slots=True)
class Unconfirmed:
    field: str
    note: str


_REDCAP_NAME = re.compile(r"^[a-z][a-z0-9_]{0,99}$")  # REDCap's rule for variable names
_REDCAP_PREFIX = re.compile(r"^[a-z][a-z0-9_]{0,60}$")


@dataclass(frozen=True, slots=True)
class RedcapFields:
    """Where the IWRS data go in the REDCap project used as the trial's EDC (`[exports.redcap]`,
    DIB-07). Every name is a REDCap variable name; a kit field is `kit_prefix` + the day label in
    lower case (`kit_d1`), a stratum field `strata_prefix` + the factor code, and the corrected
    stratum `corrected_prefix` + the factor code."""

    record_id: str = "record_id"
    site: str = "site"
    screening_number: str = "screening_number"
    randomization_number: str = "rand_number"
    randomization_datetime: str = "rand_datetime"
    randomized_in_error: str = "rand_in_error"
    blind_broken: str = "blind_broken"
    withdrawal: str = "withdrawal"
    withdrawal_date: str = "withdrawal_date"
    arm: str = "rand_arm"  # only in an unblinded export, after the final unblinding
    kit_prefix: str = "kit_"
    dispensed_prefix: str = "dispensed_"
    administered_prefix: str = "administered_"
    strata_prefix: str = "strat_"
    corrected_prefix: str = "strat_corr_"
    event_name: str | None = None  # redcap_event_name, for a longitudinal project


@dataclass(frozen=True, slots=True)
class Exports:
    redcap: RedcapFields = field(default_factory=RedcapFields)


@dataclass(frozen=True, slots=True)
class TrialDefinition:
    """A validated trial definition. Build it with `parse_definition` or `load_definition`."""

    format_version: int
    code: str
    title: str
    short_title: str
    eu_ct_number: str | None  # None for a study outside the EU CTR (an observational cohort)
    nct_number: str
    sponsor_protocol_code: str
    phase: str
    design: str
    target_sample_size: int
    timezone: str
    screening_number_pattern: str
    screening_number_example: str
    sponsor: Sponsor
    arms: tuple[Arm, ...]  # empty for an observational study
    ratio: tuple[tuple[str, int], ...]  # in arm order
    stratification: tuple[Factor, ...]
    randomization_spec: Randomization | None  # None for an observational study
    eligibility: tuple[Criterion, ...]
    kit_types: tuple[KitType, ...]
    dispensing_spec: Dispensing | None
    labels_spec: Labels | None
    sites: tuple[SiteDef, ...]
    unconfirmed: tuple[Unconfirmed, ...] = field(default=())
    exports: Exports = field(default_factory=Exports)
    supply: Supply | None = None
    kind: StudyKind = "randomized"
    sampling: Sampling | None = None  # an observational study's sample schedule

    @property
    def observational(self) -> bool:
        return self.kind == "observational"

    @property
    def randomization(self) -> Randomization:
        """The randomization parameters; NotRandomized for an observational study."""
        if self.randomization_spec is None:
            raise NotRandomized(self.code, "randomization")
        return self.randomization_spec

    @property
    def dispensing(self) -> Dispensing:
        if self.dispensing_spec is None:
            raise NotRandomized(self.code, "dispensing")
        return self.dispensing_spec

    @property
    def labels(self) -> Labels:
        if self.labels_spec is None:
            raise NotRandomized(self.code, "drug kit labels")
        return self.labels_spec

    @property
    def arm_codes(self) -> tuple[str, ...]:
        return tuple(a.code for a in self.arms)

    @property
    def ratio_total(self) -> int:
        return sum(weight for _, weight in self.ratio)

    def local_date(self, moment: datetime) -> date:
        """The calendar date of `moment` at the trial's sites: dose days, eligibility ages and kit
        expiry are judged on it, never on the UTC date."""
        return moment.astimezone(ZoneInfo(self.timezone)).date()

    def factor(self, code: str) -> Factor:
        for f in self.stratification:
            if f.code == code:
                return f
        raise KeyError(code)

    def criterion(self, criterion_id: str) -> Criterion:
        for c in self.eligibility:
            if c.id == criterion_id:
                return c
        raise KeyError(criterion_id)

    def site(self, code: str) -> SiteDef:
        for s in self.sites:
            if s.code == code:
                return s
        raise KeyError(code)

    def strata(self) -> list[tuple[tuple[str, str], ...]]:
        """Every stratum: the cross product of the factors' levels, in definition order."""
        combos: list[tuple[tuple[str, str], ...]] = [()]
        for factor in self.stratification:
            combos = [(*c, (factor.code, level.code)) for c in combos for level in factor.levels]
        return combos

    def canonical_json(self) -> str:
        """A stable JSON form of the whole definition (for hashing and storage)."""
        return json.dumps(_jsonable(asdict(self)), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def allocation_fingerprint(self) -> str:
        """SHA-256 over what decides allocation: arms, ratio, strata, randomization parameters.

        A definition in use by a PRODUCTION list may change anything but this (trialdef docs)."""
        relevant = {
            "code": self.code,
            "arms": [a.code for a in self.arms],
            "ratio": list(self.ratio),
            "stratification": [
                {"code": f.code, "source": f.source, "levels": [lv.code for lv in f.levels]}
                for f in self.stratification
            ],
            "randomization": _jsonable(asdict(self.randomization_spec)) if self.randomization_spec else None,
        }
        raw = json.dumps(relevant, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Fraction):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# --- reading ----------------------------------------------------------------------------------


def load_definition(path: Path) -> tuple[TrialDefinition, str]:
    """Read and validate a definition file. Returns the definition and the file's text.

    Raises DefinitionError naming the file, the field and the problem."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DefinitionError(source, [("", "file not found")]) from None
    except UnicodeDecodeError:
        raise DefinitionError(source, [("", "the file is not UTF-8 text")]) from None
    return parse_definition(text, source=source), text


def parse_definition(text: str, *, source: str = "<definition>") -> TrialDefinition:
    """Validate TOML `text` into a TrialDefinition, or raise DefinitionError listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionError(source, [("", f"not valid TOML: {exc}")]) from None
    problems: list[tuple[str, str]] = []
    definition = _Parser(problems).definition(_Node(data, "", problems))
    if problems or definition is None:
        raise DefinitionError(source, problems or [("", "invalid definition")])
    return definition


T = TypeVar("T")


class _Missing(Exception):
    """Raised inside the parser to abandon a sub-tree whose problem was already recorded."""


class _Node:
    """A TOML table with its dotted path, recording problems instead of raising."""

    def __init__(self, data: Mapping[str, Any], path: str, problems: list[tuple[str, str]]) -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self.used: set[str] = set()

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def problem(self, key: str, message: str) -> None:
        self.problems.append((self.sub(key) if key else self.path, message))

    def _get(self, key: str, required: bool) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                self.problem(key, "is required")
                raise _Missing
            return None
        return self.data[key]

    def _typed(self, key: str, value: Any, kind: type, kind_name: str) -> Any:
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            self.problem(key, f"must be {kind_name}, not {_type_name(value)}")
            raise _Missing
        return value

    def get_str(
        self, key: str, *, required: bool = True, pattern: re.Pattern[str] | None = None, hint: str = ""
    ) -> Any:
        value = self._get(key, required)
        if value is None:
            return None
        value = self._typed(key, value, str, "a string")
        if not value.strip():
            self.problem(key, "must not be empty")
            raise _Missing
        if pattern is not None and not pattern.match(value):
            self.problem(key, f"{value!r} is not valid{': ' + hint if hint else ''}")
            raise _Missing
        return value

    def get_int(
        self, key: str, *, required: bool = True, low: int | None = None, high: int | None = None
    ) -> Any:
        value = self._get(key, required)
        if value is None:
            return None
        value = self._typed(key, value, int, "a whole number")
        if low is not None and value < low:
            self.problem(key, f"{value} is below the minimum {low}")
            raise _Missing
        if high is not None and value > high:
            self.problem(key, f"{value} is above the maximum {high}")
            raise _Missing
        return value

    def get_number(self, key: str, *, required: bool = False) -> Fraction | None:
        value = self._get(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(key, f"must be a number, not {_type_name(value)}")
            raise _Missing
        return Fraction(str(value)) if isinstance(value, float) else Fraction(value)

    def get_bool(self, key: str, *, required: bool = True, default: bool = False) -> bool:
        value = self._get(key, required)
        if value is None:
            return default
        return bool(self._typed(key, value, bool, "true or false"))

    def get_choice(
        self, key: str, choices: Sequence[str], *, required: bool = True, default: str | None = None
    ) -> Any:
        value = self.get_str(key, required=required)
        if value is None:
            return default
        if value not in choices:
            self.problem(key, f"{value!r} is not one of {', '.join(choices)}")
            raise _Missing
        return value

    def table(self, key: str, *, required: bool = True) -> _Node | None:
        value = self._get(key, required)
        if value is None:
            return None
        self._typed(key, value, dict, "a table")
        return _Node(value, self.sub(key), self.problems)

    def need_table(self, key: str) -> _Node:
        node = self.table(key)
        if node is None:  # pragma: no cover - table(required=True) raises instead
            raise _Missing
        return node

    def need_list(self, key: str) -> list[Any]:
        value = self.get_list(key)
        if value is None:  # pragma: no cover - list(required=True) raises instead
            raise _Missing
        return value

    def need_number(self, key: str) -> Fraction:
        value = self.get_number(key, required=True)
        if value is None:  # pragma: no cover - number(required=True) raises instead
            raise _Missing
        return value

    def tables(self, key: str, *, required: bool = True, min_items: int = 1) -> list[_Node]:
        value = self._get(key, required)
        if value is None:
            return []
        self._typed(key, value, list, "an array of tables")
        if len(value) < min_items:
            self.problem(key, f"needs at least {min_items} entr{'y' if min_items == 1 else 'ies'}")
            raise _Missing
        nodes = []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                self.problem(f"{key}[{index}]", f"must be a table, not {_type_name(item)}")
                raise _Missing
            nodes.append(_Node(item, f"{self.sub(key)}[{index}]", self.problems))
        return nodes

    def get_list(self, key: str, *, required: bool = True) -> list[Any] | None:
        value = self._get(key, required)
        if value is None:
            return None
        return list(self._typed(key, value, list, "an array"))

    def text(self, key: str) -> Text:
        node = self.need_table(key)
        en, fr = node.get_str("en"), node.get_str("fr")
        node.done()
        return Text(en=en, fr=fr)

    def done(self) -> None:
        """Unknown keys are errors: a typo must not silently drop a setting."""
        for key in self.data:
            if key not in self.used:
                self.problem(key, "is not a known field")


def _type_name(value: Any) -> str:
    return {
        bool: "true/false",
        int: "a whole number",
        float: "a decimal number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _guard(func: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Run one section's parser; a recorded problem abandons only that section."""
    try:
        return func(*args, **kwargs)
    except _Missing:
        return None


class _Parser:
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems

    def problem(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def definition(self, root: _Node) -> TrialDefinition | None:
        version = _guard(root.get_int, "format_version")
        if version is not None and version != FORMAT_VERSION:
            root.problem(
                "format_version", f"{version} is not supported (this software reads version {FORMAT_VERSION})"
            )
        trial = _guard(self.trial, root)
        sponsor = _guard(self.sponsor, root)
        sites = _guard(self.sites, root) or ()
        eligibility = _guard(self.eligibility, root)
        kind = (trial or {}).get("kind") or _peek_kind(root)
        if kind == "observational":
            return self.observational(root, trial, sponsor, sites, eligibility)
        arms = _guard(self.arms, root) or ()
        ratio = _guard(self.ratio, root, arms)
        factors = _guard(self.factors, root, sites) or ()
        randomization = _guard(self.randomization, root, ratio, factors)
        kit_types = _guard(self.kit_types, root) or ()
        dispensing = _guard(self.dispensing, root, kit_types)
        labels = _guard(self.labels, root)
        unconfirmed = _guard(self.unconfirmed, root) or ()
        exports = _guard(self.exports, root) or Exports()
        supply = _guard(self.supply, root, sites)
        if trial is not None and trial.get("eu_ct_number") is None:
            root.problem("trial.eu_ct_number", "is required")
        root.done()
        if (
            self.problems
            or trial is None
            or sponsor is None
            or ratio is None
            or randomization is None
            or eligibility is None
            or dispensing is None
            or labels is None
        ):
            return None
        return TrialDefinition(
            format_version=FORMAT_VERSION,
            sponsor=sponsor,
            arms=arms,
            ratio=ratio,
            stratification=factors,
            randomization_spec=randomization,
            eligibility=eligibility,
            kit_types=kit_types,
            dispensing_spec=dispensing,
            labels_spec=labels,
            sites=sites,
            unconfirmed=unconfirmed,
            exports=exports,
            supply=supply,
            **trial,
        )

    def observational(
        self,
        root: _Node,
        trial: dict[str, Any] | None,
        sponsor: Sponsor | None,
        sites: tuple[SiteDef, ...],
        eligibility: tuple[Criterion, ...] | None,
    ) -> TrialDefinition | None:
        """An observational study (`kind = "observational"`): no arms, allocation, stratification,
        randomization, dispensing or drug labels; sample kits and a `[sampling]` schedule instead."""
        for key in (
            "arms",
            "allocation",
            "stratification",
            "randomization",
            "dispensing",
            "labels",
            "supply",
        ):
            if key in root.data:
                root.used.add(key)
                root.problem(key, 'must not be given for an observational study (kind = "observational")')
        kit_types = _guard(self.kit_types, root) or ()
        for index, kit in enumerate(kit_types):
            if not kit.tubes:
                root.problem(
                    f"kit_types[{index}].tubes", "a sample kit of an observational study needs its tubes"
                )
        sampling = _guard(self.sampling, root, eligibility or (), kit_types)
        unconfirmed = _guard(self.unconfirmed, root) or ()
        exports = _guard(self.exports, root) or Exports()
        root.done()
        if self.problems or trial is None or sponsor is None or eligibility is None or sampling is None:
            return None
        return TrialDefinition(
            format_version=FORMAT_VERSION,
            sponsor=sponsor,
            arms=(),
            ratio=(),
            stratification=(),
            randomization_spec=None,
            eligibility=eligibility,
            kit_types=kit_types,
            dispensing_spec=None,
            labels_spec=None,
            sites=sites,
            unconfirmed=unconfirmed,
            exports=exports,
            sampling=sampling,
            **trial,
        )

    def sampling(
        self, root: _Node, criteria: tuple[Criterion, ...], kit_types: tuple[KitType, ...]
    ) -> Sampling:
        node = root.need_table("sampling")
        anchor = _guard(node.get_str, "anchor", pattern=_IDENT, hint="the id of a date criterion")
        if anchor is not None and not any(c.id == anchor and isinstance(c, DateCriterion) for c in criteria):
            node.problem("anchor", f"{anchor!r} is not a date criterion of this definition")
        weekdays_raw = _guard(node.get_list, "working_weekdays")
        weekdays: list[int] = []
        for index, value in enumerate(weekdays_raw or []):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 7:
                node.problem(
                    f"working_weekdays[{index}]", f"must be an ISO weekday 1 (Monday) to 7, not {value!r}"
                )
            elif value in weekdays:
                node.problem(f"working_weekdays[{index}]", f"duplicate weekday {value}")
            else:
                weekdays.append(value)
        if weekdays_raw is not None and not weekdays_raw:
            node.problem("working_weekdays", "needs at least one working weekday")
        country = _guard(
            node.get_str, "holidays_country", pattern=_COUNTRY, hint="an ISO 3166 code such as FR"
        )
        max_delay = _guard(node.get_int, "max_preanalytical_hours", required=False, low=1, high=720)
        timepoints: list[Timepoint] = []
        nodes = _guard(node.tables, "timepoints") or []
        codes = [k.code for k in kit_types]
        for tp_node in nodes:
            tp = _guard(self.timepoint, tp_node)
            tp_node.done()
            if tp is None:
                continue
            if tp.kit_type not in codes:
                tp_node.problem("kit_type", f"unknown kit type {tp.kit_type!r}")
            elif tp.last_day < tp.day:
                tp_node.problem("last_day", f"{tp.last_day} is before day {tp.day}")
            elif any(t.label == tp.label for t in timepoints):
                tp_node.problem("label", f"duplicate label {tp.label!r}")
            else:
                timepoints.append(tp)
        node.done()
        if anchor is None or country is None or weekdays_raw is None or len(timepoints) != len(nodes):
            raise _Missing
        return Sampling(
            anchor=anchor,
            working_weekdays=tuple(sorted(weekdays)),
            holidays_country=country,
            timepoints=tuple(timepoints),
            max_preanalytical_hours=max_delay if max_delay is not None else 24,
        )

    @staticmethod
    def timepoint(node: _Node) -> Timepoint:
        day = node.get_int("day", low=0, high=365)
        return Timepoint(
            label=node.get_str("label", pattern=_DAY_LABEL, hint="1-4 characters A-Z, 0-9"),
            day=day,
            last_day=node.get_int("last_day", required=False, low=0, high=365) or day,
            kit_type=node.get_str("kit_type"),
        )

    def trial(self, root: _Node) -> dict[str, Any]:
        node = root.need_table("trial")
        out: dict[str, Any] = {}
        out["kind"] = _guard(node.get_choice, "kind", ("randomized", "observational"), required=False) or (
            "randomized"
        )
        for key, pattern, hint in (
            ("code", _CODE, "2-20 characters A-Z, 0-9 and '-', starting with a letter or digit"),
            ("nct_number", _NCT, "an NCT number such as NCT06694740"),
        ):
            out[key] = _guard(node.get_str, key, pattern=pattern, hint=hint)
        # An EU CT number exists for a trial under the EU CTR; an observational cohort may have none
        # (a randomized trial without one is refused by `definition`).
        out["eu_ct_number"] = _guard(
            node.get_str,
            "eu_ct_number",
            required=False,
            pattern=_EU_CT,
            hint="an EU CT number such as 2023-506725-11-00",
        )
        for key in (
            "title",
            "short_title",
            "sponsor_protocol_code",
            "phase",
            "design",
            "screening_number_example",
        ):
            out[key] = _guard(node.get_str, key)
        out["target_sample_size"] = _guard(node.get_int, "target_sample_size", low=1, high=1_000_000)
        tz = _guard(node.get_str, "timezone")
        if tz is not None:
            try:
                ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError):
                node.problem("timezone", f"{tz!r} is not a known time zone")
        out["timezone"] = tz
        pattern_text = _guard(node.get_str, "screening_number_pattern")
        if pattern_text is not None:
            try:
                compiled = re.compile(pattern_text)
            except re.error as exc:
                node.problem("screening_number_pattern", f"is not a valid regular expression ({exc})")
            else:
                if not (pattern_text.startswith("^") and pattern_text.endswith("$")):
                    node.problem("screening_number_pattern", "must be anchored with ^ and $")
                example = out.get("screening_number_example")
                if example is not None and not compiled.match(example):
                    node.problem(
                        "screening_number_example", f"{example!r} does not match screening_number_pattern"
                    )
        out["screening_number_pattern"] = pattern_text
        node.done()
        return out

    def sponsor(self, root: _Node) -> Sponsor:
        node = root.need_table("sponsor")
        name = _guard(node.get_str, "name")
        address = _guard(node.get_str, "address")
        phone = _guard(node.get_str, "emergency_phone")

        def contact() -> Contact:
            c = node.need_table("main_contact")
            result = Contact(name=c.get_str("name"), phone=c.get_str("phone"), email=c.get_str("email"))
            c.done()
            return result

        main = _guard(contact)
        node.done()
        if name is None or address is None or phone is None or main is None:
            raise _Missing
        return Sponsor(name=name, address=address, main_contact=main, emergency_phone=phone)

    def arms(self, root: _Node) -> tuple[Arm, ...]:
        arms: list[Arm] = []
        nodes = root.tables("arms", min_items=2)
        for node in nodes:
            arm = _guard(self.arm, node)
            node.done()
            if arm is None:
                continue
            if any(a.code == arm.code for a in arms):
                node.problem("code", f"duplicate arm code {arm.code!r}")
                continue
            arms.append(arm)
        if len(arms) != len(nodes):
            raise _Missing
        return tuple(arms)

    def ratio(self, root: _Node, arms: tuple[Arm, ...]) -> tuple[tuple[str, int], ...]:
        node = root.need_table("allocation")
        ratio_node = node.need_table("ratio")
        node.done()
        codes = [a.code for a in arms]
        out: list[tuple[str, int]] = []
        for key, value in ratio_node.data.items():
            ratio_node.used.add(key)
            if key not in codes:
                ratio_node.problem(key, f"unknown arm {key!r} (arms are {', '.join(codes) or 'undefined'})")
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                ratio_node.problem(key, f"must be a whole number of at least 1, not {value!r}")
                continue
        for code in codes:
            if code not in ratio_node.data:
                ratio_node.problem(code, "is required (every arm needs a ratio weight)")
            elif isinstance(ratio_node.data[code], int) and not isinstance(ratio_node.data[code], bool):
                out.append((code, ratio_node.data[code]))
        if len(out) != len(codes) or len(out) != len(ratio_node.data):
            raise _Missing
        return tuple(out)

    def sites(self, root: _Node) -> tuple[SiteDef, ...]:
        sites: list[SiteDef] = []
        nodes = root.tables("sites")
        for node in nodes:
            site = _guard(self.site, node)
            node.done()
            if site is None:
                continue
            if any(s.code == site.code for s in sites):
                node.problem("code", f"duplicate site code {site.code!r}")
                continue
            if site.code.startswith("DRILL"):
                # UNB-11: subject numbers start with the site code; DRILL- numbers are drill subjects.
                node.problem(
                    "code", f"site code {site.code!r}: codes starting with DRILL are reserved for drills"
                )
                continue
            sites.append(site)
        if len(sites) != len(nodes):
            raise _Missing
        return tuple(sites)

    def factors(self, root: _Node, sites: tuple[SiteDef, ...]) -> tuple[Factor, ...]:
        factors: list[Factor] = []
        nodes = root.tables("stratification")
        ok = True
        for node in nodes:
            factor = _guard(self.factor, node, sites)
            node.done()
            if factor is None:
                ok = False
                continue
            if any(f.code == factor.code for f in factors):
                node.problem("code", f"duplicate factor {factor.code!r}")
                ok = False
                continue
            factors.append(factor)
        if ok and not any(f.source == "site" for f in factors):
            # Architecture: site is always a stratification factor (central, per-site balance).
            root.problem("stratification", 'site must be one of the stratification factors (source = "site")')
            ok = False
        if ok and sum(1 for f in factors if f.source == "site") > 1:
            root.problem("stratification", 'only one factor can have source = "site"')
            ok = False
        if not ok:
            raise _Missing
        return tuple(factors)

    def factor(self, node: _Node, sites: tuple[SiteDef, ...]) -> Factor:
        code = node.get_str("code", pattern=_IDENT, hint="a lower-case identifier")
        label = node.text("label")
        source = node.get_choice("source", ("site", "entered"))
        if source == "site":
            if "levels" in node.data:
                node.used.add("levels")
                node.problem("levels", "must not be given for the site factor (its levels are the sites)")
                raise _Missing
            levels = tuple(Level(code=s.code, label=Text(en=s.name, fr=s.name)) for s in sites)
            return Factor(code=code, label=label, source="site", levels=levels)
        raw = node.tables("levels", min_items=2)
        levels_list: list[Level] = []
        for level_node in raw:
            level = _guard(self.level, level_node)
            level_node.done()
            if level is None:
                raise _Missing
            if any(lv.code == level.code for lv in levels_list):
                level_node.problem("code", f"duplicate level {level.code!r}")
                raise _Missing
            levels_list.append(level)
        return Factor(code=code, label=label, source="entered", levels=tuple(levels_list))

    def randomization(
        self, root: _Node, ratio: tuple[tuple[str, int], ...] | None, factors: tuple[Factor, ...]
    ) -> Randomization:
        node = root.need_table("randomization")
        method = node.get_choice("method", ("permuted_blocks", "minimization"))
        try:
            if method == "permuted_blocks":
                return self.blocks(node, ratio)
            return self.minimization(node, factors)
        finally:
            node.done()

    def blocks(self, node: _Node, ratio: tuple[tuple[str, int], ...] | None) -> BlockRandomization:
        sizes_raw = node.need_list("block_sizes")
        total = sum(w for _, w in ratio) if ratio else None
        sizes: list[int] = []
        if not sizes_raw:
            node.problem("block_sizes", "needs at least one block size")
        for index, size in enumerate(sizes_raw):
            path = f"block_sizes[{index}]"
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                node.problem(path, f"must be a whole number of at least 1, not {size!r}")
            elif total is not None and size % total:
                node.problem(path, f"{size} is not a multiple of the ratio total {total}")
            elif size in sizes:
                node.problem(path, f"duplicate block size {size}")
            else:
                sizes.append(size)
        slots = node.get_int("slots_per_stratum", low=1, high=1_000_000)
        alert = node.get_int("alert_remaining", low=0, high=1_000_000)
        if len(sizes) != len(sizes_raw) or not sizes:
            raise _Missing
        if slots < max(sizes):
            node.problem("slots_per_stratum", f"{slots} is smaller than the largest block ({max(sizes)})")
            raise _Missing
        if alert >= slots:
            node.problem("alert_remaining", f"{alert} must be smaller than slots_per_stratum ({slots})")
            raise _Missing
        return BlockRandomization(block_sizes=tuple(sizes), slots_per_stratum=slots, alert_remaining=alert)

    def minimization(self, node: _Node, factors: tuple[Factor, ...]) -> MinimizationRandomization:
        names = node.need_list("factors")
        known = [f.code for f in factors]
        chosen: list[str] = []
        for index, name in enumerate(names):
            if name not in known:
                node.problem(f"factors[{index}]", f"unknown stratification factor {name!r}")
            elif name in chosen:
                node.problem(f"factors[{index}]", f"duplicate factor {name!r}")
            else:
                chosen.append(name)
        weights: dict[str, Fraction] = {}
        weights_node = node.table("weights", required=False)
        if weights_node is not None:
            for key in weights_node.data:
                value = _guard(weights_node.get_number, key, required=True)
                if key not in chosen:
                    weights_node.problem(key, "is not one of the minimization factors")
                elif value is not None and value <= 0:
                    weights_node.problem(key, "must be positive")
                elif value is not None:
                    weights[key] = value
        imbalance = node.get_choice("imbalance", ("range", "variance"))
        p = node.need_number("p_preferred")
        if not (Fraction(1, 2) <= p <= 1):
            node.problem("p_preferred", f"{float(p)} must be between 0.5 and 1")
        max_subjects = node.get_int("max_subjects", low=1, high=1_000_000)
        alert = node.get_int("alert_remaining", low=0, high=1_000_000)
        if not chosen:
            node.problem("factors", "needs at least one factor")
        if self.problems:
            raise _Missing
        return MinimizationRandomization(
            factors=tuple(chosen),
            weights={f: weights.get(f, Fraction(1)) for f in chosen},
            imbalance=imbalance,
            p_preferred=p,
            max_subjects=max_subjects,
            alert_remaining=alert,
        )

    def eligibility(self, root: _Node) -> tuple[Criterion, ...]:
        nodes = root.tables("eligibility")
        criteria: list[Criterion] = []
        ok = True
        for node in nodes:
            criterion = _guard(self.criterion, node)
            node.done()
            if criterion is None:
                ok = False
                continue
            if any(c.id == criterion.id for c in criteria):
                node.problem("id", f"duplicate criterion {criterion.id!r}")
                ok = False
                continue
            criteria.append(criterion)
        by_id = {c.id: c for c in criteria}
        for index, c in enumerate(criteria):
            if isinstance(c, DateCriterion) and c.relative_to is not None:
                target = by_id.get(c.relative_to)
                path = f"eligibility[{index}].relative_to"
                if target is None:
                    self.problem(path, f"unknown criterion {c.relative_to!r}")
                    ok = False
                elif not isinstance(target, DateCriterion) or target.id == c.id:
                    self.problem(path, f"{c.relative_to!r} is not another date criterion")
                    ok = False
        if not ok:
            raise _Missing
        return tuple(criteria)

    def criterion(self, node: _Node) -> Criterion:
        cid = node.get_str("id", pattern=_IDENT, hint="a lower-case identifier")
        kind = node.get_choice("kind", ("inclusion", "exclusion", "data"))
        label = node.text("label")
        ctype = node.get_choice("type", ("boolean", "number", "date"))
        if ctype == "boolean":
            if kind == "data":
                node.problem("kind", "a yes/no question must be an inclusion or exclusion criterion")
                raise _Missing
            return BooleanCriterion(id=cid, kind=kind, label=label, required=node.get_bool("required"))
        if ctype == "number":
            bounds = {k: node.get_number(k) for k in ("min", "max", "input_min", "input_max")}
            crit = NumberCriterion(
                id=cid,
                kind=kind,
                label=label,
                unit=node.get_str("unit"),
                integer=node.get_bool("integer", required=False),
                min=bounds["min"],
                max=bounds["max"],
                min_inclusive=node.get_bool("min_inclusive", required=False, default=True),
                max_inclusive=node.get_bool("max_inclusive", required=False, default=True),
                input_min=bounds["input_min"],
                input_max=bounds["input_max"],
            )
            if kind != "data" and crit.min is None and crit.max is None:
                node.problem("min", "an inclusion or exclusion number needs min or max")
                raise _Missing
            for low_key, high_key in (
                ("min", "max"),
                ("input_min", "input_max"),
                ("input_min", "min"),
                ("max", "input_max"),
            ):
                low, high = bounds[low_key], bounds[high_key]
                if low is not None and high is not None and low > high:
                    node.problem(low_key, f"{float(low):g} is greater than {high_key} ({float(high):g})")
                    raise _Missing
            return crit
        window_raw = node.get_list("window_days", required=False)
        window: tuple[int, int] | None = None
        if window_raw is not None:
            if (
                len(window_raw) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in window_raw)
                or window_raw[0] > window_raw[1]
            ):
                node.problem("window_days", "must be [first_day, last_day] with first_day <= last_day")
                raise _Missing
            window = (window_raw[0], window_raw[1])
        relative_to = node.get_str("relative_to", required=False, pattern=_IDENT)
        if (window is None) != (relative_to is None):
            node.problem("window_days", "window_days and relative_to go together")
            raise _Missing
        return DateCriterion(
            id=cid,
            kind=kind,
            label=label,
            relative_to=relative_to,
            window_days=window,
            not_in_future=node.get_bool("not_in_future", required=False, default=True),
            max_days_ago=node.get_int("max_days_ago", required=False, low=0, high=36500),
        )

    def kit_types(self, root: _Node) -> tuple[KitType, ...]:
        out: list[KitType] = []
        nodes = root.tables("kit_types")
        for node in nodes:
            kit = _guard(self.kit_type, node)
            node.done()
            if kit is None:
                continue
            if any(k.code == kit.code for k in out):
                node.problem("code", f"duplicate kit type {kit.code!r}")
                continue
            out.append(kit)
        if len(out) != len(nodes):
            raise _Missing
        return tuple(out)

    def dispensing(self, root: _Node, kit_types: tuple[KitType, ...]) -> Dispensing:
        node = root.need_table("dispensing")
        margin = _guard(node.get_int, "expiry_margin_days", low=0, high=3650)
        order = _guard(node.get_choice, "out_of_order", ("refuse", "warn"))
        days: list[DispensingDay] = []
        codes = [k.code for k in kit_types]
        nodes = node.tables("schedule")
        for index, day_node in enumerate(nodes):
            day = _guard(self.schedule_day, day_node)
            day_node.done()
            if day is None:
                continue
            if day.kit_type not in codes:
                day_node.problem("kit_type", f"unknown kit type {day.kit_type!r}")
            elif days and day.day <= days[-1].day:
                day_node.problem("day", f"days must increase (day {day.day} follows day {days[-1].day})")
            elif any(d.label == day.label for d in days):
                day_node.problem("label", f"duplicate label {day.label!r}")
            elif index == 0 and day.offset_hours != 0:
                day_node.problem("offset_hours", "the first day must have offset_hours = 0")
            else:
                days.append(day)
        node.done()
        if margin is None or order is None or len(days) != len(nodes):
            raise _Missing
        return Dispensing(expiry_margin_days=margin, out_of_order=order, schedule=tuple(days))

    def supply(self, root: _Node, sites: tuple[SiteDef, ...]) -> Supply | None:
        node = root.table("supply", required=False)
        if node is None:
            return None
        levels = _guard(self.site_supply, node, None)
        do_not_ship = _guard(node.get_int, "do_not_ship_days", low=0, high=3650)
        predictive = _guard(node.get_bool, "predictive", required=False, default=False)
        window = _guard(node.get_int, "enrolment_window_days", required=False, low=1, high=3650)
        overrides: list[tuple[str, SiteSupply]] = []
        nodes = node.tables("sites", required=False, min_items=0)
        for site_node in nodes:
            code = _guard(site_node.get_str, "code")
            if code is not None and code not in {s.code for s in sites}:
                site_node.problem("code", f"{code!r} is not a site of this definition")
            elif code is not None and any(c == code for c, _ in overrides):
                site_node.problem("code", f"site {code!r} is given twice")
            elif code is not None and levels is not None:
                site_levels = _guard(self.site_supply, site_node, levels)
                if site_levels is not None:
                    overrides.append((code, site_levels))
            site_node.done()
        node.done()
        if levels is None or do_not_ship is None or predictive is None or len(overrides) != len(nodes):
            raise _Missing
        return Supply(
            levels=levels,
            do_not_ship_days=do_not_ship,
            predictive=predictive,
            enrolment_window_days=window if window is not None else 60,
            overrides=tuple(overrides),
        )

    @staticmethod
    def site_supply(node: _Node, defaults: SiteSupply | None) -> SiteSupply:
        """The levels of `[supply]` (every one required) or of one `[[supply.sites]]` entry (each
        defaulting to `[supply]`'s)."""
        values: dict[str, int] = {}
        for key in ("initial_courses", "trigger_courses", "resupply_courses", "lead_time_days"):
            value = node.get_int(
                key, required=defaults is None, low=0 if key == "lead_time_days" else 1, high=1000
            )
            values[key] = value if value is not None else getattr(defaults, key)
        if values["resupply_courses"] <= values["trigger_courses"]:
            node.problem("resupply_courses", "must be above trigger_courses")
            raise _Missing
        if values["initial_courses"] < values["trigger_courses"]:
            node.problem("initial_courses", "must be at least trigger_courses")
            raise _Missing
        return SiteSupply(**values)

    def labels(self, root: _Node) -> Labels:
        node = root.need_table("labels")
        keep = _guard(node.get_bool, "print_keep_out_of_reach")
        omit = _guard(node.get_bool, "omit_expiry_immediate")
        texts: dict[str, LabelTexts] = {}
        for lang in _LANGS:
            lang_node = _guard(node.table, lang)
            if lang_node is None:
                continue
            values = {k: _guard(lang_node.get_str, k) for k in LABEL_TEXT_KEYS}
            lang_node.done()
            present = {k: v for k, v in values.items() if isinstance(v, str)}
            if len(present) == len(values):
                texts[lang] = LabelTexts(**present)
        node.done()
        if keep is None or omit is None or len(texts) != len(_LANGS):
            raise _Missing
        return Labels(
            fr=texts["fr"], en=texts["en"], print_keep_out_of_reach=keep, omit_expiry_immediate=omit
        )

    # --- one array element each (called through _guard) ---

    @staticmethod
    def arm(node: _Node) -> Arm:
        return Arm(
            code=node.get_str("code", pattern=_ARM_CODE, hint="an upper-case code such as A"),
            label=node.get_str("label"),
            product=node.get_str("product"),
        )

    @staticmethod
    def site(node: _Node) -> SiteDef:
        return SiteDef(
            code=node.get_str("code", pattern=_SITE_CODE, hint="1-10 characters A-Z, 0-9 and '-'"),
            name=node.get_str("name"),
            city=node.get_str("city"),
            principal_investigator=node.get_str("principal_investigator"),
        )

    @staticmethod
    def level(node: _Node) -> Level:
        return Level(
            code=node.get_str("code", pattern=_IDENT, hint="a lower-case identifier"),
            label=node.text("label"),
        )

    @staticmethod
    def kit_type(node: _Node) -> KitType:
        code = node.get_str("code", pattern=_ARM_CODE, hint="an upper-case code")
        description = node.get_str("description")
        units = node.get_int("units", low=1, high=100)
        tubes: list[Tube] = []
        for tube_node in node.tables("tubes", required=False):
            tube = Tube(type=tube_node.get_str("type"), volume_ml=tube_node.need_number("volume_ml"))
            tube_node.done()
            if not Fraction(0) < tube.volume_ml <= 100:
                tube_node.problem("volume_ml", f"{float(tube.volume_ml):g} must be above 0 and at most 100")
                raise _Missing
            tubes.append(tube)
        if tubes and len(tubes) != units:
            node.problem("units", f"{units} does not match the {len(tubes)} tubes listed")
            raise _Missing
        return KitType(code=code, description=description, units=units, tubes=tuple(tubes))

    @staticmethod
    def schedule_day(node: _Node) -> DispensingDay:
        return DispensingDay(
            day=node.get_int("day", low=1, high=365),
            label=node.get_str("label", pattern=_DAY_LABEL, hint="1-4 characters A-Z, 0-9"),
            kit_type=node.get_str("kit_type"),
            offset_hours=node.get_int("offset_hours", low=0, high=24 * 365),
        )

    @staticmethod
    def unconfirmed_item(node: _Node) -> Unconfirmed:
        return Unconfirmed(field=node.get_str("field"), note=node.get_str("note"))

    def unconfirmed(self, root: _Node) -> tuple[Unconfirmed, ...]:
        out: list[Unconfirmed] = []
        for node in root.tables("unconfirmed", required=False, min_items=0):
            item = _guard(self.unconfirmed_item, node)
            node.done()
            if item is None:
                continue
            if not _path_exists(root.data, item.field):
                node.problem("field", f"{item.field!r} does not name a field of this definition")
                continue
            out.append(item)
        return tuple(out)

    def exports(self, root: _Node) -> Exports:
        node = root.table("exports", required=False)
        if node is None:
            return Exports()
        redcap_node = node.table("redcap", required=False)
        node.done()
        if redcap_node is None:
            return Exports()
        defaults = RedcapFields()
        values: dict[str, Any] = {}
        for name in RedcapFields.__dataclass_fields__:
            prefix = name.endswith("_prefix")
            value = _guard(
                redcap_node.get_str,
                name,
                required=False,
                pattern=_REDCAP_PREFIX if prefix else _REDCAP_NAME,
                hint="a REDCap variable name: lower-case letters, digits and _, starting with a letter",
            )
            values[name] = value if value is not None else getattr(defaults, name)
        redcap_node.done()
        names = [v for k, v in values.items() if not k.endswith("_prefix") and v is not None]
        for duplicate in sorted({n for n in names if names.count(n) > 1}):
            redcap_node.problem("", f"the REDCap field {duplicate!r} is mapped twice")
        return Exports(redcap=RedcapFields(**values))


def _peek_kind(root: _Node) -> str:
    """The study kind when `[trial]` itself was invalid, so that the right sections are checked."""
    trial = root.data.get("trial")
    kind = trial.get("kind") if isinstance(trial, dict) else None
    return kind if isinstance(kind, str) else "randomized"


def _path_exists(data: Any, dotted: str) -> bool:
    """Resolve `a.b.c` where a segment may also select an array element by its code or id."""
    current: Any = data
    for segment in dotted.split("."):
        if isinstance(current, dict) and segment in current:
            current = current[segment]
        elif isinstance(current, list):
            matches = [
                x
                for x in current
                if isinstance(x, dict) and segment in (x.get("code"), x.get("id"), x.get("label"))
            ]
            if not matches:
                return False
            current = matches[0]
        else:
            return False
    return True


def iter_stratum_keys(definition: TrialDefinition) -> Iterator[str]:
    """Canonical stratum keys, e.g. ``site=P1;admission_cause=septic`` (factor order of the file)."""
    for combo in definition.strata():
        yield stratum_key(combo)


def stratum_key(levels: Sequence[tuple[str, str]]) -> str:
    return ";".join(f"{factor}={level}" for factor, level in levels)
