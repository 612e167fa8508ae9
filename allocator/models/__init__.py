"""SQLAlchemy models, one module per domain noun. Importing this package registers them all."""

from allocator.models.audit import AuditChainHead, AuditCheckpoint, AuditEvent, AuditVerification
from allocator.models.base import Base
from allocator.models.cohort import LabClosure, LabClosureWithdrawal, PlannedSample, Registration
from allocator.models.dispensation import Administration, Dispensation, PrintedDocument
from allocator.models.disposal import KitDisposal, KitDisposalItem
from allocator.models.drill import DrillSubject, UnblindingDrill
from allocator.models.excursion import ExcursionKit, TemperatureExcursion
from allocator.models.idempotency import IdempotentRequest
from allocator.models.kit import Batch, Kit, KitCheck, KitEvent, KitList, KitStatus, Shipment
from allocator.models.notification import Notification
from allocator.models.randomization import (
    IntegrityCheck,
    ListExtensionProposal,
    ListMode,
    ListStatus,
    ListVersion,
    MinimizationDecision,
    RandomizationList,
    Slot,
    Stratum,
)
from allocator.models.review import AuditReview, ReportJob
from allocator.models.sample import LabShipment, LabShipmentStatus, SampleKit, SampleKitEvent, SampleKitStatus
from allocator.models.signature import Signature
from allocator.models.site import Site, SiteStatus
from allocator.models.subject import ScreeningEntry, Subject, SubjectCorrection, SubjectWithdrawal
from allocator.models.trial import Trial, TrialDefinitionVersion, TrialStatus
from allocator.models.unblinding import (
    AccidentalUnblinding,
    CodeBreakCheck,
    CodeBreakCheckStatus,
    CodeBreakSheet,
    InterimPackage,
    TrialStateChange,
    Unblinding,
    UnblindingChannel,
    UnblindingKind,
)
from allocator.models.user import ApiToken, LoginSession, LoginThrottle, RoleAssignment, RoleRevocation, User

__all__ = [
    "AccidentalUnblinding",
    "Administration",
    "ApiToken",
    "AuditChainHead",
    "AuditCheckpoint",
    "AuditEvent",
    "AuditReview",
    "AuditVerification",
    "Base",
    "Batch",
    "CodeBreakCheck",
    "CodeBreakCheckStatus",
    "CodeBreakSheet",
    "Dispensation",
    "DrillSubject",
    "ExcursionKit",
    "IdempotentRequest",
    "IntegrityCheck",
    "InterimPackage",
    "Kit",
    "KitCheck",
    "KitDisposal",
    "KitDisposalItem",
    "KitEvent",
    "KitList",
    "KitStatus",
    "LabClosure",
    "LabClosureWithdrawal",
    "LabShipment",
    "LabShipmentStatus",
    "ListExtensionProposal",
    "ListMode",
    "ListStatus",
    "ListVersion",
    "LoginSession",
    "LoginThrottle",
    "MinimizationDecision",
    "Notification",
    "PlannedSample",
    "PrintedDocument",
    "RandomizationList",
    "Registration",
    "ReportJob",
    "RoleAssignment",
    "RoleRevocation",
    "SampleKit",
    "SampleKitEvent",
    "SampleKitStatus",
    "ScreeningEntry",
    "Shipment",
    "Signature",
    "Site",
    "SiteStatus",
    "Slot",
    "Stratum",
    "Subject",
    "SubjectCorrection",
    "SubjectWithdrawal",
    "TemperatureExcursion",
    "Trial",
    "TrialDefinitionVersion",
    "TrialStateChange",
    "TrialStatus",
    "Unblinding",
    "UnblindingChannel",
    "UnblindingDrill",
    "UnblindingKind",
    "User",
]
